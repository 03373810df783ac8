//! lottery patch: a bound on turning one value into text.
//!
//! Displaying a container visits every item, recursively, with nothing
//! charged: `'' ~ (list * 50000000)` visited 50 million items, a namespace
//! holding itself recursed until the stack overflowed, and a list holding
//! one large string many times wrote that string each time.  Every
//! `Display`/`Debug` of a `Value` passes through [`enter`], which counts the
//! nesting depth, the items and the bytes of nested strings since the
//! outermost value started; past a limit the rest is written as `...`.  No
//! real template comes near the limits.

use std::cell::Cell;

use crate::value::ValueRepr;

/// Deepest nesting written out.
const MAX_DEPTH: u32 = 128;
/// Items (at any depth) written out for one outermost value.
const MAX_ITEMS: u64 = 1 << 20;
/// Bytes of strings nested in containers written out for one outermost value.
const MAX_BYTES: u64 = 64 << 20;

#[derive(Clone, Copy)]
struct Budget {
    depth: u32,
    items: u64,
    bytes: u64,
}

thread_local! {
    static BUDGET: Cell<Budget> = const { Cell::new(Budget { depth: 0, items: 0, bytes: 0 }) };
}

/// Leaves one level of nesting when dropped.
pub(crate) struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        BUDGET.with(|b| {
            let mut v = b.get();
            v.depth = v.depth.saturating_sub(1);
            b.set(v);
        });
    }
}

/// Enters the display of `repr`; `None` when the budget is spent and the
/// caller should write `...` instead.
pub(crate) fn enter(repr: &ValueRepr) -> Option<Guard> {
    BUDGET.with(|b| {
        let mut v = b.get();
        if v.depth == 0 {
            v.items = 0;
            v.bytes = 0;
        } else {
            v.items += 1;
            v.bytes += match repr {
                ValueRepr::String(s, _) => s.len() as u64,
                ValueRepr::Bytes(s) => s.len() as u64,
                _ => 0,
            };
        }
        if v.depth >= MAX_DEPTH || v.items > MAX_ITEMS || v.bytes > MAX_BYTES {
            b.set(v);
            return None;
        }
        v.depth += 1;
        b.set(v);
        Some(Guard)
    })
}

/// Whether the current outermost value has spent its budget (containers
/// stop iterating then).
pub(crate) fn spent() -> bool {
    BUDGET.with(|b| {
        let v = b.get();
        v.depth > 0 && (v.items > MAX_ITEMS || v.bytes > MAX_BYTES)
    })
}
