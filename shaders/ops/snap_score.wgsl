// SnapKV's scores (engine/src/kv/policy.rs: KvPolicy::SnapKv), run once per
// layer when the prompt's last `window` tokens are fed again as one batch,
// right after rope_kv has stored their keys and turned their queries.
// Without SCORE, one invocation per (query head, window token): that query's
//   softmax max and denominator over every key it sees (causal).
// With SCORE, one invocation per (KV head, position before the window): the
//   attention that position gets, summed over the head's query group and
//   the window: the score the host pools and ranks.
// Scores are the attention kernels' own (q.k / sqrt(head_dim) on the keys
// as stored: turned and centred keys give the same softmax).
#include "common/step.wgsl"

struct Params {
    n_head: u32,
    n_kv_head: u32,
    head_dim: u32,
    ctx: u32,
    scale: f32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> qkv: array<f32>;
#include "common/kv_read.wgsl"
@group(0) @binding(7) var<storage, read_write> stats: array<f32>; // [n_head, n_tokens, 2]: (max, sum)
@group(0) @binding(8) var<storage, read_write> score: array<f32>; // [n_kv_head, ctx]

const MAX_HD4: u32 = 64u;

fn dot_key(qrow: u32, row: u32) -> f32 {
    var s = 0.0;
    for (var d4 = 0u; d4 < p.head_dim / 4u; d4++) {
        let q = vec4<f32>(qkv[qrow + 4u * d4], qkv[qrow + 4u * d4 + 1u], qkv[qrow + 4u * d4 + 2u],
                          qkv[qrow + 4u * d4 + 3u]);
        s += dot(q, k4(row, d4));
    }
    return s * p.scale;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let width = (p.n_head + 2u * p.n_kv_head) * p.head_dim;
    let group = p.n_head / p.n_kv_head;
#if SCORE
    let kvh = gid.x / p.ctx;
    let j = gid.x % p.ctx;
    if (kvh >= p.n_kv_head || j >= step.pos0) {
        return;
    }
    let row = kvh * p.ctx + j;
    var acc = 0.0;
    for (var g = 0u; g < group; g++) {
        let h = kvh * group + g;
        for (var t = 0u; t < step.n_tokens; t++) {
            let s = dot_key(t * width + h * p.head_dim, row);
            let i = (h * step.n_tokens + t) * 2u;
            acc += exp(s - stats[i]) / stats[i + 1u];
        }
    }
    score[row] = acc;
#else
    let h = gid.x / step.n_tokens;
    let t = gid.x % step.n_tokens;
    if (h >= p.n_head) {
        return;
    }
    let kvh = h / group;
    let qrow = t * width + h * p.head_dim;
    var m = -3.0e38;
    var l = 0.0;
    // Before compaction slot = position, in order.
    for (var j = 0u; j <= step.pos0 + t; j++) {
        let s = dot_key(qrow, kvh * p.ctx + j);
        let nm = max(m, s);
        l = l * exp(m - nm) + exp(s - nm);
        m = nm;
    }
    stats[(h * step.n_tokens + t) * 2u] = m;
    stats[(h * step.n_tokens + t) * 2u + 1u] = l;
#endif
}
