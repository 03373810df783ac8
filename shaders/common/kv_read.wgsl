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
    return k <= q && (step.window == 0u || k < step.sink || k + step.window > q);
}

// Whether it is visible to any query position in [q0, q1].
fn kv_visible_any(k: u32, q0: u32, q1: u32) -> bool {
    return k <= q1 && (step.window == 0u || k < step.sink || k + step.window > q0);
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

fn kv_at(ty: u32, is_k: bool, row: u32, d: u32) -> f32 {
    let hd = p.head_dim;
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

fn k_at(row: u32, d: u32) -> f32 {
    return kv_at(K_TYPE, true, row, d);
}

fn v_at(row: u32, d: u32) -> f32 {
    return kv_at(V_TYPE, false, row, d);
}
