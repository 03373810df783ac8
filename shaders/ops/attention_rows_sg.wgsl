// Causal prefill attention for CPU adapters with subgroups, barrier-free.
// One invocation per query row (token, head); a workgroup takes `tokens`
// consecutive tokens x the query heads sharing one KV head. Every lane reads
// the same key and value rows, so lane l loads every 8th vec4 of a row and
// subgroupBroadcast (an extract and a splat in llvmpipe's JIT code) hands
// them round: one gather per lane per 32 values instead of eight. q and the
// output accumulator live in vec4 arrays indexed only by constant-trip
// loops, which the driver unrolls into registers; attention_rows.wgsl keeps
// 12 rows in private arrays instead, and on llvmpipe each dynamic index into
// one is a per-lane scratch gather. Online softmax per row, branch-free
// across lanes (the key loop and its loads stay in uniform control flow);
// the normalised result goes straight to `out`. Needs head_dim a power of
// two from 32 to 128 and subgroups of at least 8 lanes (the host checks).
// WG lanes a workgroup: 16 for prefill; 8 for decode, where one token's g
// query rows (3 for SmolLM2) would leave a second 8-lane batch running the
// key loop only to repeat the first one's rows.
#include "common/step.wgsl"

struct Params {
    n_head: u32,
    n_kv_head: u32,
    head_dim: u32,
    ctx: u32,
    scale: f32, // 1 / sqrt(head_dim)
    tokens: u32, // query tokens per workgroup (tokens * group <= WG)
    layer_window: u32, // 0: the step's mask; else this layer's own sliding window
    softcap: f32, // > 0: scores become softcap * tanh(score / softcap) (Gemma 2)
}

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

const HD4: u32 = {{HD4}}u;
const PARTS: u32 = HD4 / 8u;

@compute @workgroup_size({{WG}})
fn main(@builtin(local_invocation_index) li: u32,
        @builtin(subgroup_invocation_id) sl: u32,
        @builtin(workgroup_id) wg: vec3<u32>) {
    let kvh = wg.x;
    let g = p.n_head / p.n_kv_head;
    let t0 = wg.y * p.tokens;
    // Idle lanes (li >= tokens * g) and tail tokens repeat the last row and
    // skip the store, so every lane runs the key loop.
    let nt = min(p.tokens, step.n_tokens - t0);
    let r = min(li, nt * g - 1u);
    let t = t0 + r / g;
    let h = kvh * g + r % g;
    let qpos = step.pos0 + t;
    let width = (p.n_head + 2u * p.n_kv_head) * p.head_dim;
    let qb = t * width + h * p.head_dim;
    var q: array<vec4<f32>, HD4>;
    var acc: array<vec4<f32>, HD4>;
    for (var i = 0u; i < HD4; i++) {
        q[i] = vec4<f32>(qkv[qb + 4u * i], qkv[qb + 4u * i + 1u],
                         qkv[qb + 4u * i + 2u], qkv[qb + 4u * i + 3u]) * p.scale;
        acc[i] = vec4<f32>(0.0);
    }
    var m = -3.0e38;
    var l = 0.0;
    let l8 = sl % 8u;
    let q_first = step.pos0 + t0;
    let q_last = step.pos0 + t0 + nt - 1u;
    // Slots the workgroup's last token may need (in-order slots stop at its
    // own; a ring visits all). Each lane masks by the slot's position.
    let end = min(step.n_visit, step.visit_base + t0 + nt);
    for (var j = 0u; j < end; j++) {
        let kp = kv_pos[j];
        if (!kv_visible_any_w(kp, q_first, q_last, win(), snk())) {
            continue;
        }
        let cr = kvh * p.ctx + j;
        var s = 0.0;
        for (var pp = 0u; pp < PARTS; pp++) {
            let k = k4(cr, pp * 8u + l8);
            let o = pp * 8u;
            s += dot(q[o], subgroupBroadcast(k, 0u)) + dot(q[o + 1u], subgroupBroadcast(k, 1u))
               + dot(q[o + 2u], subgroupBroadcast(k, 2u)) + dot(q[o + 3u], subgroupBroadcast(k, 3u))
               + dot(q[o + 4u], subgroupBroadcast(k, 4u)) + dot(q[o + 5u], subgroupBroadcast(k, 5u))
               + dot(q[o + 6u], subgroupBroadcast(k, 6u)) + dot(q[o + 7u], subgroupBroadcast(k, 7u));
        }
        if (p.softcap > 0.0) {
            s = p.softcap * (1.0 - 2.0 / (exp(2.0 * s / p.softcap) + 1.0));
        }
        let vis = kv_visible_w(kp, qpos, win(), snk());
        let mn = select(m, max(m, s), vis);
        let corr = exp(m - mn);
        let e = select(0.0, exp(s - mn), vis);
        m = mn;
        l = l * corr + e;
        for (var pp = 0u; pp < PARTS; pp++) {
            let v = v4(cr, pp * 8u + l8);
            let o = pp * 8u;
            acc[o] = acc[o] * corr + e * subgroupBroadcast(v, 0u);
            acc[o + 1u] = acc[o + 1u] * corr + e * subgroupBroadcast(v, 1u);
            acc[o + 2u] = acc[o + 2u] * corr + e * subgroupBroadcast(v, 2u);
            acc[o + 3u] = acc[o + 3u] * corr + e * subgroupBroadcast(v, 3u);
            acc[o + 4u] = acc[o + 4u] * corr + e * subgroupBroadcast(v, 4u);
            acc[o + 5u] = acc[o + 5u] * corr + e * subgroupBroadcast(v, 5u);
            acc[o + 6u] = acc[o + 6u] * corr + e * subgroupBroadcast(v, 6u);
            acc[o + 7u] = acc[o + 7u] * corr + e * subgroupBroadcast(v, 7u);
        }
    }
    if (V_ROT) {
        // Values were stored turned by H: turn the output back with a fast
        // Walsh-Hadamard transform (H[i][j] = (-1)^popcount(i & j)).
        for (var i = 0u; i < HD4; i++) {
            let a = acc[i];
            let b = vec4<f32>(a.x + a.y, a.x - a.y, a.z + a.w, a.z - a.w);
            acc[i] = vec4<f32>(b.x + b.z, b.y + b.w, b.x - b.z, b.y - b.w);
        }
        for (var hh = 1u; hh < HD4; hh *= 2u) {
            for (var i = 0u; i < HD4; i++) {
                if ((i & hh) == 0u) {
                    let a = acc[i];
                    let b = acc[i + hh];
                    acc[i] = a + b;
                    acc[i + hh] = a - b;
                }
            }
        }
        for (var i = 0u; i < HD4; i++) {
            acc[i] *= ROT_SCALE;
        }
    }
    if (li < nt * g) {
        let inv = 1.0 / l;
        let ob = (t * p.n_head + h) * p.head_dim;
        for (var i = 0u; i < HD4; i++) {
            let a = acc[i] * inv;
            out[ob + 4u * i] = a.x;
            out[ob + 4u * i + 1u] = a.y;
            out[ob + 4u * i + 2u] = a.z;
            out[ob + 4u * i + 3u] = a.w;
        }
    }
}
