// Picks the next token on the GPU so a decode step reads back one u32.
// One workgroup of 256 threads over the vocabulary:
// 1. repetition penalty on the ids in `history` (each distinct id once);
// 2. greedy: argmax (lowest id on ties);
// 3. otherwise, with z = (logit - max) / temperature, the kept set is
//    {z >= tau}: tau_k (top-k) and tau_p (top-p within the top-k set) are
//    found by bisection on the threshold, tau_min = ln(min_p); then the token
//    is drawn by inverse CDF with `step.rand_u` over contiguous per-thread
//    segments. Ties at a threshold keep every tied token.
#include "common/step.wgsl"

struct Params {
    vocab: u32,
    greedy: u32,
    top_k: u32,       // 0: off
    logits_off: u32,  // float offset of the row to sample
    temperature: f32,
    top_p: f32,       // 1: off
    min_p: f32,       // 0: off
    rep_penalty: f32, // 1: off
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read_write> logits: array<f32>;
@group(0) @binding(3) var<storage, read> history: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<u32>;
@group(0) @binding(5) var<storage, read> mask: array<u32>; // a bit per id, read while step.masked is 1

const WG: u32 = 256u;
const BISECT: u32 = 28u;
var<workgroup> rf: array<f32, WG>;
var<workgroup> ri: array<u32, WG>;

fn lg(i: u32) -> f32 {
    return logits[p.logits_off + i];
}

fn sum_all(li: u32, v: f32) -> f32 {
    workgroupBarrier();
    rf[li] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            rf[li] += rf[li + s];
        }
        workgroupBarrier();
    }
    return rf[0];
}

// Count (as f32) of z >= tau, and their mass sum exp(z).
fn count_mass(li: u32, mx: f32, tau: f32, want_mass: bool) -> f32 {
    var acc = 0.0;
    for (var i = li; i < p.vocab; i += WG) {
        let z = (lg(i) - mx) / p.temperature;
        if (z >= tau) {
            if (want_mass) { acc += exp(z); } else { acc += 1.0; }
        }
    }
    return sum_all(li, acc);
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) li: u32) {
    if (step.masked != 0u) {
        // Below every real logit and finite, so (logit - max) stays finite.
        for (var i = li; i < p.vocab; i += WG) {
            if (((mask[i / 32u] >> (i % 32u)) & 1u) == 0u) {
                logits[p.logits_off + i] = -3.0e38;
            }
        }
        storageBarrier();
        workgroupBarrier();
    }
    if (p.rep_penalty != 1.0) {
        for (var j = li; j < step.n_history; j += WG) {
            let id = history[j];
            var first = id < p.vocab;
            for (var e = 0u; e < j; e++) {
                if (history[e] == id) { first = false; }
            }
            if (first) {
                let v = logits[p.logits_off + id];
                logits[p.logits_off + id] = select(v * p.rep_penalty, v / p.rep_penalty, v > 0.0);
            }
        }
        storageBarrier();
        workgroupBarrier();
    }
    // Argmax, lowest index on ties.
    var bv = -3.4e38;
    var bi = 0xffffffffu;
    for (var i = li; i < p.vocab; i += WG) {
        let v = lg(i);
        if (v > bv) { bv = v; bi = i; }
    }
    rf[li] = bv;
    ri[li] = bi;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            let ov = rf[li + s];
            let oi = ri[li + s];
            if (ov > rf[li] || (ov == rf[li] && oi < ri[li])) {
                rf[li] = ov;
                ri[li] = oi;
            }
        }
        workgroupBarrier();
    }
    let mx = rf[0];
    let amax = ri[0];
    if (p.greedy != 0u || p.temperature <= 0.0 || p.top_k == 1u) {
        if (li == 0u) { out[0] = amax; }
        return;
    }
    // Thresholds live in z-space, z <= 0; -80 keeps every token whose
    // probability relative to the top one exceeds e^-80.
    var tau = -80.0;
    if (p.top_k > 0u && p.top_k < p.vocab) {
        var lo = -80.0;
        var hi = 0.0;
        for (var it = 0u; it < BISECT; it++) {
            let mid = 0.5 * (lo + hi);
            if (count_mass(li, mx, mid, false) >= f32(p.top_k)) { lo = mid; } else { hi = mid; }
        }
        tau = lo;
    }
    if (p.top_p < 1.0) {
        let total = count_mass(li, mx, tau, true);
        var lo = tau;
        var hi = 0.0;
        for (var it = 0u; it < BISECT; it++) {
            let mid = 0.5 * (lo + hi);
            if (count_mass(li, mx, mid, true) >= p.top_p * total) { lo = mid; } else { hi = mid; }
        }
        tau = lo;
    }
    if (p.min_p > 0.0) {
        tau = max(tau, log(p.min_p));
    }
    // Inverse CDF over contiguous segments, one per thread.
    let seg = (p.vocab + WG - 1u) / WG;
    let b0 = min(li * seg, p.vocab);
    let b1 = min(b0 + seg, p.vocab);
    var mine = 0.0;
    for (var i = b0; i < b1; i++) {
        let z = (lg(i) - mx) / p.temperature;
        if (z >= tau) { mine += exp(z); }
    }
    workgroupBarrier();
    rf[li] = mine;
    workgroupBarrier();
    if (li == 0u) {
        var run = 0.0;
        for (var j = 0u; j < WG; j++) {
            let v = rf[j];
            rf[j] = run;
            run += v;
        }
        ri[0] = bitcast<u32>(run);
    }
    workgroupBarrier();
    let total = bitcast<f32>(ri[0]);
    let target_mass = step.rand_u * total;
    let before = rf[li];
    if (li == 0u) { ri[1] = amax; }
    workgroupBarrier();
    if (mine > 0.0 && target_mass >= before && target_mass < before + mine) {
        var run = before;
        var pick = b0;
        for (var i = b0; i < b1; i++) {
            let z = (lg(i) - mx) / p.temperature;
            if (z >= tau) {
                run += exp(z);
                pick = i;
                if (run > target_mass) { break; }
            }
        }
        ri[1] = pick;
    }
    workgroupBarrier();
    if (li == 0u) { out[0] = ri[1]; }
}
