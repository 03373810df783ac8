// The gate's activation of a gated MLP: SiLU (SwiGLU) or, with GELU_TANH,
// the tanh form of GELU (GeGLU, Gemma). Shared by ops/swiglu.wgsl and the
// decode projection that fuses it into its input (ops/matvec_rows.wgsl).
fn gate_act(g: f32) -> f32 {
#if GELU_TANH
    // tanh(y) = 1 - 2 / (exp(2 y) + 1): exact at both tails (exp overflows
    // to inf, giving 1; underflows to 0, giving -1), where tanh() of a large
    // argument is not guaranteed on every backend.
    let y = 0.7978845608028654 * (g + 0.044715 * g * g * g);
    let th = 1.0 - 2.0 / (exp(2.0 * y) + 1.0);
    return 0.5 * g * (1.0 + th);
#else
    return g / (1.0 + exp(-g));
#endif
}
