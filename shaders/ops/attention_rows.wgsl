// Causal prefill attention for CPU adapters, barrier-free. One invocation
// takes a tile of `tokens` consecutive query tokens for one KV head and all
// the query heads that share it (grouped-query attention): up to 12 query
// rows. Each key and value row is loaded once into private memory and serves
// every row of the tile, so storage loads per query drop by the row count
// (on llvmpipe every per-lane storage load is a scalar gather, while private
// arrays indexed by loop counters stay vector code). Online softmax per row;
// the normalised result goes straight to `out`, no combine pass.
#include "common/step.wgsl"

struct Params {
    n_head: u32,
    n_kv_head: u32,
    head_dim: u32,
    ctx: u32,
    scale: f32, // 1 / sqrt(head_dim)
    tokens: u32, // query tokens per invocation
    layer_window: u32, // 0: the step's mask; else this layer's own sliding window
    softcap: f32, // > 0: scores become softcap * tanh(score / softcap) (Gemma 2)
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
@group(0) @binding(5) var<storage, read_write> out: array<f32>; // [n_tokens, n_head * head_dim]

const MAX_ROWS: u32 = 12u;
const MAX_HD: u32 = 128u;

@compute @workgroup_size(16)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let kvh = wg.x;
    let t0 = (wg.y * 16u + li) * p.tokens;
    if (t0 >= step.n_tokens) {
        return;
    }
    let hd = p.head_dim;
    let g = p.n_head / p.n_kv_head;
    let nt = min(p.tokens, step.n_tokens - t0);
    let rows = nt * g;
    let width = (p.n_head + 2u * p.n_kv_head) * hd;
    var q: array<f32, 1536>; // MAX_ROWS * MAX_HD
    var acc: array<f32, 1536>;
    var m: array<f32, MAX_ROWS>;
    var l: array<f32, MAX_ROWS>;
    var kr: array<f32, MAX_HD>;
    var vr: array<f32, MAX_HD>;
    for (var r = 0u; r < rows; r++) {
        let t = t0 + r / g;
        let h = kvh * g + r % g;
        for (var d = 0u; d < hd; d++) {
            q[r * hd + d] = qkv[t * width + h * hd + d] * p.scale;
            acc[r * hd + d] = 0.0;
        }
        m[r] = -3.0e38;
        l[r] = 0.0;
    }
    // Slots the tile's last token may need (in-order slots stop at its own;
    // a ring visits all). Each row masks by the slot's position.
    let end = min(step.n_visit, step.visit_base + t0 + nt);
    for (var j = 0u; j < end; j++) {
        let kp = kv_pos[j];
        if (!kv_visible_any_w(kp, step.pos0 + t0, step.pos0 + t0 + nt - 1u, win(), snk())) {
            continue;
        }
        let cr = kvh * p.ctx + j;
        if (hd % 4u == 0u) {
            for (var d4 = 0u; d4 < hd / 4u; d4++) {
                let k = k4(cr, d4);
                let v = v4(cr, d4);
                for (var i = 0u; i < 4u; i++) {
                    kr[4u * d4 + i] = k[i];
                    vr[4u * d4 + i] = v[i];
                }
            }
        } else {
            for (var d = 0u; d < hd; d++) {
                kr[d] = k_at(cr, d);
                vr[d] = v_at(cr, d);
            }
        }
        for (var r = 0u; r < rows; r++) {
            if (!kv_visible_w(kp, step.pos0 + t0 + r / g, win(), snk())) {
                continue;
            }
            var s = 0.0;
            for (var d = 0u; d < hd; d++) {
                s += q[r * hd + d] * kr[d];
            }
            if (p.softcap > 0.0) {
                s = p.softcap * (1.0 - 2.0 / (exp(2.0 * s / p.softcap) + 1.0));
            }
            if (s > m[r]) {
                let corr = exp(m[r] - s);
                l[r] *= corr;
                for (var d = 0u; d < hd; d++) {
                    acc[r * hd + d] *= corr;
                }
                m[r] = s;
            }
            let e = exp(s - m[r]);
            l[r] += e;
            for (var d = 0u; d < hd; d++) {
                acc[r * hd + d] += e * vr[d];
            }
        }
    }
    for (var r = 0u; r < rows; r++) {
        let t = t0 + r / g;
        let h = kvh * g + r % g;
        let inv = 1.0 / l[r];
        for (var d = 0u; d < hd; d++) {
            var a = acc[r * hd + d];
            if (V_ROT) {
                // Values were stored turned by H: turn the output back.
                a = 0.0;
                for (var j = 0u; j < hd; j++) {
                    a += select(acc[r * hd + j], -acc[r * hd + j], had_odd(d, j));
                }
                a *= ROT_SCALE;
            }
            out[(t * p.n_head + h) * hd + d] = a * inv;
        }
    }
}
