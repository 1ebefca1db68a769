//! Joins laid out in place: a lean replay computes the parts of a large `stack` on
//! the first axis straight into the stack's buffer, so the stack copies nothing.
//!
//! An LSTM's reverse sweep stacks its steps' gate gradients for the input
//! projection's gradient (52 MB per step at W1-L's size): each part is written once
//! by its fused kernel and read where it lies, by the step's own product and, through
//! the stack, by the weights' and the bias's gradients. A part's value is a view of
//! its rows of the buffer (`Value::Shared`), as a slice of a stack would be.
//!
//! Only parts computed by a kernel that writes into a given slice
//! ([`crate::ops::Rule::forward_into`]) are laid out so, and only stacks at least as
//! large as the buffers a graph keeps for reuse ([`REUSED_BYTES`]): the buffer is then
//! one the graph kept from the step before, or fresh pages that the system clears
//! anyway. A part that its op does not write in place is computed as usual, and its
//! stack then copies every part, as without this.

use ndarray::{ArrayD, Axis, IxDyn};
use smallvec::SmallVec;

use super::{Graph, Holder};
use crate::error::Result;
use crate::float::Float;
use crate::node::{Node, Value};
use crate::ops::Op;
use crate::spares::{self, REUSED_BYTES};

/// The smallest join laid out in place, in bytes. A build with debug assertions (what
/// the tests run) lays out every join that qualifies otherwise, whatever its size, so
/// that every test of a lean replay runs this path.
const PLACED_BYTES: usize = if cfg!(debug_assertions) { 1 } else { REUSED_BYTES };

/// A node's part in an in-place join, in a lean replay's plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Place {
    /// Computed as usual.
    Not,
    /// Part `index` of the stack `join`, computed into the stack's buffer.
    Part { join: u32, index: u32 },
    /// A stack whose parts are computed into its buffer.
    Join,
}

/// Ops whose rule computes into a given slice ([`crate::ops::Rule::forward_into`]).
fn writes_into(op: &Op) -> bool {
    matches!(op, Op::LstmCellGrad(_))
}

/// Each node's [`Place`] for a lean replay that computes the `needed` nodes and keeps
/// the `pinned` ones, of element size `elem` bytes; empty when no join qualifies.
pub(super) fn places(nodes: &[Node], needed: &[bool], pinned: &[bool], elem: usize) -> Vec<Place> {
    let mut places: Vec<Place> = Vec::new();
    for (s, node) in nodes.iter().enumerate() {
        let Op::Stack(st) = &node.op else { continue };
        let bytes = node.shape.iter().product::<usize>() * elem;
        if st.axis != 0 || !needed[s] || pinned[s] || node.inputs.len() < 2 || bytes < PLACED_BYTES {
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
    /// Computes node `i`, part `index` of the stack `join`, into the stack's buffer (taken
    /// for the first part computed: `live` gains its bytes then). Returns `false`,
    /// having computed nothing, when the op does not write in place.
    pub(super) fn compute_part(&mut self, i: usize, join: usize, index: usize, live: &mut usize) -> Result<bool> {
        let node = &self.nodes[i];
        if let Some(j) = node.inputs.iter().find(|j| !self.has[j.index()]) {
            return Err(self.not_computed(node.op.name(), j.index()));
        }
        if self.has[i] {
            self.release(i); // the value of an earlier run
        }
        let node = &self.nodes[i];
        let buf = self.placing.entry(join).or_insert_with(|| {
            let shape = &self.nodes[join].shape;
            let n = shape.iter().product::<usize>();
            let mut v = spares::take::<T>(n).unwrap_or_else(|| vec![T::zero(); n]);
            if cfg!(debug_assertions) {
                v.fill(T::nan()); // an element no part writes shows in every test
            }
            *live += n * std::mem::size_of::<T>();
            ArrayD::from_shape_vec(IxDyn(shape), v).expect("a buffer of the shape's size").into_shared()
        });
        let len = node.shape.iter().product::<usize>();
        let base = buf.as_ptr() as *mut T;
        // SAFETY: the buffer holds the stack's `inputs.len() · len` elements, and part
        // `index`'s are written here only: the graph holds the buffer, and the views of
        // the parts computed before (which may be read meanwhile) cover other elements.
        // No view of these elements exists before the kernel has written them all.
        let out = unsafe { std::slice::from_raw_parts_mut(base.add(index * len), len) };
        let rule = node.op.rule::<T>();
        let vals: SmallVec<[&Value<T>; 4]> = node.inputs.iter().map(|j| &self.values[j.index()]).collect();
        if !rule.forward_into(&vals, &node.shape, out) {
            return Ok(false);
        }
        drop(vals);
        let bytes = buf.len() * std::mem::size_of::<T>();
        let view = buf.clone().index_axis_move(Axis(0), index);
        self.values[i] = Value::Shared(view);
        self.has[i] = true;
        self.shared.insert(i, Holder { bytes, view: true, buffer: base as usize });
        Ok(true)
    }

    /// The stack `i` as the buffer its parts were computed into, when every part was;
    /// `live` gives back the bytes counted when the buffer was taken. Returns `false`
    /// (the stack is then computed as usual, by copying) otherwise.
    pub(super) fn take_join(&mut self, i: usize, live: &mut usize) -> bool {
        let Some(buf) = self.placing.remove(&i) else { return false };
        let id = buf.as_ptr() as usize;
        let placed = self.nodes[i].inputs.iter().all(|j| {
            let j = j.index();
            self.has[j] && self.shared.get(&j).is_some_and(|h| h.view && h.buffer == id)
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
        self.values[i] = Value::Shared(buf);
        self.has[i] = true;
        self.shared.insert(i, Holder { bytes, view: false, buffer: id });
        true
    }
}
