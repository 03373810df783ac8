// The fifth bit of four consecutive Q5_0/Q5_1 weights, starting at weight
// `first`, from the block's 32-bit qh (bit i belongs to weight i), already
// shifted into place.
fn q5_high(qh: u32, first: u32) -> vec4<u32> {
    return vec4<u32>((qh >> first) & 1u, (qh >> (first + 1u)) & 1u, (qh >> (first + 2u)) & 1u, (qh >> (first + 3u)) & 1u) << vec4<u32>(4u);
}
