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
//! The forward pass joins the steps' states twice too: stacked as the layer's output
//! (for the loss), and concatenated, with the first step's given state, for the hidden
//! weight's gradient. A state is a view of its fused step's output (`h'`, the first
//! `H` columns of `[B, 6H]` or `[B, 4H]`), so it cannot be computed into a join; instead
//! the step also writes its `h'` rows into each join's slot (a tee,
//! [`crate::ops::fused::step_teed`]) while they are in the cache. Copied from the steps'
//! outputs at the join, each of these took 1.5–1.9 ms of W1-L's and W3-L's step on an
//! Emerald Rapids Xeon (the rows 2 KB apart in 51 MB of outputs); written by the
//! steps, with the slots fetched ahead by the product before each step (`upcoming`),
//! W1-L's step took 4.4 and 5.9 ms less in two alternations, W3-L's 0.8 ms more to
//! 1.8 ms less in three. An Elman network's states are its activations, computed
//! straight into the stack of the layer's output (its step 0.3–1.0 ms shorter in
//! three alternations of W2-L's processes); the hidden weight's concat copies them.
//!
//! Only parts computed by a kernel that writes into a given slice
//! ([`crate::ops::Rule::forward_into`]: the fused cells' gradients, the activation
//! gradient and the activations), and states written by their step, are laid out so,
//! and only joins of at least [`PLACED_BYTES`]. The buffer is not cleared first (each
//! part writes its own rows), so a join as small as W4's (13 MB) gains too: it took
//! W4's step from 38.3–39.3 to 36.3–37.1 ms in two alternations. A part neither
//! computed nor written into the buffer (a part its op does not write in place, or the
//! given state) is copied into its slot when the join is reached; a join with more
//! than one such part in [`COPIED_ONE_IN`] is made as usual, by copying every part,
//! and so is a join none of whose parts was computed or written into its buffer.

use ndarray::{ArrayD, Axis, IxDyn, Slice};
use smallvec::SmallVec;

use super::{Graph, Holder};
use crate::error::Result;
use crate::float::Float;
use crate::fxhash::FxMap;
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
    matches!(
        op,
        Op::LstmCellGrad(_) | Op::GruCellGrad(_) | Op::ActivationGrad(_) | Op::Tanh(_) | Op::Sigmoid(_) | Op::Relu(_)
    )
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

/// The fused step whose `h'` block node `j` is (a narrow of its output's first `H`
/// columns), which then also writes that block into a join's slot: `None` for another
/// node.
fn teed_step(nodes: &[Node], j: usize) -> Option<usize> {
    let node = &nodes[j];
    let Op::Narrow(n) = &node.op else { return None };
    let step = node.inputs.first()?.index();
    let width = nodes[step].shape.get(1).copied()?;
    let h = match nodes[step].op {
        Op::LstmCell(_) => width / 6,
        Op::GruCell(_) => width / 4,
        _ => return None,
    };
    (n.axis == 1 && n.start == 0 && n.len == h && h > 0).then_some(step)
}

/// A join's parts that neither compute into its buffer nor are written there by their
/// step may be copied into it when the join is reached, at most one part in this many
/// (a GRU's first step's given state, joined with the steps' states).
const COPIED_ONE_IN: usize = 8;

/// A join of steps' states is written by its steps only when it takes at least one
/// in this many of the states of the widest such join of any of its steps. A join's
/// buffer is taken at its first step's write and held until the join is read: for the
/// layer's output and a short sequence's hidden-weight gradient, which read every
/// step, that is a copy of the states made while they are in the cache instead of at
/// the join. A long sequence's reverse sweep joins the states segment by segment
/// (W5's ten `concat`s at T = 10000, each a tenth of the steps); written by the steps,
/// every segment's buffer was held from the forward pass on: W5's full BPTT held 38 MB
/// more at its peak (423 against 385 MB of values), 4.2 KB more per step.
const TEED_SHARE: usize = 2;

/// Each node's [`Place`] for a lean replay that computes the `needed` nodes and keeps
/// the `pinned` ones, of element size `elem` bytes (empty when no join qualifies), and
/// the fused steps that also write their `h'` block into joins: `(step, join, index)`,
/// sorted by step.
pub(super) fn places(nodes: &[Node], needed: &[bool], pinned: &[bool], elem: usize) -> (Vec<Place>, Vec<Tee>) {
    let mut places: Vec<Place> = Vec::new();
    let mut tees: Vec<Tee> = Vec::new();
    let candidate = |s: usize, node: &Node| {
        if !matches!(node.op, Op::Stack(_) | Op::Concat(_)) || node.inputs.len() < 2 {
            return false;
        }
        let bytes = node.shape.iter().product::<usize>() * elem;
        if !needed[s] || pinned[s] || bytes < PLACED_BYTES || !joins_on_rows(node, nodes) {
            return false;
        }
        let mut parts: SmallVec<[usize; 128]> = node.inputs.iter().map(|j| j.index()).collect();
        parts.sort_unstable();
        !parts.windows(2).any(|w| w[0] == w[1])
    };
    // The most states any join of a step's state takes from steps: a join taking fewer
    // than half as many gets none written by its steps (see `TEED_SHARE`).
    let states = |node: &Node| node.inputs.iter().filter(|j| teed_step(nodes, j.index()).is_some()).count();
    let mut widest: FxMap<usize, usize> = FxMap::default();
    for (_, node) in nodes.iter().enumerate().filter(|&(s, n)| candidate(s, n)) {
        let n = states(node);
        for step in node.inputs.iter().filter_map(|j| teed_step(nodes, j.index())) {
            let w = widest.entry(step).or_default();
            *w = (*w).max(n);
        }
    }
    for (s, node) in nodes.iter().enumerate() {
        if !candidate(s, node) {
            continue;
        }
        let n = states(node);
        let tee_of =
            |j: usize| teed_step(nodes, j).filter(|step| n * TEED_SHARE >= widest.get(step).copied().unwrap_or(0));
        let free = |j: usize, places: &[Place]| places.get(j).is_none_or(|p| *p == Place::Not);
        let written =
            |j: usize, places: &[Place]| needed[j] && !pinned[j] && writes_into(&nodes[j].op) && free(j, places);
        let (mut laid, mut copied) = (0, 0);
        for j in node.inputs.iter().map(|j| j.index()) {
            if written(j, &places) || tee_of(j).is_some() {
                laid += 1;
            } else {
                copied += 1;
            }
        }
        if laid == 0 || copied * COPIED_ONE_IN > node.inputs.len() {
            continue;
        }
        if places.is_empty() {
            places = vec![Place::Not; nodes.len()];
        }
        for (k, j) in node.inputs.iter().enumerate() {
            let j = j.index();
            if written(j, &places) {
                places[j] = Place::Part { join: s as u32, index: k as u32 };
            } else if let Some(step) = tee_of(j) {
                tees.push(Tee { step: step as u32, join: s as u32, index: k as u32 });
            }
        }
        places[s] = Place::Join;
    }
    tees.sort_unstable_by_key(|t| t.step);
    (places, tees)
}

/// A fused step that also writes its `h'` block into part `index` of the join `join`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Tee {
    pub(super) step: u32,
    pub(super) join: u32,
    pub(super) index: u32,
}

impl super::LeanPlan {
    /// The joins fused step `i` also writes its `h'` block into (none for another node).
    pub(super) fn tees_of(&self, i: usize) -> &[Tee] {
        if self.tees.is_empty() {
            return &[];
        }
        let from = self.tees.partition_point(|t| (t.step as usize) < i);
        let to = from + self.tees[from..].partition_point(|t| t.step as usize == i);
        &self.tees[from..to]
    }
}

impl<T: Float> Graph<T> {
    /// Computes node `i`, part `index` of the join `join`, into the join's buffer (taken
    /// for the first part computed: `live` gains its bytes then), adding its rows into
    /// the sum it feeds, if any (`feeds`, as [`super::LeanPlan::feeds`]'s, see
    /// `summed`). Returns `false`, having computed nothing, when the op does not write
    /// in place (the buffer, if this took it, goes back when the join is reached:
    /// [`Graph::take_join`]).
    pub(super) fn compute_part(
        &mut self,
        i: usize,
        (join, index): (usize, usize),
        feeds: Option<(usize, usize)>,
        live: &mut usize,
    ) -> Result<bool> {
        self.check_inputs(i)?;
        if self.has[i] {
            self.release(i); // the value of an earlier run
        }
        let out = self.part_slot(join, index, live);
        let sums = self.block_sums(i, feeds);
        let node = &self.nodes[i];
        let rule = node.op.rule::<T>();
        let vals: SmallVec<[&Value<T>; 4]> = node.inputs.iter().map(|j| &self.values[j.index()]).collect();
        // SAFETY: as `part_slot`'s.
        let out = unsafe { &mut *out };
        let written = match sums {
            Some(sums) => crate::ops::fused::write_summed(&node.op, &vals, &node.shape, out, sums),
            None => rule.forward_into(&vals, &node.shape, out),
        };
        if !written {
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

    /// The slots of the joins that fused step `i` also writes its `h'` block into
    /// (each join's buffer taken for the first part: `live` gains its bytes then),
    /// marked written: the step must be computed with them ([`crate::ops::fused::step_teed`]).
    pub(super) fn tee_slots(&mut self, tees: &[Tee], live: &mut usize) -> SmallVec<[crate::ops::fused::Tee<T>; 2]> {
        let mut out = SmallVec::new();
        for t in tees {
            let (join, index) = (t.join as usize, t.index as usize);
            out.push(crate::ops::fused::Tee::new(self.part_slot(join, index, live)));
            self.teed.insert((join, index));
        }
        out
    }

    /// The join `i` as the buffer its parts were computed or written into, the other
    /// parts copied into it now; `live` gives back the bytes counted when the buffer
    /// was taken. Returns `false` (the join is then computed as usual, by copying) when
    /// no part was computed or written into the buffer, or a part has no value.
    pub(super) fn take_join(&mut self, i: usize, live: &mut usize) -> bool {
        let Some(buf) = self.placing.remove(&i) else { return false };
        let id = buf.as_ptr() as usize;
        let parts = self.nodes[i].inputs.len();
        let mut teed: SmallVec<[bool; 128]> = SmallVec::from_elem(false, parts);
        for (k, t) in teed.iter_mut().enumerate() {
            *t = self.teed.remove(&(i, k));
        }
        let mut copy: SmallVec<[usize; 8]> = SmallVec::new();
        for (k, j) in self.nodes[i].inputs.iter().enumerate() {
            let j = j.index();
            // (A holder is read only with the shared value it was made for: a slot given
            // another value since may keep a stale one.)
            let laid = self.has[j]
                && matches!(self.values[j], Value::Shared(_))
                && self.shared.get(&j).is_some_and(|h| h.view && h.buffer == id);
            if !laid && !teed[k] {
                copy.push(k);
            }
        }
        let none_laid = copy.len() == parts; // copied by the threads as usual instead
        if none_laid || copy.iter().any(|&k| !self.computed(self.nodes[i].inputs[k].index())) {
            // The parts that were placed keep the buffer until the last is released
            // (which gives its bytes back); if none was, it goes now.
            if buf.is_unique() {
                *live -= buf.len() * std::mem::size_of::<T>();
            }
            return false;
        }
        let len = buf.len() / parts;
        for &k in &copy {
            let j = self.nodes[i].inputs[k].index();
            let from = self.values[j].float();
            // SAFETY: slot `k` of the buffer is written only here (no part's view covers
            // it: the part was neither computed nor written into it), and nothing reads
            // it before the join's value is set below.
            let slot = unsafe { std::slice::from_raw_parts_mut((buf.as_ptr() as *mut T).add(k * len), len) };
            match ndarray::ArrayViewMutD::from_shape(from.raw_dim(), slot) {
                Ok(mut to) => to.assign(&from),
                Err(_) => unreachable!("a join's parts are its slots' size"),
            }
        }
        if self.has[i] {
            self.release(i);
        }
        let bytes = buf.len() * std::mem::size_of::<T>();
        *live -= bytes;
        self.has[i] = true;
        if buf.is_unique() {
            // No part is a view of it (every part was written into it by its step, or
            // copied): the join owns its buffer, as a join made by copying would, and a
            // reader may compute in its place (the loss gradient's difference, in the
            // stack of a layer's outputs). Taking a unique buffer copies nothing.
            self.values.set(i, Value::Float(buf.into_owned()));
            return true;
        }
        self.values.set(i, Value::Shared(buf));
        self.shared.insert(i, Holder { bytes, view: false, buffer: id });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::LeanPlan;
    use crate::node::NodeId;
    use ndarray::Dimension;

    fn filled(shape: &[usize], seed: usize) -> ArrayD<f32> {
        ArrayD::from_shape_fn(shape, |d| ((d.as_array_view().sum() * 7 + seed) % 13) as f32 * 0.1 - 0.6)
    }

    /// `t` steps of a fused LSTM or GRU (`[B, H]` = `[5, 6]`) from given states, the
    /// steps' `h'` stacked for the loss; the steps, the stack, and what a training step
    /// keeps (the input and hidden weights' gradients, then the loss).
    fn steps(lstm: bool, t: usize) -> (Graph<f32>, Vec<NodeId>, NodeId, Vec<NodeId>) {
        let (b, h, gates) = (5, 6, if lstm { 4 } else { 3 });
        let mut g = Graph::<f32>::new();
        g.set_deferred(true);
        g.set_small_graph_limit(0);
        let x = g.input(filled(&[t, b, 4], 1));
        let w = g.input(filled(&[gates * h, 4], 2));
        let u = g.input(filled(&[gates * h, h], 3));
        let p = g.matmul_t(x, w, false, true).unwrap();
        let (mut state, mut c) = (g.input(filled(&[b, h], 4)), g.input(filled(&[b, h], 5)));
        let (mut cells, mut outs) = (Vec::new(), Vec::new());
        for k in 0..t {
            let xp = g.select(p, 0, k).unwrap();
            let hp = g.matmul_t(state, u, false, true).unwrap();
            let out = if lstm { g.lstm_cell(xp, hp, c).unwrap() } else { g.gru_cell(xp, hp, state).unwrap() };
            state = g.narrow(out, 1, 0, h).unwrap();
            if lstm {
                c = g.narrow(out, 1, h, h).unwrap();
            }
            cells.push(out);
            outs.push(state);
        }
        let all = g.stack(&outs, 0).unwrap();
        let a = g.constant(filled(&[t, b, h], 6));
        let weighted = g.mul(all, a).unwrap();
        let loss = g.sum_all(weighted).unwrap();
        let mut keep = g.grad(loss, &[w, u]).unwrap();
        keep.push(loss);
        (g, cells, all, keep)
    }

    /// The concat of the steps' `h'` (and of the first step's given state) that the
    /// hidden weight's gradient reads.
    fn states_concat(g: &Graph<f32>, cells: &[NodeId]) -> usize {
        (0..g.nodes.len())
            .find(|&i| {
                matches!(g.nodes[i].op, Op::Concat(_))
                    && g.nodes[i].inputs.iter().any(|j| {
                        let part = &g.nodes[j.index()];
                        matches!(part.op, Op::Narrow(_)) && part.inputs.first() == Some(&cells[0])
                    })
            })
            .expect("the hidden weight's gradient joins the states")
    }

    /// A join of a few of the steps' states (a long sequence's reverse sweep joins them
    /// segment by segment) is not written by the steps, whose states the layer's output
    /// joins all: its buffer would be held from the forward pass on. A join of half of
    /// them is.
    #[test]
    fn joins_of_a_few_of_the_steps_states_are_not_written_by_the_steps() {
        for (t, per, teed) in [(9, 3, false), (8, 4, true)] {
            let (b, h) = (5, 6);
            let mut g = Graph::<f32>::new();
            g.set_deferred(true);
            let x = g.input(filled(&[t, b, 3 * h], 1));
            let u = g.input(filled(&[3 * h, h], 3));
            let mut state = g.input(filled(&[b, h], 4));
            let (mut cells, mut outs) = (Vec::new(), Vec::new());
            for k in 0..t {
                let xp = g.select(x, 0, k).unwrap();
                let hp = g.matmul_t(state, u, false, true).unwrap();
                let out = g.gru_cell(xp, hp, state).unwrap();
                state = g.narrow(out, 1, 0, h).unwrap();
                cells.push(out);
                outs.push(state);
            }
            let all = g.stack(&outs, 0).unwrap();
            let segments: Vec<NodeId> = outs.chunks(per).map(|c| g.concat(c, 0).unwrap()).collect();
            let mut loss = g.sum_all(all).unwrap();
            for &c in &segments {
                let s = g.sum_all(c).unwrap();
                loss = g.add(loss, s).unwrap();
            }
            let plan = LeanPlan::new(&g.nodes, &[loss], 4);
            for (k, c) in cells.iter().enumerate() {
                let mut joins: Vec<u32> = plan.tees_of(c.index()).iter().map(|t| t.join).collect();
                joins.sort_unstable();
                let mut want = vec![all.index() as u32];
                if teed {
                    want.push(segments[k / per].index() as u32);
                }
                assert_eq!(joins, want, "{t} steps in segments of {per}, step {k}");
            }
            for c in &segments {
                assert_eq!(plan.places[c.index()] == Place::Join, teed, "{t} steps in segments of {per}");
            }
        }
    }

    #[test]
    fn the_steps_write_their_states_into_the_joins_that_read_them() {
        for lstm in [false, true] {
            let (g, cells, all, grads) = steps(lstm, 8);
            let plan = LeanPlan::new(&g.nodes, &grads, 4);
            let concat = states_concat(&g, &cells);
            assert_eq!(plan.places[all.index()], Place::Join);
            assert_eq!(plan.places[concat], Place::Join);
            for (k, c) in cells.iter().enumerate() {
                let mut joins: Vec<(u32, u32)> = plan.tees_of(c.index()).iter().map(|t| (t.join, t.index)).collect();
                joins.sort_unstable();
                // The stack holds step k's state at k; the concat, the state each step
                // read (in the reverse sweep's order for a GRU, the stack's for an LSTM),
                // the last step's excepted.
                let state = g.nodes[all.index()].inputs[k];
                let mut want = vec![(all.index() as u32, k as u32)];
                if let Some(at) = g.nodes[concat].inputs.iter().position(|&j| j == state) {
                    want.push((concat as u32, at as u32));
                }
                assert_eq!(want.len(), if k + 1 < cells.len() { 2 } else { 1 });
                want.sort_unstable();
                assert_eq!(joins, want, "lstm {lstm}, step {k}");
            }
            // A node that is no fused step writes no state.
            assert!(plan.tees_of(all.index()).is_empty());
        }
    }

    #[test]
    fn a_join_of_parts_mostly_copied_is_not_laid_out() {
        // With four steps, the given state is one part of four in the concat: more
        // than one in eight would be copied, so the concat is made as usual.
        let (g, cells, all, grads) = steps(false, 4);
        let plan = LeanPlan::new(&g.nodes, &grads, 4);
        assert_eq!(plan.places[all.index()], Place::Join);
        assert_eq!(plan.places[states_concat(&g, &cells)], Place::Not);
        assert!(plan.tees.iter().all(|t| t.join as usize == all.index()));
    }

    #[test]
    fn joins_written_by_their_steps_give_the_eager_values() {
        // Eight steps lay out both joins (the given state copied into the concat); four,
        // the stack alone; three LSTM steps, of which the last's state is read only by
        // the stack.
        for (lstm, t) in [(false, 8), (true, 8), (false, 4), (true, 3)] {
            let (mut g, _, _, grads) = steps(lstm, t);
            g.replay().unwrap();
            let eager: Vec<ArrayD<f32>> = grads.iter().map(|&k| g.value(k).unwrap().to_owned()).collect();
            for run in 0..2 {
                g.replay_keeping(&grads).unwrap();
                for (&k, e) in grads.iter().zip(&eager) {
                    assert_eq!(&g.value(k).unwrap().to_owned(), e, "lstm {lstm}, t {t}, run {run}");
                }
                // Every slot written was joined.
                assert!(g.teed.is_empty() && g.placing.is_empty(), "lstm {lstm}, t {t}, run {run}");
            }
        }
    }

    /// `t` Elman steps `h = tanh(z)` stacked for the loss, where `z` is
    /// `x_k W + h U` (a sum the activation computes through), `h U` (a product: the
    /// activation's own pass), or columns of a wider product (not row-major: the
    /// activation cannot write into the stack, which copies it); the activations, the
    /// stack, and what a training step keeps.
    fn elman(t: usize, z: &str) -> (Graph<f32>, Vec<NodeId>, NodeId, Vec<NodeId>) {
        let (b, h) = (5, 6);
        let mut g = Graph::<f32>::new();
        g.set_deferred(true);
        g.set_small_graph_limit(0);
        let x = g.input(filled(&[t, b, 4], 1));
        let w = g.input(filled(&[4, h], 2));
        let u = g.input(filled(&[h, 2 * h], 3));
        let v = g.input(filled(&[h, h], 7));
        let mut state = g.input(filled(&[b, h], 4));
        let mut acts = Vec::new();
        for k in 0..t {
            let hu = g.matmul(state, u).unwrap();
            let hu = g.narrow(hu, 1, 0, h).unwrap();
            let pre = match z {
                "sum" => {
                    let xk = g.select(x, 0, k).unwrap();
                    let xw = g.matmul(xk, w).unwrap();
                    g.add(xw, hu).unwrap()
                }
                "product" => g.matmul(state, v).unwrap(),
                _ => hu,
            };
            state = g.tanh(pre).unwrap();
            acts.push(state);
        }
        let all = g.stack(&acts, 0).unwrap();
        let y = g.constant(filled(&[t, b, h], 6));
        let loss = g.mse_loss(all, y).unwrap();
        let mut keep = g.grad(loss, &[w, u]).unwrap();
        keep.push(loss);
        (g, acts, all, keep)
    }

    #[test]
    fn activations_are_computed_into_the_stack_of_the_states() {
        for z in ["sum", "product", "strided"] {
            let (mut g, acts, all, keep) = elman(8, z);
            let plan = LeanPlan::new(&g.nodes, &keep, 4);
            assert_eq!(plan.places[all.index()], Place::Join, "{z}");
            for (k, a) in acts.iter().enumerate() {
                assert_eq!(plan.places[a.index()], Place::Part { join: all.index() as u32, index: k as u32 }, "{z}");
            }
            g.replay().unwrap();
            let eager: Vec<ArrayD<f32>> = keep.iter().map(|&k| g.value(k).unwrap().to_owned()).collect();
            for run in 0..2 {
                g.replay_keeping(&keep).unwrap();
                for (&k, e) in keep.iter().zip(&eager) {
                    assert_eq!(&g.value(k).unwrap().to_owned(), e, "{z}, run {run}");
                }
                assert!(g.placing.is_empty(), "{z}, run {run}");
            }
        }
    }
}
