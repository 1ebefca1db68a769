//! Joins laid out in place: a lean replay computes the parts of a `stack`, or of a
//! `concat` of equal parts, on the first axis straight into the join's buffer, so the
//! join copies nothing.
//!
//! A recurrent network's reverse sweep joins its steps' gradients twice: stacked for
//! the input projection's gradient (an LSTM's gate gradients, 52 MB per step at W1-L's
//! size), and concatenated for the hidden weight's gradient where the steps' gradients
//! are not already stacked (a GRU's hidden-product gradients). Each part is written
//! once by its fused kernel and read where it lies, by the step's own product and,
//! through the join, by the weights' and the bias's gradients. A part's value is a
//! view of its rows of the buffer (`Value::Shared`), as a slice of the join would be.
//!
//! Only parts computed by a kernel that writes into a given slice
//! ([`crate::ops::Rule::forward_into`]: the fused cells' gradients and the activation
//! gradient) are laid out so, and only joins of at least [`PLACED_BYTES`]. The buffer
//! is not cleared first (each part writes its own rows), so a join as small as W4's
//! (13 MB) gains too: it took W4's step from 38.3–39.3 to 36.3–37.1 ms in two
//! alternations. A part that its op does not write in place is computed as usual, and
//! its join then copies every part, as without this.

use ndarray::{ArrayD, Axis, IxDyn, Slice};
use smallvec::SmallVec;

use super::{Graph, Holder};
use crate::error::Result;
use crate::float::Float;
use crate::node::{Node, Value};
use crate::ops::{fresh, Op};

/// The smallest join laid out in place, in bytes (below it, the parts' own buffers
/// are as likely to be in the cache as the join's). A build with debug assertions
/// (what the tests run) lays out every join that qualifies otherwise, whatever its
/// size, so that every test of a lean replay in the full loop runs this path (a graph
/// under the small graph's limit takes the small loop unless the limit is set to 0;
/// `tests/tape.rs` runs its lean replays in both).
const PLACED_BYTES: usize = if cfg!(debug_assertions) { 1 } else { 1 << 20 };

/// A node's part in an in-place join, in a lean replay's plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Place {
    /// Computed as usual.
    Not,
    /// Part `index` of the join `join`, computed into the join's buffer.
    Part { join: u32, index: u32 },
    /// A join whose parts are computed into its buffer.
    Join,
}

/// Ops whose rule computes into a given slice ([`crate::ops::Rule::forward_into`]).
fn writes_into(op: &Op) -> bool {
    matches!(op, Op::LstmCellGrad(_) | Op::GruCellGrad(_) | Op::ActivationGrad(_))
}

/// Whether `node` joins its parts one after another along its first axis, each the
/// same number of elements: a stack on axis 0, or a concat on axis 0 of parts of one
/// shape (the steps' gradients a weight's gradient reads as one matrix).
fn joins_on_rows(node: &Node, nodes: &[Node]) -> bool {
    match &node.op {
        Op::Stack(st) => st.axis == 0,
        Op::Concat(c) => {
            let first = &nodes[node.inputs[0].index()].shape;
            c.axis == 0 && !first.is_empty() && node.inputs.iter().all(|j| nodes[j.index()].shape == *first)
        }
        _ => false,
    }
}

/// Each node's [`Place`] for a lean replay that computes the `needed` nodes and keeps
/// the `pinned` ones, of element size `elem` bytes; empty when no join qualifies.
pub(super) fn places(nodes: &[Node], needed: &[bool], pinned: &[bool], elem: usize) -> Vec<Place> {
    let mut places: Vec<Place> = Vec::new();
    for (s, node) in nodes.iter().enumerate() {
        if !matches!(node.op, Op::Stack(_) | Op::Concat(_)) || node.inputs.len() < 2 {
            continue;
        }
        let bytes = node.shape.iter().product::<usize>() * elem;
        if !needed[s] || pinned[s] || bytes < PLACED_BYTES || !joins_on_rows(node, nodes) {
            continue;
        }
        let mut parts: SmallVec<[usize; 128]> = node.inputs.iter().map(|j| j.index()).collect();
        let free = |j: usize, places: &[Place]| places.get(j).is_none_or(|p| *p == Place::Not);
        let fits = parts.iter().all(|&j| needed[j] && !pinned[j] && writes_into(&nodes[j].op) && free(j, &places));
        parts.sort_unstable();
        if !fits || parts.windows(2).any(|w| w[0] == w[1]) {
            continue;
        }
        if places.is_empty() {
            places = vec![Place::Not; nodes.len()];
        }
        for (k, j) in node.inputs.iter().enumerate() {
            places[j.index()] = Place::Part { join: s as u32, index: k as u32 };
        }
        places[s] = Place::Join;
    }
    places
}

impl<T: Float> Graph<T> {
    /// Computes node `i`, part `index` of the join `join`, into the join's buffer (taken
    /// for the first part computed: `live` gains its bytes then). Returns `false`,
    /// having computed nothing, when the op does not write in place (the buffer, if
    /// this took it, goes back when the join is reached: [`Graph::take_join`]).
    pub(super) fn compute_part(&mut self, i: usize, join: usize, index: usize, live: &mut usize) -> Result<bool> {
        self.check_inputs(i)?;
        if self.has[i] {
            self.release(i); // the value of an earlier run
        }
        let out = self.part_slot(join, index, live);
        let node = &self.nodes[i];
        let rule = node.op.rule::<T>();
        let vals: SmallVec<[&Value<T>; 4]> = node.inputs.iter().map(|j| &self.values[j.index()]).collect();
        // SAFETY: as `part_slot`'s.
        if !rule.forward_into(&vals, &node.shape, unsafe { &mut *out }) {
            return Ok(false);
        }
        drop(vals);
        self.set_part(i, join, index);
        Ok(true)
    }

    /// Part `index`'s elements of the join `join`'s buffer (taken for the first part
    /// computed: `live` gains its bytes then).
    ///
    /// The buffer holds the join's `inputs.len() · len` elements, and part `index`'s
    /// are written only through this slice: the graph holds the buffer, and the views of
    /// the parts computed before (which may be read meanwhile) cover other elements. The
    /// caller writes the slice whole, then makes the part's view ([`Graph::set_part`]);
    /// no view of these elements exists before.
    pub(super) fn part_slot(&mut self, join: usize, index: usize, live: &mut usize) -> *mut [T] {
        let buf = self.placing.entry(join).or_insert_with(|| {
            let shape = &self.nodes[join].shape;
            let n = shape.iter().product::<usize>();
            // SAFETY: the parts write their own elements before anything reads them (a
            // part's view covers only what its kernel wrote), and the join reads the
            // buffer only when every part was placed (`take_join`); under debug
            // assertions an element no part writes is NaN, and shows in every test.
            let v = unsafe { fresh::unwritten::<T>(n) };
            *live += n * std::mem::size_of::<T>();
            ArrayD::from_shape_vec(IxDyn(shape), v).expect("a buffer of the shape's size").into_shared()
        });
        let len = buf.len() / self.nodes[join].inputs.len();
        std::ptr::slice_from_raw_parts_mut((buf.as_ptr() as *mut T).wrapping_add(index * len), len)
    }

    /// Where part `index`'s elements of the join `join`'s buffer lie (address, bytes),
    /// once a part has taken the buffer ([`Graph::part_slot`]).
    pub(super) fn placed_slot(&self, join: usize, index: usize) -> Option<(usize, usize)> {
        let buf = self.placing.get(&join)?;
        let len = buf.len() / self.nodes[join].inputs.len();
        Some((buf.as_ptr().wrapping_add(index * len) as usize, len * std::mem::size_of::<T>()))
    }

    /// Node `i`'s value as the view of its rows of the join `join`'s buffer, once
    /// written.
    pub(super) fn set_part(&mut self, i: usize, join: usize, index: usize) {
        let buf = &self.placing[&join];
        let (bytes, base) = (buf.len() * std::mem::size_of::<T>(), buf.as_ptr() as usize);
        let view = if matches!(self.nodes[join].op, Op::Stack(_)) {
            buf.clone().index_axis_move(Axis(0), index)
        } else {
            let rows = buf.shape()[0] / self.nodes[join].inputs.len();
            buf.clone().slice_axis_move(Axis(0), Slice::from(index * rows..(index + 1) * rows))
        };
        self.values.set(i, Value::Shared(view));
        self.has[i] = true;
        self.shared.insert(i, Holder { bytes, view: true, buffer: base });
    }

    /// The join `i` as the buffer its parts were computed into, when every part was;
    /// `live` gives back the bytes counted when the buffer was taken. Returns `false`
    /// (the join is then computed as usual, by copying) otherwise.
    pub(super) fn take_join(&mut self, i: usize, live: &mut usize) -> bool {
        let Some(buf) = self.placing.remove(&i) else { return false };
        let id = buf.as_ptr() as usize;
        let placed = self.nodes[i].inputs.iter().all(|j| {
            let j = j.index();
            // (A holder is read only with the shared value it was made for: a slot given
            // another value since may keep a stale one.)
            self.has[j]
                && matches!(self.values[j], Value::Shared(_))
                && self.shared.get(&j).is_some_and(|h| h.view && h.buffer == id)
        });
        if !placed {
            // The parts that were placed keep the buffer until the last is released
            // (which gives its bytes back); if none was, it goes now.
            if buf.is_unique() {
                *live -= buf.len() * std::mem::size_of::<T>();
            }
            return false;
        }
        if self.has[i] {
            self.release(i);
        }
        let bytes = buf.len() * std::mem::size_of::<T>();
        *live -= bytes;
        self.values.set(i, Value::Shared(buf));
        self.has[i] = true;
        self.shared.insert(i, Holder { bytes, view: false, buffer: id });
        true
    }
}
