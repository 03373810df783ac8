// The KV cache bindings (3: keys, 4: values) and readers shared by the
// attention kernels: f32 words, or f16 pairs (native vec2<f16>, or u32
// unpacked where shader-f16 is missing). Slot = (kv_head * ctx + pos) * head_dim.
#if KV_F16
#if NATIVE_F16
@group(0) @binding(3) var<storage, read> kc: array<vec2<f16>>;
@group(0) @binding(4) var<storage, read> vc: array<vec2<f16>>;
#else
@group(0) @binding(3) var<storage, read> kc: array<u32>;
@group(0) @binding(4) var<storage, read> vc: array<u32>;
#endif
#else
@group(0) @binding(3) var<storage, read> kc: array<u32>;
@group(0) @binding(4) var<storage, read> vc: array<u32>;
#endif

fn k_at(slot: u32, d: u32) -> f32 {
#if KV_F16
#if NATIVE_F16
    return f32(kc[(slot + d) / 2u][d % 2u]);
#else
    return unpack2x16float(kc[(slot + d) / 2u])[d % 2u];
#endif
#else
    return bitcast<f32>(kc[slot + d]);
#endif
}

fn v_at(slot: u32, d: u32) -> f32 {
#if KV_F16
#if NATIVE_F16
    return f32(vc[(slot + d) / 2u][d % 2u]);
#else
    return unpack2x16float(vc[(slot + d) / 2u])[d % 2u];
#endif
#else
    return bitcast<f32>(vc[slot + d]);
#endif
}
