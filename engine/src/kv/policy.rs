//! Which cached positions attention visits, in one place. The attention
//! kernels never branch on a policy: every step they get where this batch's
//! rows go (a slot formula), how many slots to visit (through a page list),
//! and a position mask (causal, plus an optional sink + window rule), and
//! they read each slot's position from the cache's position buffer.

use crate::gpu::Step;
use crate::{Error, Result};

/// Empty-slot marker in the position buffer (never visible).
pub const NO_POS: u32 = u32::MAX;

/// How the cache keeps and selects positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvPolicy {
    /// Every position, in order (the default).
    Full,
    /// StreamingLLM: the first `sink` positions and the last `window`, in a
    /// ring buffer, so generation runs past the cache's capacity.
    SinkWindow { sink: u32, window: u32 },
    /// Quest: keeps everything; each decode step attends to the `top` pages
    /// of `page` positions whose key bounds score highest against the query,
    /// plus the first and the current page. Saves reads, not memory. Batches
    /// of two or more tokens (prefill) attend to everything, as in the paper.
    Quest { page: u32, top: u32 },
    /// SnapKV: once the prompt passes `budget + window` positions, the
    /// attention of its last `window` queries scores every earlier position
    /// per KV head (summed over the head's query group and the window,
    /// max-pooled over `kernel` neighbours so a kept position brings its
    /// context); each KV head keeps its `budget` best plus the window, and
    /// the cache compacts to them. Later tokens append after the kept slots.
    SnapKv {
        budget: u32,
        window: u32,
        kernel: u32,
    },
}

/// The per-step values of a policy (fields of [`Step`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvStep {
    pub slot_base: u32,
    pub slot_off: u32,
    pub slot_mod: u32,
    pub n_visit: u32,
    pub visit_base: u32,
    pub sink: u32,
    pub window: u32,
    pub page: u32,
}

impl KvStep {
    pub fn apply(&self, st: &mut Step) {
        st.slot_base = self.slot_base;
        st.slot_off = self.slot_off;
        st.slot_mod = self.slot_mod;
        st.n_visit = self.n_visit;
        st.visit_base = self.visit_base;
        st.sink = self.sink;
        st.window = self.window;
        st.page = self.page;
    }
}

impl KvPolicy {
    /// `full`, `sink-window:S,W`, `quest:P,T`, `snapkv:B[,W,K]`.
    pub fn parse(s: &str) -> Result<KvPolicy> {
        let bad = |why: &str| Error::Shape {
            op: "kv policy",
            msg: format!(
                "`{s}`: {why} (expected full, sink-window:S,W, quest:P,T or snapkv:B[,W,K])"
            ),
        };
        let (name, args) = s.split_once(':').unwrap_or((s, ""));
        let nums: Vec<u32> = if args.is_empty() {
            Vec::new()
        } else {
            args.split(',')
                .map(|a| {
                    a.trim()
                        .parse::<u32>()
                        .map_err(|_| bad("arguments are whole numbers"))
                })
                .collect::<Result<_>>()?
        };
        let p = match (name, nums.as_slice()) {
            ("full", []) => KvPolicy::Full,
            ("sink-window", [s, w]) => KvPolicy::SinkWindow {
                sink: *s,
                window: *w,
            },
            ("quest", [p, t]) => KvPolicy::Quest { page: *p, top: *t },
            ("quest", []) => KvPolicy::Quest { page: 16, top: 16 },
            ("snapkv", [b]) => KvPolicy::SnapKv {
                budget: *b,
                window: 32,
                kernel: 7,
            },
            ("snapkv", [b, w]) => KvPolicy::SnapKv {
                budget: *b,
                window: *w,
                kernel: 7,
            },
            ("snapkv", [b, w, k]) => KvPolicy::SnapKv {
                budget: *b,
                window: *w,
                kernel: *k,
            },
            _ => return Err(bad("unknown policy or wrong number of arguments")),
        };
        match p {
            KvPolicy::SinkWindow { window: 0, .. } => {
                Err(bad("the window must hold at least one position"))
            }
            KvPolicy::Quest { page, top } if page == 0 || top == 0 => {
                Err(bad("page size and page budget must be positive"))
            }
            KvPolicy::SnapKv {
                budget,
                window,
                kernel,
            } if budget == 0 || window == 0 || kernel % 2 == 0 => Err(bad(
                "the budget and the window must be positive and the pooling kernel odd",
            )),
            _ => Ok(p),
        }
    }

    pub fn label(&self) -> String {
        match self {
            KvPolicy::Full => "full".into(),
            KvPolicy::SinkWindow { sink, window } => format!("sink-window:{sink},{window}"),
            KvPolicy::Quest { page, top } => format!("quest:{page},{top}"),
            KvPolicy::SnapKv {
                budget,
                window,
                kernel,
            } => format!("snapkv:{budget},{window},{kernel}"),
        }
    }

    /// Whether positions leave the cache (so the context can exceed its slots).
    pub fn evicts(&self) -> bool {
        matches!(self, KvPolicy::SinkWindow { .. })
    }

    /// Checks the policy against a cache of `slots` and returns the largest
    /// prefill batch it allows (a ring must keep every batch token's window).
    pub fn check(&self, slots: u32, max_batch: u32) -> Result<u32> {
        match *self {
            KvPolicy::Full => Ok(max_batch),
            KvPolicy::SinkWindow { sink, window } => {
                let need = sink as u64 + window as u64;
                if need > slots as u64 {
                    return Err(Error::Shape {
                        op: "kv policy",
                        msg: format!(
                            "sink-window:{sink},{window} needs {need} cache slots; the context holds {slots}"
                        ),
                    });
                }
                Ok(max_batch.min(slots - sink - window + 1).max(1))
            }
            KvPolicy::Quest { page, top } => {
                let pages = slots.div_ceil(page);
                if top + 2 > pages || pages > crate::ops::QUEST_MAX_PAGES {
                    return Err(Error::Shape {
                        op: "kv policy",
                        msg: format!(
                            "quest:{page},{top} on a context of {slots}: {pages} pages, which must be \
                             at least top + 2 = {} and at most {}",
                            top + 2,
                            crate::ops::QUEST_MAX_PAGES
                        ),
                    });
                }
                Ok(max_batch)
            }
            KvPolicy::SnapKv { window, .. } => {
                // The window's queries are re-run as one batch to score.
                if window > max_batch || window >= slots {
                    return Err(Error::Shape {
                        op: "kv policy",
                        msg: format!(
                            "{}: the observation window of {window} must fit one prefill batch \
                             ({max_batch} tokens) and be shorter than the context ({slots})",
                            self.label()
                        ),
                    });
                }
                Ok(max_batch)
            }
        }
    }

    /// Tokens of the next batch at position `pos0`, at most `limit`: a ring
    /// batch never straddles the end of the sink.
    pub fn next_batch(&self, pos0: usize, remaining: usize, limit: usize) -> usize {
        let n = remaining.min(limit).max(1);
        match *self {
            KvPolicy::SinkWindow { sink, .. } if pos0 < sink as usize => {
                n.min(sink as usize - pos0)
            }
            _ => n,
        }
    }

    /// Slots a cache of `slots` has in use once `n_pos` positions went through it.
    pub fn used(&self, n_pos: u32, slots: u32) -> u32 {
        n_pos.min(slots)
    }

    /// Positions attention can still see for the next token after `n_pos`.
    pub fn kept(&self, n_pos: u32, slots: u32) -> u32 {
        match *self {
            KvPolicy::SinkWindow { sink, window } => {
                n_pos.min(sink) + n_pos.saturating_sub(sink).min(window)
            }
            _ => n_pos.min(slots),
        }
    }

    /// The step values for a batch of `n` tokens at `pos0` (`decode`: one
    /// token through the split kernel, where Quest selects pages).
    pub fn plan(&self, pos0: u32, n: u32, slots: u32, decode: bool) -> KvStep {
        self.plan_compacted(pos0, n, slots, decode, 0)
    }

    /// [`plan`](Self::plan) for a cache that compaction (SnapKV) left
    /// `evicted` positions short: position p >= the compaction point sits
    /// in slot p - evicted, and the kept slots before it are all visible.
    pub fn plan_compacted(
        &self,
        pos0: u32,
        n: u32,
        slots: u32,
        decode: bool,
        evicted: u32,
    ) -> KvStep {
        let end = pos0 + n;
        let used = self.used(end - evicted.min(end), slots);
        let mut st = KvStep {
            slot_base: 0,
            slot_off: pos0,
            slot_mod: u32::MAX,
            n_visit: used,
            // In-order slots: a batch token never needs a slot past its own.
            visit_base: pos0,
            sink: 0,
            window: 0,
            // One page of every slot: the identity page list (entry 0 is 0).
            page: slots,
        };
        match *self {
            KvPolicy::Full => {}
            KvPolicy::SnapKv { .. } => {
                st.slot_off = pos0 - evicted;
                st.visit_base = pos0 - evicted;
            }
            KvPolicy::SinkWindow { sink, window } => {
                st.sink = sink;
                st.window = window;
                if pos0 >= sink {
                    let ring = slots - sink;
                    st.slot_base = sink;
                    st.slot_off = (pos0 - sink) % ring;
                    st.slot_mod = ring;
                    // Wrapped slots are out of order: visit them all.
                    st.visit_base = used;
                }
            }
            KvPolicy::Quest { page, top } => {
                let pages = end.div_ceil(page);
                if decode && pages > top + 2 {
                    st.page = page;
                    st.n_visit = (top + 2) * page;
                    st.visit_base = st.n_visit;
                }
            }
        }
        st
    }

    /// Whether the cache can go back to `to` positions from `now`: a ring
    /// has overwritten what the next token's window would need.
    pub fn check_rewind(&self, now: u32, to: u32, slots: u32) -> Result<()> {
        if let KvPolicy::SinkWindow { sink, window } = *self {
            let ring = slots - sink;
            let oldest = now.saturating_sub(ring).max(sink);
            let need = (to + 1).saturating_sub(window).max(sink);
            if to > sink && need < oldest {
                return Err(Error::Shape {
                    op: "kv rewind",
                    msg: format!(
                        "rewinding to {to} needs positions from {need}, but the ring \
                         (sink-window:{sink},{window}) has evicted everything before {oldest}"
                    ),
                });
            }
        }
        Ok(())
    }

    /// The positions a query at `q` attends to under this policy, given all
    /// `0..=q` were fed (the CPU reference's mask). Quest is not a mask: it
    /// depends on the query; its reference lives with its test.
    pub fn visible(&self, q: usize, k: usize) -> bool {
        match *self {
            KvPolicy::SinkWindow { sink, window } => {
                k <= q && (k < sink as usize || k + window as usize > q)
            }
            _ => k <= q,
        }
    }
}

/// SnapKV's choice for one KV head: `scores` are the observation window's
/// attention to positions 0..scores.len() (everything before the window);
/// max-pooled over `kernel` neighbours (ties to the earlier position), the
/// `budget` best positions, ascending.
pub fn snapkv_select(scores: &[f32], budget: usize, kernel: usize) -> Vec<u32> {
    let n = scores.len();
    if budget >= n {
        return (0..n as u32).collect();
    }
    let r = kernel / 2;
    let pooled: Vec<f32> = (0..n)
        .map(|i| {
            scores[i.saturating_sub(r)..(i + r + 1).min(n)]
                .iter()
                .cloned()
                .fold(f32::MIN, f32::max)
        })
        .collect();
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_by(|&a, &b| {
        pooled[b as usize]
            .total_cmp(&pooled[a as usize])
            .then(a.cmp(&b))
    });
    order.truncate(budget);
    // Position 0, the attention sink, stays: block caches keep slot 0 exact
    // (KvTypes::sink), and compaction keeps it in slot 0 only if it is kept.
    if budget > 0 && !order.contains(&0) {
        order.pop();
        order.push(0);
    }
    order.sort_unstable();
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapkv_parses_with_defaults_and_refuses_bad_arguments() {
        let p = KvPolicy::parse("snapkv:256").unwrap();
        assert_eq!(
            p,
            KvPolicy::SnapKv {
                budget: 256,
                window: 32,
                kernel: 7
            }
        );
        assert_eq!(p.label(), "snapkv:256,32,7");
        assert_eq!(KvPolicy::parse(&p.label()).unwrap(), p);
        assert_eq!(
            KvPolicy::parse("snapkv:64,16").unwrap(),
            KvPolicy::SnapKv {
                budget: 64,
                window: 16,
                kernel: 7
            }
        );
        for bad in [
            "snapkv",
            "snapkv:0",
            "snapkv:8,0",
            "snapkv:8,4,2",
            "snapkv:8,4,3,1",
        ] {
            let e = KvPolicy::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
        let e = p.check(16, 512).unwrap_err().to_string();
        assert!(e.contains("observation window of 32"), "{e}");
        assert!(p.check(512, 16).is_err());
        assert!(p.check(512, 64).is_ok());
    }

    /// Max pooling spreads a peak over its neighbours, the top budget wins
    /// beside position 0 (always kept), ties go to the earlier position and
    /// the result is ascending.
    #[test]
    fn snapkv_select_pools_then_keeps_the_best() {
        let mut s = vec![0.0f32; 20];
        s[10] = 5.0;
        s[2] = 1.0;
        s[17] = 3.0;
        // Kernel 1: no pooling; the sink displaces the weakest.
        assert_eq!(snapkv_select(&s, 3, 1), vec![0, 10, 17]);
        assert_eq!(snapkv_select(&s, 4, 1), vec![0, 2, 10, 17]);
        // Kernel 3: 9..=11 share the peak, then 16..=18.
        assert_eq!(snapkv_select(&s, 4, 3), vec![0, 9, 10, 11]);
        assert_eq!(snapkv_select(&s, 7, 3), vec![0, 9, 10, 11, 16, 17, 18]);
        // A sink that scores is kept once.
        s[0] = 9.0;
        assert_eq!(snapkv_select(&s, 2, 1), vec![0, 10]);
        s[0] = 0.0;
        // All zeros: the earliest ones.
        assert_eq!(snapkv_select(&[0.0; 5], 2, 3), vec![0, 1]);
        // A budget past the length keeps everything.
        assert_eq!(snapkv_select(&s[..4], 9, 7), vec![0, 1, 2, 3]);
    }

    /// After compaction a position p sits in slot p - evicted and every kept
    /// slot before it is visible.
    #[test]
    fn snapkv_plans_slots_after_compaction() {
        let p = KvPolicy::parse("snapkv:8,4,3").unwrap();
        let st = p.plan_compacted(100, 1, 512, true, 88);
        assert_eq!(st.slot_off, 12);
        assert_eq!(st.visit_base, 12);
        let full = p.plan(0, 100, 512, false);
        assert_eq!(full.slot_off, 0);
    }
}
