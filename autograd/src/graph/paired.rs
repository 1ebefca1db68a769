//! Sibling gradient nodes computed in one pass: an LSTM step's gate gradients with its
//! previous cell state's gradient, and a GRU step's projected input's gradient with
//! its projected state's.
//!
//! The reverse sweep records a fused step's gradient nodes one per input
//! ([`crate::ops::LstmCellGrad`], [`crate::ops::GruCellGrad`]), over the same inputs,
//! and each recomputes what they share: an LSTM's gradient reaching the new cell
//! state (`tanh c'` among it), a GRU's three gate blocks (the projected state's differ
//! only by the reset gate's scaling of one). A lean replay computes the pair in one
//! pass over the rows when both are needed: the shared part once, every input read
//! once. Both nodes keep their own values, the same as computed one at a time (each
//! written into its join's buffer when it is a placed part, see `placed`); the second
//! is made when the first is, and taken when the replay reaches it.

use smallvec::SmallVec;

use super::{Graph, LeanPlan};
use crate::error::Result;
use crate::float::Float;
use crate::node::{Node, Value};
use crate::ops::reduce::RowSums;
use crate::ops::{GruCellGrad, GruGradOf, LstmCellGrad, LstmGradOf, Op};

/// How far after a lead node its sibling is looked for (the reverse sweep records a
/// step's gradient nodes one after the other).
const REACH: usize = 4;

/// For each node whose sibling is computed with it, the sibling's index
/// ([`LeanPlan::NONE`] otherwise); empty when no node has one. Both must be needed, the
/// sibling not pinned (its value is made early, and a pinned node's is the caller's).
pub(super) fn pairs(nodes: &[Node], needed: &[bool], pinned: &[bool]) -> Vec<u32> {
    let mut pairs: Vec<u32> = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let sibling_op = match &node.op {
            Op::LstmCellGrad(LstmCellGrad { of: LstmGradOf::Gates, state_only }) => {
                Op::LstmCellGrad(LstmCellGrad { of: LstmGradOf::Cell, state_only: *state_only })
            }
            Op::GruCellGrad(GruCellGrad { of: GruGradOf::Input, state_only }) => {
                Op::GruCellGrad(GruCellGrad { of: GruGradOf::Hidden, state_only: *state_only })
            }
            _ => continue,
        };
        if !needed[i] {
            continue;
        }
        let sibling = (i + 1..nodes.len().min(i + 1 + REACH)).find(|&k| {
            let n = &nodes[k];
            n.op == sibling_op && n.inputs == node.inputs && needed[k] && !pinned[k]
        });
        if let Some(k) = sibling {
            if pairs.is_empty() {
                pairs = vec![LeanPlan::NONE; nodes.len()];
            }
            pairs[i] = k as u32;
        }
    }
    pairs
}

impl<T: Float> Graph<T> {
    /// Computes node `i` and its sibling `k` together, each into its rows of a join
    /// when it is a placed part there (`place_i`, `place_k`: the join and the index),
    /// and adding its rows into the sum it feeds, if any (`feeds`, as
    /// [`LeanPlan::feeds`]'s, see `summed`); `live` gains `k`'s bytes, and the replay
    /// takes `k`'s value when it reaches it.
    pub(super) fn compute_pair(
        &mut self,
        (i, place_i): (usize, Option<(usize, usize)>),
        (k, place_k): (usize, Option<(usize, usize)>),
        feeds: [Option<(usize, usize)>; 2],
        live: &mut usize,
    ) -> Result<()> {
        self.check_inputs(i)?;
        // The values of an earlier run: `i`'s bytes are the replay's to count (as for
        // any node it computes), `k`'s are given back here.
        if self.has[i] {
            self.release(i);
        }
        if self.has[k] {
            *live -= self.freed_bytes(k);
            self.release(k);
        }
        let slot_i = place_i.map(|(join, index)| self.part_slot(join, index, live));
        let slot_k = place_k.map(|(join, index)| self.part_slot(join, index, live));
        let sums = RowSums { lead: self.block_sums(i, feeds[0]), sibling: self.block_sums(k, feeds[1]) };
        let node = &self.nodes[i];
        let vals: SmallVec<[&Value<T>; 4]> = node.inputs.iter().map(|j| &self.values[j.index()]).collect();
        // SAFETY: as `part_slot`'s: the kernels write each slot whole.
        let (into_i, into_k) = unsafe { (slot_i.map(|s| &mut *s), slot_k.map(|s| &mut *s)) };
        let (made_i, made_k) = match &node.op {
            Op::LstmCellGrad(rule) => rule.with_cell(&vals, &node.shape, (into_i, into_k), &sums),
            Op::GruCellGrad(rule) => rule.with_hidden(&vals, &node.shape, (into_i, into_k), &sums),
            _ => unreachable!("pairs lead with an LSTM's or a GRU's gradient node"),
        };
        drop(vals);
        for (j, made, place) in [(i, made_i, place_i), (k, made_k, place_k)] {
            match (made, place) {
                (Some(v), _) => {
                    self.values.set(j, Value::Float(v));
                    self.has[j] = true;
                }
                (None, Some((join, index))) => self.set_part(j, join, index),
                (None, None) => unreachable!("a value is made for a node that is not placed"),
            }
        }
        *live += self.bytes(k);
        debug_assert!(self.premade.is_none(), "one node at a time is made ahead");
        self.premade = Some(k);
        Ok(())
    }
}
