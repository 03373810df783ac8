// The KV cache bindings (3: keys, 4: values) and their decode, shared by the
// attention kernels (which declare `p.head_dim`). `row` = kv_head * ctx + pos.
// Quantized types are decoded here, at the read: there is no dequantized copy.
#include "common/kv_types.wgsl"

@group(0) @binding(3) var<storage, read> kc: array<u32>;
@group(0) @binding(4) var<storage, read> vc: array<u32>;
@group(0) @binding(6) var<storage, read> kv_pos: array<u32>; // [ctx]: position per slot (u32 max: empty)

// Whether the key at position k is visible to a query at position q: causal,
// and the step's sink + window rule (engine/src/kv/policy.rs).
fn kv_visible(k: u32, q: u32) -> bool {
    return kv_visible_w(k, q, step.window, step.sink);
}

// As kv_visible under an explicit window and sink: a layer's own sliding
// window (Gemma's local layers) replaces the step's.
fn kv_visible_w(k: u32, q: u32, window: u32, sink: u32) -> bool {
    return k <= q && (window == 0u || k < sink || k + window > q);
}

// Whether it is visible to any query position in [q0, q1].
fn kv_visible_any(k: u32, q0: u32, q1: u32) -> bool {
    return kv_visible_any_w(k, q0, q1, step.window, step.sink);
}

fn kv_visible_any_w(k: u32, q0: u32, q1: u32, window: u32, sink: u32) -> bool {
    return k <= q1 && (window == 0u || k < sink || k + window > q0);
}

// `is_k` is a constant at every call, so the branch folds away.
fn kv_word(is_k: bool, i: u32) -> u32 {
    if (is_k) {
        return kc[i];
    }
    return vc[i];
}

// KIVI2 keys: packed per channel once the slot's group of 32 has filled
// (every slot of it below the step's kv_len), else the f16 residual row.
fn kivi_k_at(row: u32, d: u32) -> f32 {
    let hd = p.head_dim;
    let kvh = row / p.ctx;
    let slot = row % p.ctx;
    let hb = kvh * kivi_head_words(hd, p.ctx);
    let g = slot / 32u;
    if ((g + 1u) * 32u <= step.kv_len) {
        let gb = hb + g * 3u * hd;
        let j = slot % 32u;
        let q = (kv_word(true, gb + d * 2u + j / 16u) >> (2u * (j % 16u))) & 3u;
        let dm = unpack2x16float(kv_word(true, gb + 2u * hd + d));
        return f32(q) * dm.x + dm.y;
    }
    let rb = hb + kivi_groups_words(hd, p.ctx) + (slot % KIVI_RES) * (hd / 2u);
    return unpack2x16float(kv_word(true, rb + d / 2u))[d % 2u];
}

fn kv_sink(is_k: bool, row: u32) -> bool {
    return kv_sink_slot(is_k, row % p.ctx);
}

fn kv_sink_at(is_k: bool, row: u32, d: u32) -> f32 {
    return bitcast<f32>(kv_word(is_k, kv_sink_index(is_k, p.n_kv_head, p.ctx, p.head_dim, row / p.ctx, d)));
}

fn kv_at(ty: u32, is_k: bool, row: u32, d: u32) -> f32 {
    let hd = p.head_dim;
    if (kv_sink(is_k, row)) {
        return kv_sink_at(is_k, row, d);
    }
    if (ty == KV_KIVI2) {
        if (is_k) {
            return kivi_k_at(row, d);
        }
        let nb = hd / 32u;
        let b = d / 32u;
        let j = d % 32u;
        let vb = row * nb * 3u;
        let q = (kv_word(false, vb + b * 2u + j / 16u) >> (2u * (j % 16u))) & 3u;
        let dm = unpack2x16float(kv_word(false, vb + nb * 2u + b));
        return f32(q) * dm.x + dm.y;
    }
    let base = row * kv_row_words(ty, hd);
    if (ty == KV_F32) {
        return bitcast<f32>(kv_word(is_k, base + d));
    }
    if (ty == KV_F16) {
        return unpack2x16float(kv_word(is_k, base + d / 2u))[d % 2u];
    }
    let b = d / 32u;
    let j = d % 32u;
    let nb = hd / 32u;
    let qn = kv_block_quants(ty);
    let sbase = base + nb * qn;
    if (ty == KV_Q8_0) {
        let q = kv_word(is_k, base + b * 8u + j / 4u);
        let x = bitcast<i32>(q << (24u - 8u * (j % 4u))) >> 24u;
        return f32(x) * unpack2x16float(kv_word(is_k, sbase + b / 2u))[b % 2u];
    }
    // 4-bit nibbles as ggml lays them out: byte i holds values i and i + 16.
    let q = kv_word(is_k, base + b * qn + (j % 16u) / 4u);
    let nib = (q >> (8u * (j % 4u) + 4u * (j / 16u))) & 15u;
    if (ty == KV_Q4_1) {
        let dm = unpack2x16float(kv_word(is_k, sbase + b));
        return f32(nib) * dm.x + dm.y;
    }
    let d16 = unpack2x16float(kv_word(is_k, sbase + b / 2u))[b % 2u];
    if (ty == KV_Q5_0) {
        let h = (kv_word(is_k, base + b * 5u + 4u) >> j) & 1u;
        return (f32(nib | (h << 4u)) - 16.0) * d16;
    }
    if (ty == KV_IQ4_NL) {
        return KV_IQ4NL[nib] * d16;
    }
    return (f32(nib) - 8.0) * d16;
}

// Values 4 d4 .. 4 d4 + 3 of a row (head_dim a multiple of 4): one load of
// the words that hold them and of their block's scale, where kv_at would
// load both once per value.
fn kv4(ty: u32, is_k: bool, row: u32, d4: u32) -> vec4<f32> {
    let hd = p.head_dim;
    let d = 4u * d4;
    if (kv_sink(is_k, row)) {
        return vec4<f32>(kv_sink_at(is_k, row, d), kv_sink_at(is_k, row, d + 1u),
                         kv_sink_at(is_k, row, d + 2u), kv_sink_at(is_k, row, d + 3u));
    }
    if (ty == KV_KIVI2) {
        return vec4<f32>(kv_at(ty, is_k, row, d), kv_at(ty, is_k, row, d + 1u),
                         kv_at(ty, is_k, row, d + 2u), kv_at(ty, is_k, row, d + 3u));
    }
    let base = row * kv_row_words(ty, hd);
    if (ty == KV_F32) {
        return vec4<f32>(bitcast<f32>(kv_word(is_k, base + d)), bitcast<f32>(kv_word(is_k, base + d + 1u)),
                         bitcast<f32>(kv_word(is_k, base + d + 2u)), bitcast<f32>(kv_word(is_k, base + d + 3u)));
    }
    if (ty == KV_F16) {
        return vec4<f32>(unpack2x16float(kv_word(is_k, base + d / 2u)),
                         unpack2x16float(kv_word(is_k, base + d / 2u + 1u)));
    }
    let b = d / 32u;
    let j = d % 32u;
    let nb = hd / 32u;
    let qn = kv_block_quants(ty);
    let sbase = base + nb * qn;
    if (ty == KV_Q8_0) {
        let q = kv_word(is_k, base + b * 8u + j / 4u);
        let s = unpack2x16float(kv_word(is_k, sbase + b / 2u))[b % 2u];
        let qi = bitcast<i32>(q);
        let i8 = vec4<i32>(qi << 24u, qi << 16u, qi << 8u, qi) >> vec4<u32>(24u);
        return vec4<f32>(i8) * s;
    }
    // Four values in a row share a word: the low nibbles of bytes j..j+3
    // (j < 16) or their high nibbles (j >= 16).
    let q = kv_word(is_k, base + b * qn + (j % 16u) / 4u) >> (4u * (j / 16u));
    let n = vec4<u32>(q & 15u, (q >> 8u) & 15u, (q >> 16u) & 15u, (q >> 24u) & 15u);
    if (ty == KV_Q4_1) {
        let dm = unpack2x16float(kv_word(is_k, sbase + b));
        return vec4<f32>(n) * dm.x + dm.y;
    }
    let s = unpack2x16float(kv_word(is_k, sbase + b / 2u))[b % 2u];
    if (ty == KV_Q5_0) {
        let h = kv_word(is_k, base + b * 5u + 4u) >> j;
        let hb = vec4<u32>(h & 1u, (h >> 1u) & 1u, (h >> 2u) & 1u, (h >> 3u) & 1u) << vec4<u32>(4u);
        return (vec4<f32>(n | hb) - 16.0) * s;
    }
    if (ty == KV_IQ4_NL) {
        return vec4<f32>(KV_IQ4NL[n.x], KV_IQ4NL[n.y], KV_IQ4NL[n.z], KV_IQ4NL[n.w]) * s;
    }
    return (vec4<f32>(n) - 8.0) * s;
}

fn k4(row: u32, d4: u32) -> vec4<f32> {
    return kv4(K_TYPE, true, row, d4);
}

fn v4(row: u32, d4: u32) -> vec4<f32> {
    return kv4(V_TYPE, false, row, d4);
}

fn k_at(row: u32, d: u32) -> f32 {
    return kv_at(K_TYPE, true, row, d);
}

fn v_at(row: u32, d: u32) -> f32 {
    return kv_at(V_TYPE, false, row, d);
}
