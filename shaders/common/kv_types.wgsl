// Cache storage types (engine/src/kv: KvDtype::shader_id) and the row
// layout: a row is one (kv head, position) of head_dim values. Block types
// put the quant words of every 32-value block first, then the f16 scales two
// per word (q4_1: one (d, m) word per block).
const KV_F32: u32 = 0u;
const KV_F16: u32 = 1u;
const KV_Q8_0: u32 = 2u;
const KV_Q4_0: u32 = 3u;
const KV_Q4_1: u32 = 4u;
const KV_Q5_0: u32 = 5u;
const KV_IQ4_NL: u32 = 6u;
const KV_KIVI2: u32 = 7u;
// KIVI2 keys: f16 rows kept per KV head for tokens whose group of 32 tokens
// has not filled (engine/src/kv: KIVI_RES).
const KIVI_RES: u32 = 160u;

const K_TYPE: u32 = {{K_TYPE}}u;
const V_TYPE: u32 = {{V_TYPE}}u;
// Rows turned by the normalised Walsh-Hadamard matrix before quantization
// (engine/src/kv: KvTypes::rotate): q and k for K_ROT, v and the attention
// output for V_ROT. H[i][j] = (-1)^popcount(i & j) * ROT_SCALE.
const K_ROT: bool = {{K_ROT}};
const V_ROT: bool = {{V_ROT}};
const ROT_SCALE: f32 = {{ROT_SCALE}};
// Keys stored less the session's key mean, kept after the K rows
// (engine/src/kv: KvTypes::centre; ops/kv_centre.wgsl).
const K_CENTRE: bool = {{K_CENTRE}};
// Slot 0 (position 0, the attention sink) of block-type rows also kept
// exact, as f32 after the mean (IntactKV, arXiv 2403.01241).
const K_SINK: bool = {{K_SINK}};
const V_SINK: bool = {{V_SINK}};

fn had_odd(i: u32, j: u32) -> bool {
    return (countOneBits(i & j) & 1u) == 1u;
}

var<private> KV_IQ4NL: array<f32, 16> = array<f32, 16>(-127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0,
                                                        1.0, 13.0, 25.0, 38.0, 53.0, 69.0, 89.0, 113.0);

// Quant words per 32-value block.
fn kv_block_quants(ty: u32) -> u32 {
    switch ty {
        case 2u: { return 8u; }
        case 5u: { return 5u; }
        case 7u: { return 2u; }
        default: { return 4u; }
    }
}

fn kv_row_words(ty: u32, hd: u32) -> u32 {
    if (ty == KV_F32) {
        return hd;
    }
    if (ty == KV_F16) {
        return (hd + 1u) / 2u;
    }
    let nb = hd / 32u;
    if (ty == KV_Q4_1) {
        return nb * 5u;
    }
    if (ty == KV_KIVI2) {
        return nb * 3u;
    }
    return nb * kv_block_quants(ty) + (nb + 1u) / 2u;
}

// Whether the K (or V) row of `slot` also has an exact copy.
fn kv_sink_slot(is_k: bool, slot: u32) -> bool {
    return select(V_SINK, K_SINK, is_k) && slot == 0u;
}

// Word index of channel d of KV head h's exact sink row in the K (or V)
// cache: after the rows and, in a centred key cache, the mean.
fn kv_sink_index(is_k: bool, n_kv_head: u32, ctx: u32, hd: u32, h: u32, d: u32) -> u32 {
    let ty = select(V_TYPE, K_TYPE, is_k);
    let mean = select(0u, n_kv_head * hd, K_CENTRE && is_k);
    return n_kv_head * ctx * kv_row_words(ty, hd) + mean + h * hd + d;
}

// A KIVI2 key cache per KV head: groups of 32 tokens, each 3 words per
// channel (two code words, then one (step, min) word per channel after all
// the code words), then KIVI_RES f16 rows for tokens of unfilled groups.
fn kivi_groups_words(hd: u32, ctx: u32) -> u32 {
    return ((ctx + 31u) / 32u) * 3u * hd;
}

fn kivi_head_words(hd: u32, ctx: u32) -> u32 {
    return kivi_groups_words(hd, ctx) + KIVI_RES * (hd / 2u);
}
