// Causal grouped-query attention, one workgroup per (head, token, key chunk).
// Keys are visited in tiles of 64 with an online softmax, so no buffer grows
// with the square of the context. Each workgroup writes a partial result
// (running max, running sum, unnormalised output) that attention_combine
// merges: with one chunk this is plain attention (prefill), with many it is
// flash-decoding, which spreads a long context over many workgroups when a
// single token is decoded.
#include "common/step.wgsl"

struct Params {
    n_head: u32,
    n_kv_head: u32,
    head_dim: u32,
    ctx: u32,
    scale: f32, // 1 / sqrt(head_dim)
    all_slots: u32, // 1: ignore the page list, visit every used slot
    layer_window: u32, // 0: the step's mask; else this layer's own sliding window
    softcap: f32, // > 0: scores become softcap * tanh(score / softcap) (Gemma 2)
}

// tanh through exp, exact at both tails on every backend.
fn capped(s: f32) -> f32 {
    if (p.softcap <= 0.0) {
        return s;
    }
    return p.softcap * (1.0 - 2.0 / (exp(2.0 * s / p.softcap) + 1.0));
}

// The step's window and sink, or the layer's own window (no sink).
fn win() -> u32 {
    return select(step.window, p.layer_window, p.layer_window != 0u);
}
fn snk() -> u32 {
    return select(step.sink, 0u, p.layer_window != 0u);
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> qkv: array<f32>;
#include "common/kv_read.wgsl"
@group(0) @binding(5) var<storage, read_write> part: array<f32>; // [n_tokens, n_head, n_chunks, head_dim + 2]
@group(0) @binding(7) var<storage, read> pages: array<u32>; // [n_head, ctx]: each query head's pages to visit

const TILE: u32 = 64u;
const MAX_HD: u32 = 256u;
var<workgroup> qs: array<f32, MAX_HD>;
var<workgroup> sc: array<f32, TILE>;
var<workgroup> slots: array<u32, TILE>; // slot of each visited key (NONE: masked)
const NONE: u32 = 0xffffffffu;
// With head_dim a multiple of 4, a thread sums four value columns over a
// quarter of each tile's keys (one vec4 load per key, four independent
// chains), where one column over every key made a chain of 64 dependent
// loads per tile: that latency was most of a decode step on a real GPU. The
// four quarters are added at the end.
const LANES: u32 = 16u; // vec4 columns per pass over the threads
var<workgroup> red: array<vec4<f32>, 256>; // [4 key quarters, MAX_HD / 4 columns]

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let h = wg.x;
    let t = wg.y;
    let c = wg.z;
    let hd = p.head_dim;
    let kvh = h / (p.n_head / p.n_kv_head);
    let row = t * (p.n_head + 2u * p.n_kv_head) * hd;
    for (var d = li; d < hd; d += TILE) {
        qs[d] = qkv[row + h * hd + d] * p.scale;
    }
    let qpos = step.pos0 + t;
    // A dense layer under Quest spreads all kv_len in-order slots over the
    // step's chunks; others visit the step's page list.
    let all = p.all_slots == 1u;
    let n_visit = select(step.n_visit, step.kv_len, all);
    let chunk_len = select(step.chunk_len, (step.kv_len + step.n_chunks - 1u) / step.n_chunks, all);
    let visit_base = select(step.visit_base, step.pos0, all);
    let start = c * chunk_len;
    let end = min(start + chunk_len, min(n_visit, visit_base + t + 1u));
    let list = h * p.ctx; // each query head's page list has room for ctx entries
    var m = -3.0e38;
    var l = 0.0;
    var acc: array<f32, 4>; // this thread's output dims li, li + 64, ...
    var acc4: array<vec4<f32>, 4>; // or its columns cg, cg + 16, ... over keys kq, kq + 4, ...
    for (var i = 0u; i < 4u; i++) {
        acc[i] = 0.0;
        acc4[i] = vec4<f32>(0.0);
    }
    let by4 = hd % 4u == 0u;
    let cg = li % LANES;
    let kq = li / LANES;
    workgroupBarrier();
    var k0 = start;
    // `end` is uniform across the workgroup, so the barriers below are too.
    loop {
        if (k0 >= end) {
            break;
        }
        let n = min(TILE, end - k0);
        var s = -3.0e38;
        var seen = false;
        var slot = NONE;
        if (li < n) {
            let i = k0 + li;
            slot = select(pages[list + i / step.page] * step.page + i % step.page, i, all);
            seen = slot < p.ctx && kv_visible_w(kv_pos[slot], qpos, win(), snk());
            if (seen) {
                let kr = kvh * p.ctx + slot;
                var dotv = 0.0;
                if (hd % 4u == 0u) {
                    for (var d4 = 0u; d4 < hd / 4u; d4++) {
                        let q = vec4<f32>(qs[4u * d4], qs[4u * d4 + 1u], qs[4u * d4 + 2u], qs[4u * d4 + 3u]);
                        dotv += dot(q, k4(kr, d4));
                    }
                } else {
                    for (var d = 0u; d < hd; d++) {
                        dotv += qs[d] * k_at(kr, d);
                    }
                }
                s = capped(dotv);
            }
        }
        sc[li] = s;
        slots[li] = select(NONE, slot, seen);
        workgroupBarrier();
        var tmax = -3.0e38;
        for (var j = 0u; j < n; j++) {
            tmax = max(tmax, sc[j]);
        }
        let m_new = max(m, tmax);
        let corr = exp(m - m_new);
        workgroupBarrier();
        if (li < n) {
            sc[li] = select(0.0, exp(s - m_new), seen);
        }
        workgroupBarrier();
        var psum = 0.0;
        for (var j = 0u; j < n; j++) {
            psum += sc[j];
        }
        l = l * corr + psum;
        if (by4) {
            for (var i = 0u; i < 4u; i++) {
                acc4[i] *= corr;
            }
            for (var j = kq; j < n; j += 4u) {
                let sl = slots[j];
                if (sl != NONE) {
                    let w = sc[j];
                    for (var i = 0u; i < 4u; i++) {
                        let col = cg + i * LANES;
                        if (col < hd / 4u) {
                            acc4[i] += w * v4(kvh * p.ctx + sl, col);
                        }
                    }
                }
            }
        } else {
            for (var i = 0u; i < 4u; i++) {
                let d = li + i * TILE;
                if (d < hd) {
                    var a = acc[i] * corr;
                    for (var j = 0u; j < n; j++) {
                        if (slots[j] != NONE) {
                            a += sc[j] * v_at(kvh * p.ctx + slots[j], d);
                        }
                    }
                    acc[i] = a;
                }
            }
        }
        m = m_new;
        workgroupBarrier();
        k0 += n;
    }
    let stride = hd + 2u;
    let o = ((t * p.n_head + h) * step.n_chunks + c) * stride;
    if (li == 0u) {
        part[o] = m;
        part[o + 1u] = l;
    }
    if (by4) {
        for (var i = 0u; i < 4u; i++) {
            let col = cg + i * LANES;
            if (col < hd / 4u) {
                red[kq * (MAX_HD / 4u) + col] = acc4[i];
            }
        }
        workgroupBarrier();
        for (var col = li; col < hd / 4u; col += TILE) {
            let q = MAX_HD / 4u;
            let v = (red[col] + red[q + col]) + (red[2u * q + col] + red[3u * q + col]);
            for (var e = 0u; e < 4u; e++) {
                part[o + 2u + 4u * col + e] = v[e];
            }
        }
    } else {
        for (var i = 0u; i < 4u; i++) {
            let d = li + i * TILE;
            if (d < hd) {
                part[o + 2u + d] = acc[i];
            }
        }
    }
}
