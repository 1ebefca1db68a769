//! The lean replay of a small graph: every needed node computed in order, each value
//! released after its last reader, and only the cheap passes.
//!
//! The passes of a lean replay that save memory traffic on large values (a sum folded
//! into its reader, parts written into their join's rows, large leaf slices copied
//! again) cost the replay loop a few checks and its byte count on every node, and
//! save next to nothing when every value is a few hundred bytes: at W3-S (T = 16,
//! B = 1, H = 32: 212 nodes computed, none over 512 bytes) a step took 58.8 µs with
//! them and 50.7 µs in this loop (the bench's lean-replay medians, one thread), W1-S
//! 54 and 47 µs, W2-S 24.4 and 24.0 µs (and 23.0 against 24.1 in one alternation once
//! its sums took a term's buffer). A graph whose values all fit in the graph's small
//! limit ([`Graph::set_small_graph_limit`], 256 KiB unless set) is replayed by this
//! loop: the same values bit for bit, each released after its last reader (a sum the
//! full loop folds into its reader is made here, and its terms die at the sum, which
//! may take one's buffer), and the peak counted the same way. It keeps the two passes
//! that are cheap for every node: an elementwise op computed into the buffer of an
//! input that dies there, and a GRU's or an LSTM's sibling gradients made in one pass
//! (`paired`).

use super::{add_time, Graph, LeanPlan, OpTimes};
use crate::error::Result;
use crate::float::Float;

/// The default of [`Graph::set_small_graph_limit`]: values of every node together.
pub(super) const SMALL_GRAPH_BYTES: usize = 256 << 10;

impl<T: Float> Graph<T> {
    /// Runs `plan` for a small graph (see the module's documentation).
    pub(super) fn run_plan_small(&mut self, plan: &LeanPlan, mut timer: Option<&mut OpTimes>) -> Result<()> {
        let last = if plan.small_last.is_empty() { &plan.last } else { &plan.small_last };
        let pinned = &plan.pinned;
        let mut live = self.held_bytes();
        let mut peak = live;
        for i in 0..self.nodes.len() {
            if self.nodes[i].op.is_leaf() {
                continue;
            }
            if !plan.needed[i] {
                if self.has[i] {
                    live -= self.freed_bytes(i); // the value of a plain replay
                    self.release(i);
                }
                continue;
            }
            let t0 = timer.is_some().then(std::time::Instant::now);
            if self.premade == Some(i) {
                self.premade = None; // made with its sibling, counted then
            } else {
                if self.has[i] {
                    live -= self.freed_bytes(i); // the value of an earlier run
                }
                let dying = |j: usize| last[j] == i as u32 && !pinned[j];
                match plan.pairs.get(i).copied().filter(|&k| k != LeanPlan::NONE && self.premade.is_none()) {
                    Some(k) => {
                        self.compute_pair((i, None), (k as usize, None), [None; 2], &mut live)?;
                        live += self.bytes(i);
                    }
                    // Into the buffer of an input that dies here: the bytes move to `i`.
                    None if self.compute_in_place(i, dying) => {}
                    None => {
                        self.compute(i)?;
                        live += self.bytes(i);
                    }
                }
            }
            if let (Some(t), Some(t0)) = (timer.as_deref_mut(), t0) {
                add_time(t, self.nodes[i].op.name(), t0.elapsed());
            }
            peak = peak.max(live);
            for k in 0..self.nodes[i].inputs.len() {
                let j = self.nodes[i].inputs[k].index();
                if last[j] == i as u32 && !pinned[j] && self.has[j] {
                    live -= self.freed_bytes(j);
                    self.release(j);
                }
            }
        }
        self.peak_bytes = peak;
        Ok(())
    }
}
