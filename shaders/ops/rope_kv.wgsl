// Rotary embedding on the fused QKV activations of a batch, and the append of
// K and V to the cache: q is rotated in place, k is rotated on its way into
// the cache, v is copied, each into the slot the step's policy plan gives
// (slot = position unless the cache is a ring). Rotation pairs are adjacent (x[2j], x[2j+1]), the
// GGUF convention for Llama (the converter permutes Q/K rows to match).
// cos/sin come from a table built on the host in f64, because GPU sin/cos are
// only accurate near zero and positions reach thousands of radians.
// Rows are quantized on the way in with ggml's reference quantizers
// (engine/src/formats, bit for bit). Two layouts of the same arithmetic:
// - serial (CPU adapters): one invocation per row (q head rows, then K rows,
//   then V rows) does the whole row, with no barriers, which llvmpipe runs
//   as coroutine switches;
// - WIDE (GPUs): one workgroup per row, values spread over its threads, the
//   rotation's rounds between barriers and one thread per 32-value block:
//   one invocation per row was a chain of hundreds of dependent steps, a
//   third of a decode step on an H200.
#include "common/step.wgsl"
#include "common/kv_types.wgsl"

struct Params {
    n_head: u32,
    n_kv_head: u32,
    head_dim: u32,
    ctx: u32, // cache capacity in positions
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> rope: array<vec2<f32>>; // [ctx, head_dim / 2] (cos, sin)
@group(0) @binding(3) var<storage, read_write> qkv: array<f32>; // [n_tokens, (n_head + 2 n_kv_head) * head_dim]
@group(0) @binding(4) var<storage, read_write> kc: array<u32>;
@group(0) @binding(5) var<storage, read_write> vc: array<u32>;
@group(0) @binding(6) var<storage, read_write> kv_pos: array<u32>; // [ctx]: position held by each slot

const MAX_HD: u32 = 256u;
var<private> xr: array<f32, MAX_HD>;

// xr <- H xr by the fast transform (log2(hd) rounds of butterflies, where a
// sum per output was hd^2 operations: that dominated a decode step with a
// block cache on a real GPU), in the order engine/src/kv::hadamard uses, so
// the CPU encoding is bit-exact.
fn hadamard_xr(hd: u32) {
    for (var h = 1u; h < hd; h *= 2u) {
        for (var i = 0u; i < hd; i += 2u * h) {
            for (var j = i; j < i + h; j++) {
                let a = xr[j];
                let b = xr[j + h];
                xr[j] = a + b;
                xr[j + h] = a - b;
            }
        }
    }
    for (var d = 0u; d < hd; d++) {
        xr[d] *= ROT_SCALE;
    }
}

// Component d of KV head h's key mean (0 unless keys are centred).
fn key_centre(h: u32, d: u32) -> f32 {
    if (!K_CENTRE) {
        return 0.0;
    }
    return bitcast<f32>(kc[p.n_kv_head * p.ctx * kv_row_words(K_TYPE, p.head_dim) + h * p.head_dim + d]);
}

fn put(is_k: bool, i: u32, w: u32) {
    if (is_k) {
        kc[i] = w;
    } else {
        vc[i] = w;
    }
}

// C's roundf (half away from zero), as ggml's q8_0 quantizer uses.
fn round_away(x: f32) -> f32 {
    let t = trunc(x);
    if (abs(x - t) >= 0.5) {
        return t + sign(x);
    }
    return t;
}

// The block's value of largest magnitude, sign kept (first one on ties).
fn signed_max(x0: u32) -> f32 {
    var m = 0.0;
    for (var i = 0u; i < 32u; i++) {
        if (abs(xr[x0 + i]) > abs(m)) {
            m = xr[x0 + i];
        }
    }
    return m;
}

// Code (0..31) of value i of the block at x0 for the 4/5-bit types.
fn code(ty: u32, v: f32, id: f32, lo: f32) -> u32 {
    switch ty {
        case 3u: { return u32(clamp(i32(v * id + 8.5), 0, 15)); }
        case 4u: { return u32(clamp(i32((v - lo) * id + 0.5), 0, 15)); }
        case 5u: { return u32(clamp(i32(v * id + 16.5), 0, 31)); }
        default: { return iq4nl_index(v * id); }
    }
}

// The code-book entry nearest x: ggml's bisection, ties to the upper entry.
fn iq4nl_index(x: f32) -> u32 {
    if (x <= KV_IQ4NL[0]) {
        return 0u;
    }
    if (x >= KV_IQ4NL[15]) {
        return 15u;
    }
    var lo = 0u;
    var hi = 15u;
    while (hi - lo > 1u) {
        let mid = (lo + hi) / 2u;
        if (x < KV_IQ4NL[mid]) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    if (x - KV_IQ4NL[hi - 1u] < KV_IQ4NL[hi] - x) {
        return hi - 1u;
    }
    return hi;
}

// Least-squares fit (every value weighted alike, unlike ggml's x^2 for
// weights) of the codes chosen at inverse scale id: (sum q x, sum q q), in
// engine/src/formats::iq4nl_scale_weighted's order (flat).
fn iq4nl_fit(x0: u32, id: f32) -> vec2<f32> {
    var sqx = 0.0;
    var sq2 = 0.0;
    for (var i = 0u; i < 32u; i++) {
        let v = xr[x0 + i];
        let q = KV_IQ4NL[iq4nl_index(id * v)];
        let w = 1.0;
        sqx += w * q * v;
        sq2 += w * q * q;
    }
    return vec2<f32>(sqx, sq2);
}

// ggml's IQ4_NL scale search (flat weights): the best fit over the max
// scale and 15 nearby.
fn iq4nl_scale(x0: u32) -> f32 {
    var amax = 0.0;
    var mx = 0.0;
    for (var i = 0u; i < 32u; i++) {
        if (abs(xr[x0 + i]) > amax) {
            amax = abs(xr[x0 + i]);
            mx = xr[x0 + i];
        }
    }
    if (amax < 1e-15) {
        return 0.0;
    }
    var f = iq4nl_fit(x0, 1.0 / (mx / 127.0));
    var d = f.x / f.y;
    var best = d * f.x;
    for (var t = -7; t <= 7; t++) {
        f = iq4nl_fit(x0, f32(t - 127) / mx);
        if (f.y > 0.0 && f.x * f.x > best * f.y) {
            d = f.x / f.y;
            best = d * f.x;
        }
    }
    return d;
}

// The least-squares scale of a q4_0 (off 8) or q5_0 (off 16) block:
// engine/src/formats/blocks.rs::offset_scale_searched, step for step.
fn offset_fit(x0: u32, d: f32, off: f32) -> vec2<f32> {
    let id = 1.0 / d;
    let top = 2 * i32(off) - 1;
    var sxc = 0.0;
    var scc = 0.0;
    for (var i = 0u; i < 32u; i++) {
        let v = xr[x0 + i];
        let c = f32(clamp(i32(v * id + (off + 0.5)), 0, top)) - off;
        sxc += v * c;
        scc += c * c;
    }
    return vec2<f32>(sxc, scc);
}

fn offset_scale(x0: u32, off: f32) -> f32 {
    let mx = signed_max(x0);
    if (mx == 0.0) {
        return 0.0;
    }
    var d = mx / -off;
    var best = 0.0;
    for (var t = 0u; t < 26u; t++) {
        let s = f32(t % 13u) * 0.25 - 1.5;
        let f = offset_fit(x0, select(mx / (off - 1.0 + s), mx / -(off + s), t < 13u), off);
        if (f.y > 0.0 && f.x * f.x > best * f.y) {
            d = f.x / f.y;
            best = d * f.x;
        }
    }
    return d;
}

// KIVI2's 2-bit asymmetric code of xr[x0..x0+32]: the two code words into
// kivi_w, the (step, min) f16 pair returned (engine/src/kv::kivi_quant).
var<private> kivi_w: array<u32, 2>;
fn kivi_quant(x0: u32) -> u32 {
    var lo = xr[x0];
    var hi = xr[x0];
    for (var i = 0u; i < 32u; i++) {
        lo = min(lo, xr[x0 + i]);
        hi = max(hi, xr[x0 + i]);
    }
    let d = (hi - lo) / 3.0;
    let id = select(0.0, 1.0 / d, d != 0.0);
    kivi_w[0] = 0u;
    kivi_w[1] = 0u;
    for (var i = 0u; i < 32u; i++) {
        let q = u32(clamp(i32((xr[x0 + i] - lo) * id + 0.5), 0, 3));
        kivi_w[i / 16u] |= q << (2u * (i % 16u));
    }
    return pack2x16float(vec2<f32>(d, lo));
}

// Whether blocks keep their f16 scales two to a word after the quants
// (q8_0, q4_0, q5_0, iq4_nl): written by store_scales once both are known.
fn scales_paired(ty: u32) -> bool {
    return ty == KV_Q8_0 || ty == KV_Q4_0 || ty == KV_Q5_0 || ty == KV_IQ4_NL;
}

// Quantizes block b (xr[32 b .. 32 b + 32]) of cache row `row` of a blocked
// type, kivi2 values included, and returns its scale where scales pair up.
fn store_block(ty: u32, is_k: bool, row: u32, b: u32) -> f32 {
    let hd = p.head_dim;
    let nb = hd / 32u;
    let x0 = b * 32u;
    if (ty == KV_KIVI2) {
        let vb = row * nb * 3u;
        let dm = kivi_quant(x0);
        put(is_k, vb + b * 2u, kivi_w[0]);
        put(is_k, vb + b * 2u + 1u, kivi_w[1]);
        put(is_k, vb + nb * 2u + b, dm);
        return 0.0;
    }
    let base = row * kv_row_words(ty, hd);
    let qn = kv_block_quants(ty);
    let sbase = base + nb * qn;
    var d = 0.0;
    if (ty == KV_Q8_0) {
        var amax = 0.0;
        for (var i = 0u; i < 32u; i++) {
            amax = max(amax, abs(xr[x0 + i]));
        }
        d = amax / 127.0;
        let id = select(0.0, 1.0 / d, d != 0.0);
        for (var w = 0u; w < 8u; w++) {
            var word = 0u;
            for (var i = 0u; i < 4u; i++) {
                let q = i32(round_away(xr[x0 + 4u * w + i] * id));
                word |= (bitcast<u32>(q) & 255u) << (8u * i);
            }
            put(is_k, base + b * 8u + w, word);
        }
        return d;
    }
    var lo = 0.0;
    if (ty == KV_Q4_1) {
        lo = xr[x0];
        var hi = xr[x0];
        for (var i = 1u; i < 32u; i++) {
            lo = min(lo, xr[x0 + i]);
            hi = max(hi, xr[x0 + i]);
        }
        d = (hi - lo) / 15.0;
    } else if (ty == KV_Q4_0) {
        d = offset_scale(x0, 8.0);
    } else if (ty == KV_Q5_0) {
        d = offset_scale(x0, 16.0);
    } else {
        d = iq4nl_scale(x0);
    }
    let id = select(0.0, 1.0 / d, d != 0.0);
    var qh = 0u;
    for (var w = 0u; w < 4u; w++) {
        var word = 0u;
        for (var i = 0u; i < 4u; i++) {
            let j = 4u * w + i;
            let a = code(ty, xr[x0 + j], id, lo);
            let c = code(ty, xr[x0 + j + 16u], id, lo);
            word |= ((a & 15u) | ((c & 15u) << 4u)) << (8u * i);
            qh |= ((a >> 4u) << j) | ((c >> 4u) << (j + 16u));
        }
        put(is_k, base + b * qn + w, word);
    }
    if (ty == KV_Q5_0) {
        put(is_k, base + b * 5u + 4u, qh);
    }
    if (ty == KV_Q4_1) {
        put(is_k, sbase + b, pack2x16float(vec2<f32>(d, lo)));
    }
    return d;
}

// The scale word w of a row: blocks 2 w and 2 w + 1 (0 past the last block).
fn store_scales(ty: u32, is_k: bool, row: u32, w: u32, d0: f32, d1: f32) {
    let hd = p.head_dim;
    let base = row * kv_row_words(ty, hd);
    let sbase = base + (hd / 32u) * kv_block_quants(ty);
    put(is_k, sbase + w, pack2x16float(vec2<f32>(d0, d1)));
}

// The f16 residual row of a kivi2 key (keys wait there until their group of
// 32 fills: kivi_pack), as word j of `rb`.
fn kivi_residual_base(row: u32) -> u32 {
    let hd = p.head_dim;
    let kvh = row / p.ctx;
    let slot = row % p.ctx;
    return kvh * kivi_head_words(hd, p.ctx) + kivi_groups_words(hd, p.ctx)
        + (slot % KIVI_RES) * (hd / 2u);
}

fn store_row(ty: u32, is_k: bool, row: u32) {
    let hd = p.head_dim;
    // Slot 0's exact copy (engine/src/kv: KvTypes::sink).
    if (kv_sink_slot(is_k, row % p.ctx)) {
        for (var d = 0u; d < hd; d++) {
            put(is_k, kv_sink_index(is_k, p.n_kv_head, p.ctx, hd, row / p.ctx, d), bitcast<u32>(xr[d]));
        }
    }
    if (ty == KV_KIVI2 && is_k) {
        let rb = kivi_residual_base(row);
        for (var j = 0u; j < hd / 2u; j++) {
            put(true, rb + j, pack2x16float(vec2<f32>(xr[2u * j], xr[2u * j + 1u])));
        }
        return;
    }
    let base = row * kv_row_words(ty, hd);
    if (ty == KV_F32) {
        for (var d = 0u; d < hd; d++) {
            put(is_k, base + d, bitcast<u32>(xr[d]));
        }
        return;
    }
    if (ty == KV_F16) {
        for (var j = 0u; j < hd / 2u; j++) {
            put(is_k, base + j, pack2x16float(vec2<f32>(xr[2u * j], xr[2u * j + 1u])));
        }
        return;
    }
    let nb = hd / 32u;
    var pending = 0.0;
    for (var b = 0u; b < nb; b++) {
        let d = store_block(ty, is_k, row, b);
        if (scales_paired(ty)) {
            if (b % 2u == 1u) {
                store_scales(ty, is_k, row, b / 2u, pending, d);
            } else if (b + 1u == nb) {
                store_scales(ty, is_k, row, b / 2u, d, 0.0);
            }
        }
        pending = d;
    }
}

#if WIDE
var<workgroup> xs: array<f32, MAX_HD>;
var<workgroup> ds: array<f32, 8>; // block scales, MAX_HD / 32

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let i = wg.x;
    let t = wg.y;
    let hd = p.head_dim;
    let half_dim = hd / 2u;
    let nq = p.n_head;
    if (t >= step.n_tokens || i >= nq + 2u * p.n_kv_head) {
        return;
    }
    let pos = step.pos0 + t;
    // Row i of the token's fused q|k|v activations: q heads, K, then V.
    let src = t * (nq + 2u * p.n_kv_head) * hd + i * hd;
    let is_q = i < nq;
    let r = i - select(nq, 0u, is_q);
    let is_k = !is_q && r < p.n_kv_head;
    let roped = is_q || is_k;
    for (var j = li; j < half_dim; j += 64u) {
        let a = qkv[src + 2u * j];
        let b = qkv[src + 2u * j + 1u];
        if (roped) {
            let cs = rope[pos * half_dim + j];
            xs[2u * j] = a * cs.x - b * cs.y;
            xs[2u * j + 1u] = a * cs.y + b * cs.x;
            if (K_CENTRE && is_k) {
                xs[2u * j] -= key_centre(r, 2u * j);
                xs[2u * j + 1u] -= key_centre(r, 2u * j + 1u);
            }
        } else {
            xs[2u * j] = a;
            xs[2u * j + 1u] = b;
        }
    }
    workgroupBarrier();
    // q and k turn with K_ROT, v with V_ROT: the butterflies of the serial
    // hadamard_xr, a round at a time.
    if (select(V_ROT, K_ROT, roped)) {
        for (var h = 1u; h < hd; h *= 2u) {
            for (var k = li; k < half_dim; k += 64u) {
                let j = (k / h) * 2u * h + k % h;
                let a = xs[j];
                let b = xs[j + h];
                xs[j] = a + b;
                xs[j + h] = a - b;
            }
            workgroupBarrier();
        }
        for (var d = li; d < hd; d += 64u) {
            xs[d] *= ROT_SCALE;
        }
        workgroupBarrier();
    }
    if (is_q) {
        for (var d = li; d < hd; d += 64u) {
            qkv[src + d] = xs[d];
        }
        return;
    }
    let slot = step.slot_base + (step.slot_off + t) % step.slot_mod;
    if (r == 0u && li == 0u) {
        kv_pos[slot] = pos;
    }
    let kvh = select(r - p.n_kv_head, r, is_k);
    let ty = select(V_TYPE, K_TYPE, is_k);
    let row = kvh * p.ctx + slot;
    if (ty == KV_F32) {
        let base = row * hd;
        for (var d = li; d < hd; d += 64u) {
            put(is_k, base + d, bitcast<u32>(xs[d]));
        }
        return;
    }
    if (ty == KV_F16 || (ty == KV_KIVI2 && is_k)) {
        let base = select(row * kv_row_words(ty, hd), kivi_residual_base(row), ty == KV_KIVI2);
        for (var j = li; j < half_dim; j += 64u) {
            put(is_k, base + j, pack2x16float(vec2<f32>(xs[2u * j], xs[2u * j + 1u])));
        }
        return;
    }
    if (kv_sink_slot(is_k, slot)) {
        for (var d = li; d < hd; d += 64u) {
            put(is_k, kv_sink_index(is_k, p.n_kv_head, p.ctx, hd, kvh, d), bitcast<u32>(xs[d]));
        }
    }
    let nb = hd / 32u;
    if (li < nb) {
        for (var e = 0u; e < 32u; e++) {
            xr[li * 32u + e] = xs[li * 32u + e];
        }
        ds[li] = store_block(ty, is_k, row, li);
    }
    workgroupBarrier();
    if (scales_paired(ty) && 2u * li < nb) {
        let d1 = select(0.0, ds[2u * li + 1u], 2u * li + 1u < nb);
        store_scales(ty, is_k, row, li, ds[2u * li], d1);
    }
}
#else
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let t = gid.y;
    let half_dim = p.head_dim / 2u;
    let nq = p.n_head;
    if (t >= step.n_tokens || i >= nq + 2u * p.n_kv_head) {
        return;
    }
    let pos = step.pos0 + t;
    let row = t * (p.n_head + 2u * p.n_kv_head) * p.head_dim;
    if (i < nq) {
        let o = row + i * p.head_dim;
        for (var j = 0u; j < half_dim; j++) {
            let cs = rope[pos * half_dim + j];
            let a = qkv[o + 2u * j];
            let b = qkv[o + 2u * j + 1u];
            xr[2u * j] = a * cs.x - b * cs.y;
            xr[2u * j + 1u] = a * cs.y + b * cs.x;
        }
        if (K_ROT) {
            hadamard_xr(p.head_dim);
        }
        for (var d = 0u; d < p.head_dim; d++) {
            qkv[o + d] = xr[d];
        }
        return;
    }
    let r = i - nq;
    let slot = step.slot_base + (step.slot_off + t) % step.slot_mod;
    if (r == 0u) {
        kv_pos[slot] = pos;
    }
    let is_k = r < p.n_kv_head;
    let kvh = select(r - p.n_kv_head, r, is_k);
    let src = row + (p.n_head + r) * p.head_dim;
    if (is_k) {
        for (var j = 0u; j < half_dim; j++) {
            let cs = rope[pos * half_dim + j];
            let a = qkv[src + 2u * j];
            let b = qkv[src + 2u * j + 1u];
            xr[2u * j] = a * cs.x - b * cs.y;
            xr[2u * j + 1u] = a * cs.y + b * cs.x;
        }
        if (K_CENTRE) {
            for (var d = 0u; d < p.head_dim; d++) {
                xr[d] -= key_centre(kvh, d);
            }
        }
        if (K_ROT) {
            hadamard_xr(p.head_dim);
        }
        store_row(K_TYPE, true, kvh * p.ctx + slot);
    } else {
        for (var d = 0u; d < p.head_dim; d++) {
            xr[d] = qkv[src + d];
        }
        if (V_ROT) {
            hadamard_xr(p.head_dim);
        }
        store_row(V_TYPE, false, kvh * p.ctx + slot);
    }
}
#endif
