//! Reverse mode: the sweep that records gradients as nodes of the same graph.
//!
//! The sweep is a reverse loop over the arena (insertion order is topological), so
//! a 10,000-step unrolled network cannot overflow the stack. It first marks the
//! nodes that depend on a requested node; only those are visited, so branches that
//! reach neither the loss nor the requested nodes cost nothing. Each op's rule
//! returns its input gradients; the engine alone sums a broadcast gradient back to
//! its input's shape and sums the contributions of fan-out, with one n-ary `add_n`
//! node per node that has several consumers (a parameter used at T steps gets one
//! sum of T terms, not T - 1 partial sums). Three contributions stay symbolic until
//! the node is reached: gradients of slices of one tensor, joined by one concat;
//! the weight gradients of linear maps `a bᵀ`, summed as one matrix product
//! over the stacked steps (`[G; …]ᵀ [A; …]`; where the sweep has already stacked
//! the steps' gradients, a share per stack, recorded with it; otherwise a share per
//! 32,768 rows of steps), so an unrolled network does not store one weight-sized
//! matrix per step, nor every step's pair until the weight is reached; and a
//! stack's gradient, selected for each stacked
//! input only when the sweep reaches that input, so a lean replay does not hold
//! every step's share from the start of the backward pass. Every gradient it
//! records is an ordinary node, so it can be differentiated again.

use std::collections::BTreeMap;

use ndarray::ArrayD;
use smallvec::SmallVec;

use crate::error::{Error, Result};
use crate::float::Float;
use crate::graph::Graph;
use crate::node::{DType, NodeId};
use crate::ops::{Back, Op};
use crate::scope::ScopeId;

/// What a node has received so far in a reverse sweep.
#[derive(Clone, Default)]
struct Pending {
    /// Contributions of its shape.
    full: SmallVec<[NodeId; 2]>,
    /// Gradients of its slices (narrowed or selected).
    slices: Vec<Slice>,
    /// As the `b` of products `c = a bᵀ`: (gradient of `c`, `a`); its gradient is `Σ gᵀ a`.
    pairs: Vec<(NodeId, NodeId)>,
    /// The rows of the `g`s in `pairs` (their product is recorded once they pass
    /// [`PAIR_ROWS`]).
    pair_rows: usize,
    /// As an input of a `stack`: the stack's gradient, selected at the node's index
    /// only when the sweep reaches the node (so a lean replay does not hold every
    /// step's share of a sequence's gradient from the start of the backward pass).
    parts: Vec<Part>,
}

/// Index `index` of `axis` of `grad`, recorded in `scope` (the stack's gradient twin).
#[derive(Clone, Copy)]
struct Part {
    grad: NodeId,
    axis: usize,
    index: usize,
    scope: ScopeId,
}

/// The gradient of one slice of a node: `start..` along `axis`, one index wide and
/// without the axis when `squeezed` (a `select`), else as wide as the gradient.
#[derive(Clone, Copy)]
struct Slice {
    axis: usize,
    start: usize,
    grad: NodeId,
    squeezed: bool,
}

/// The most rows of pending pairs a weight holds before their share of its gradient
/// is recorded as one product: every step's `g` and `a` are otherwise held (and
/// concatenated) until the sweep reaches the weight, which for a long sequence is
/// memory linear in its length twice over. Above the 16,384 rows of the layers'
/// projected segments, whose pairs are taken with their stack
/// (`Graph::flush_joined_pairs`) before they get here.
const PAIR_ROWS: usize = 1 << 15;

impl Pending {
    fn is_empty(&self) -> bool {
        self.full.is_empty() && self.slices.is_empty() && self.pairs.is_empty() && self.parts.is_empty()
    }
}

impl<T: Float> Graph<T> {
    /// The gradients of the scalar `output` with respect to each node of `wrt`
    /// (parameters, inputs, initial states, intermediates), recorded as new nodes.
    /// A node the output does not depend on gets a node of zeros, as in JAX.
    ///
    /// ```
    /// use ndarray::arr1;
    /// use unrolled_autograd::Graph;
    /// # fn main() -> unrolled_autograd::Result<()> {
    /// let mut g = Graph::<f64>::new();
    /// let x = g.input(arr1(&[3.0]).into_dyn());
    /// let y = g.pow_scalar(x, 3.0)?;          // x³
    /// let y = g.sum_all(y)?;
    /// let dx = g.grad(y, &[x])?[0];           // 3x² = 27
    /// let s = g.sum_all(dx)?;
    /// let ddx = g.grad(s, &[x])?[0];          // 6x = 18: second order
    /// assert_eq!(g.value(dx)?[0], 27.0);
    /// assert_eq!(g.value(ddx)?[0], 18.0);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::NotScalar`] if `output` has more than one element (use
    /// [`Graph::grad_with_seed`]); [`Error::ForeignNode`]; [`Error::DTypeMismatch`]
    /// for an int64 node.
    pub fn grad(&mut self, output: NodeId, wrt: &[NodeId]) -> Result<Vec<NodeId>> {
        self.check(output, "grad")?;
        let shape = self.shape_of(output).to_vec();
        if shape.iter().product::<usize>() != 1 {
            let scope = self.path_of(self.nodes[output.index()].scope);
            return Err(Error::NotScalar { op: "grad", scope, node: output.index(), shape });
        }
        let twin = self.grad_scope(self.nodes[output.index()].scope);
        let seed = self.enter_known(twin).ones(&shape);
        self.grad_with_seed(output, seed, wrt)
    }

    /// As [`Graph::grad`], from any `output` with an explicit seed gradient of the
    /// same shape (a vector-Jacobian product).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the seed's shape differs from the output's; as [`Graph::grad`].
    pub fn grad_with_seed(&mut self, output: NodeId, seed: NodeId, wrt: &[NodeId]) -> Result<Vec<NodeId>> {
        self.vjp(output, seed, wrt, 0)
    }

    /// The partial derivatives of a formula recorded at `barrier..` (a fused gradient
    /// node's primitive expansion) with respect to `wrt`, holding every node before
    /// `barrier` fixed: the sweep stops at them rather than differentiating how they
    /// were computed (the outer sweep does that, once).
    pub(crate) fn partial_vjp(
        &mut self,
        output: NodeId,
        seed: NodeId,
        wrt: &[NodeId],
        barrier: usize,
    ) -> Result<Vec<NodeId>> {
        self.vjp(output, seed, wrt, barrier)
    }

    fn vjp(&mut self, output: NodeId, seed: NodeId, wrt: &[NodeId], barrier: usize) -> Result<Vec<NodeId>> {
        self.check(output, "grad")?;
        self.check(seed, "grad")?;
        for &w in wrt {
            self.check(w, "grad")?;
        }
        for (k, &id) in [output, seed].iter().chain(wrt).enumerate() {
            let got = self.nodes[id.index()].dtype;
            if got == DType::I64 {
                return Err(Error::DTypeMismatch {
                    op: "grad",
                    scope: self.scope_path(),
                    input: k,
                    expected: T::DTYPE,
                    got,
                });
            }
        }
        if self.shape_of(seed) != self.shape_of(output) {
            return Err(Error::ShapeMismatch {
                op: "grad",
                scope: self.scope_path(),
                lhs: self.shape_of(output).to_vec(),
                rhs: self.shape_of(seed).to_vec(),
            });
        }
        let out = output.index();
        let Some(lo) = wrt.iter().map(|w| w.index()).filter(|&w| w <= out).min() else {
            return wrt.iter().map(|&w| Ok(self.zeros_like_in_root(w))).collect();
        };

        // Which nodes in lo..=out depend on a requested node (detach cuts the dependence).
        let mut dep = vec![false; out - lo + 1];
        for w in wrt.iter().filter(|w| w.index() <= out) {
            dep[w.index() - lo] = true;
        }
        for i in lo..=out {
            if dep[i - lo] {
                continue;
            }
            let node = &self.nodes[i];
            dep[i - lo] = i >= barrier
                && !matches!(node.op, crate::ops::Op::Detach(_))
                && node.inputs.iter().any(|j| j.index() >= lo && dep[j.index() - lo]);
        }

        // Each node's gradient contributions, summed by one `add_n` node when the sweep
        // reaches the node (all its consumers come later, so all have contributed).
        let mut pending: Vec<Pending> = vec![Pending::default(); out - lo + 1];
        if dep[out - lo] {
            pending[out - lo].full.push(seed);
        }
        let saved = self.current_scope();
        let result = self.sweep(lo.max(barrier), lo, out, &dep, &mut pending);
        self.set_current_scope(saved);
        result?;
        let mut result = Vec::with_capacity(wrt.len());
        for &w in wrt {
            let in_range = w.index() >= lo && w.index() <= out;
            let g = if in_range && !pending[w.index() - lo].is_empty() {
                let twin = self.grad_scope(self.nodes[w.index()].scope);
                self.set_current_scope(twin);
                let total = self.total(w, &mut pending[w.index() - lo]);
                self.set_current_scope(saved);
                Some(total?)
            } else {
                None
            };
            result.push(match g {
                Some(g) => g,
                None => self.zeros_like_in_root(w),
            });
        }
        Ok(result)
    }

    /// The reverse loop over `lo..=out`.
    fn sweep(&mut self, from: usize, lo: usize, out: usize, dep: &[bool], pending: &mut [Pending]) -> Result<()> {
        // The weights that have received pairs (`Pending::pairs`).
        let mut paired: Vec<usize> = Vec::new();
        for i in (from..=out).rev() {
            if pending[i - lo].is_empty() || self.nodes[i].op.is_leaf() {
                continue;
            }
            let node = &self.nodes[i];
            let inputs: SmallVec<[NodeId; 3]> = node.inputs.clone();
            let needs: SmallVec<[bool; 3]> = inputs.iter().map(|j| j.index() >= lo && dep[j.index() - lo]).collect();
            if !needs.iter().any(|&n| n) {
                continue;
            }
            let op = node.op.clone();
            let twin = self.grad_scope(node.scope);
            self.set_current_scope(twin);
            // A fused step whose taps received no gradient: its rule reads the state
            // blocks' gradients as they are, without a joined gradient of the whole output.
            if let Some(states) = self.state_slices(&op, &inputs, &pending[i - lo]) {
                let states = self.zeros_for_missing(&states, inputs[2])?;
                let back = Back { out: self.mk_id(i), inputs: &inputs, grad: states[0], needs: &needs };
                let input_grads = op.rule::<T>().backward_from_states(self, &back, &states)?;
                self.accumulate(input_grads, &inputs, &needs, lo, pending)?;
                continue;
            }
            let gi = self.total(self.mk_id(i), &mut pending[i - lo])?;
            // A slice's gradient stays a slice (a selected index's lacks the axis): the
            // slices of one tensor are joined by one concat when it is reached, not padded
            // to its size and summed.
            let slice = match &op {
                crate::ops::Op::Narrow(nw) => Some((nw.axis, nw.start, false)),
                crate::ops::Op::Select(sel) => Some((sel.axis, sel.index, true)),
                _ => None,
            };
            if let Some((axis, start, squeezed)) = slice {
                pending[inputs[0].index() - lo].slices.push(Slice { axis, start, grad: gi, squeezed });
                continue;
            }
            if let crate::ops::Op::Stack(st) = &op {
                for (k, x) in inputs.iter().enumerate().filter(|&(k, _)| needs[k]) {
                    let part = Part { grad: gi, axis: st.axis, index: k, scope: twin };
                    pending[x.index() - lo].parts.push(part);
                }
                continue;
            }
            let mut needs = needs;
            if let crate::ops::Op::MatMul(mm) = &op {
                let two_d = self.shape_of(inputs[0]).len() == 2 && self.shape_of(inputs[1]).len() == 2;
                if !mm.trans_a && mm.trans_b && needs[1] && two_d {
                    // c = a bᵀ (a linear map): d/db = gᵀ a. Kept as the pair (g, a); all the
                    // pairs of one weight become one product over the stacked steps.
                    let w = inputs[1].index();
                    if pending[w - lo].pairs.is_empty() && !paired.contains(&w) {
                        paired.push(w);
                    }
                    pending[w - lo].pairs.push((gi, inputs[0]));
                    pending[w - lo].pair_rows += self.shape_of(gi)[0];
                    if pending[w - lo].pair_rows > PAIR_ROWS {
                        self.flush_pairs(w, &mut pending[w - lo])?;
                    }
                    needs[1] = false;
                    if !needs[0] {
                        continue;
                    }
                }
            }
            let back = Back { out: self.mk_id(i), inputs: &inputs, grad: gi, needs: &needs };
            let recorded = self.nodes.len();
            let input_grads = op.rule::<T>().backward(self, &back)?;
            self.accumulate(input_grads, &inputs, &needs, lo, pending)?;
            if !paired.is_empty() {
                self.flush_joined_pairs(recorded, lo, pending, &paired)?;
            }
        }
        Ok(())
    }

    /// The state blocks' gradients with zeros (of `like`'s shape, broadcast from one
    /// scalar) for the blocks that received none.
    fn zeros_for_missing(&mut self, states: &[Option<NodeId>], like: NodeId) -> Result<SmallVec<[NodeId; 2]>> {
        let shape = self.shape_of(like).to_vec();
        let mut zero = None;
        let mut out = SmallVec::new();
        for s in states {
            out.push(match s {
                Some(s) => *s,
                None => self.zero_gap(&shape, 0, shape[0], &mut zero)?,
            });
        }
        Ok(out)
    }

    /// Adds a rule's input gradients to its inputs' pending contributions, each summed
    /// back to its input's shape.
    fn accumulate(
        &mut self,
        input_grads: crate::ops::Grads,
        inputs: &[NodeId],
        needs: &[bool],
        lo: usize,
        pending: &mut [Pending],
    ) -> Result<()> {
        for (k, ig) in input_grads.into_iter().enumerate() {
            if let (Some(ig), true) = (ig, needs.get(k).copied().unwrap_or(false)) {
                let j = inputs[k];
                let shape = self.shape_of(j).to_vec();
                let c = self.sum_to(ig, &shape)?;
                pending[j.index() - lo].full.push(c);
            }
        }
        Ok(())
    }

    /// The gradients of a fused step's state blocks (`[B, H]` slices at the start of its
    /// output, `h'` then `c'`), when they are all it received: nothing of its own shape,
    /// one gradient per block at most. `None` otherwise, or for another op.
    fn state_slices(&self, op: &Op, inputs: &[NodeId], p: &Pending) -> Option<SmallVec<[Option<NodeId>; 2]>> {
        let blocks = op.rule::<T>().state_blocks();
        if blocks == 0 || !p.full.is_empty() || !p.pairs.is_empty() || !p.parts.is_empty() || p.slices.is_empty() {
            return None;
        }
        let h = *self.shape_of(inputs[2]).get(1).filter(|&&h| h > 0)?;
        let mut states: SmallVec<[Option<NodeId>; 2]> = SmallVec::from_elem(None, blocks);
        for sl in &p.slices {
            let k = sl.start / h;
            let fits = sl.axis == 1 && !sl.squeezed && sl.start.is_multiple_of(h) && k < blocks;
            if !fits || self.shape_of(sl.grad).get(1) != Some(&h) || states[k].is_some() {
                return None;
            }
            states[k] = Some(sl.grad);
        }
        Some(states)
    }

    /// The sum of a node's gradient contributions, as one node (and kept as the only one):
    /// slices joined by one concat (zeros in the gaps), then everything summed by one `add_n`.
    fn total(&mut self, node: NodeId, p: &mut Pending) -> Result<NodeId> {
        if !p.parts.is_empty() {
            let here = self.current_scope();
            for part in std::mem::take(&mut p.parts) {
                self.set_current_scope(part.scope);
                let g = self.select(part.grad, part.axis as isize, part.index);
                self.set_current_scope(here);
                p.full.push(g?);
            }
        }
        if !p.slices.is_empty() {
            let joined = self.join_slices(node, std::mem::take(&mut p.slices))?;
            p.full.extend(joined);
        }
        if !p.pairs.is_empty() {
            self.flush_pairs(node.index(), p)?;
        }
        let t = if p.full.len() == 1 { p.full[0] } else { self.add_n(&p.full)? };
        p.full.clear();
        p.full.push(t);
        Ok(t)
    }

    /// Records weight `w`'s share of its pending pairs now (one product, in the
    /// weight's gradient scope), releasing them.
    fn flush_pairs(&mut self, w: usize, p: &mut Pending) -> Result<()> {
        let pairs = std::mem::take(&mut p.pairs);
        p.pair_rows = 0;
        let twin = self.grad_scope(self.nodes[w].scope);
        let mut g = self.enter_known(twin);
        let (gs, xs) = g.pair_operands(&pairs)?;
        p.full.push(g.matmul_t(gs, xs, true, false)?);
        Ok(())
    }

    /// The operands `(G, A)` of the product `Gᵀ A` that sums a weight's remaining
    /// `pairs` (`Σ gᵀ a`): every `g` and every `a` concatenated, for one product.
    fn pair_operands(&mut self, pairs: &[(NodeId, NodeId)]) -> Result<(NodeId, NodeId)> {
        if let [(g, a)] = pairs {
            return Ok((*g, *a));
        }
        let gs: Vec<NodeId> = pairs.iter().map(|p| p.0).collect();
        let xs: Vec<NodeId> = pairs.iter().map(|p| p.1).collect();
        Ok((self.concat(&gs, 0)?, self.concat(&xs, 0)?))
    }

    /// The steps' gradients may already be joined: an LSTM's gate gradients are stacked
    /// as its input projection's gradient (one stack per projected segment of steps),
    /// and that product reads the stack's 2-D reshape. For every such reshape recorded
    /// since node `from`, a weight whose pending pairs hold every row of the stack gets
    /// its share now, as one product reading the reshape (`Rᵀ [a; …]`, the `a`s in the
    /// stack's row order) instead of copying the rows again at the end; a lean replay
    /// then releases the stack with the segment instead of holding every segment's
    /// until the weight is reached.
    fn flush_joined_pairs(&mut self, from: usize, lo: usize, pending: &mut [Pending], paired: &[usize]) -> Result<()> {
        for r in from..self.nodes.len() {
            let node = &self.nodes[r];
            let (Op::Reshape(_), [stack]) = (&node.op, &node.inputs[..]) else { continue };
            let st = &self.nodes[stack.index()];
            let on_steps = matches!(&st.op, Op::Stack(x) if x.axis == 0) && st.shape.len() == 3;
            if !on_steps || node.shape[..] != [st.shape[0] * st.shape[1], st.shape[2]] {
                continue;
            }
            let rows: Vec<NodeId> = st.inputs.to_vec();
            for &w in paired {
                let pairs = &pending[w - lo].pairs;
                if pairs.len() < rows.len() {
                    continue;
                }
                let mut by_grad: Vec<(NodeId, usize)> = pairs.iter().enumerate().map(|(k, p)| (p.0, k)).collect();
                by_grad.sort_unstable();
                let mut taken = vec![false; pairs.len()];
                let mut xs = Vec::with_capacity(rows.len());
                for row in &rows {
                    let at = by_grad.partition_point(|e| e.0 < *row);
                    let Some(k) = (at..by_grad.len())
                        .take_while(|&e| by_grad[e].0 == *row)
                        .map(|e| by_grad[e].1)
                        .find(|&k| !taken[k])
                    else {
                        break;
                    };
                    taken[k] = true;
                    xs.push(pairs[k].1);
                }
                if xs.len() != rows.len() {
                    continue;
                }
                let rest: Vec<(NodeId, NodeId)> =
                    pairs.iter().zip(&taken).filter(|(_, &t)| !t).map(|(p, _)| *p).collect();
                pending[w - lo].pair_rows = rest.iter().map(|p| self.shape_of(p.0)[0]).sum();
                pending[w - lo].pairs = rest;
                let here = self.current_scope();
                let twin = self.grad_scope(self.nodes[w].scope);
                self.set_current_scope(twin);
                let share = match xs.len() {
                    1 => Ok(xs[0]),
                    _ => self.concat(&xs, 0),
                }
                .and_then(|x| self.matmul_t(self.mk_id(r), x, true, false));
                self.set_current_scope(here);
                pending[w - lo].full.push(share?);
            }
        }
        Ok(())
    }

    /// Gradients of slices of `node`: one concat along their axis when they share it and
    /// do not overlap, else each padded to `node`'s shape.
    fn join_slices(&mut self, node: NodeId, mut slices: Vec<Slice>) -> Result<SmallVec<[NodeId; 2]>> {
        let shape = self.shape_of(node).to_vec();
        slices.sort_by_key(|s| (s.axis, s.start));
        let axis = slices[0].axis;
        let width = |g: &Self, s: &Slice| if s.squeezed { 1 } else { g.shape_of(s.grad)[s.axis] };
        let mut end = 0;
        let mut disjoint = true;
        for sl in &slices {
            disjoint &= sl.axis == axis && sl.start >= end;
            end = sl.start + width(self, sl);
        }
        // One index each, covering axis 0 (the steps of an unrolled sequence), each either
        // selected or reshaped from `[rest]` to `[1, rest]`: the gradients without the
        // axis, stacked (one node, one copy, any rank).
        if disjoint && axis == 0 && end == shape[0] && slices.len() == shape[0] {
            let inner: Option<Vec<NodeId>> = slices
                .iter()
                .map(|sl| {
                    if sl.squeezed {
                        return Some(sl.grad);
                    }
                    let n = &self.nodes[sl.grad.index()];
                    match (&n.op, &n.inputs[..]) {
                        (Op::Reshape(_), [x]) if self.shape_of(*x) == &n.shape[1..] => Some(*x),
                        _ => None,
                    }
                })
                .collect();
            if let Some(inner) = inner {
                return Ok(SmallVec::from_elem(self.stack(&inner, 0)?, 1));
            }
        }
        // Otherwise a selected slice gets its axis back first.
        let mut parts: Vec<(usize, usize, NodeId)> = Vec::with_capacity(slices.len());
        for sl in slices {
            let g = if sl.squeezed { self.unsqueeze(sl.grad, sl.axis as isize)? } else { sl.grad };
            parts.push((sl.axis, sl.start, g));
        }
        if !disjoint {
            return parts
                .into_iter()
                .map(|(a, s, g)| {
                    let len = self.shape_of(g)[a];
                    self.pad(g, a as isize, s, shape[a] - s - len)
                })
                .collect();
        }
        // Gaps are zeros broadcast from one scalar: computed nodes, not constants, so a
        // lean replay releases them after the concat instead of holding them for good.
        let mut pieces = Vec::with_capacity(2 * parts.len() + 1);
        let mut zero = None;
        let mut at = 0;
        for (_, s, g) in parts {
            if s > at {
                pieces.push(self.zero_gap(&shape, axis, s - at, &mut zero)?);
            }
            at = s + self.shape_of(g)[axis];
            pieces.push(g);
        }
        if at < shape[axis] {
            pieces.push(self.zero_gap(&shape, axis, shape[axis] - at, &mut zero)?);
        }
        Ok(SmallVec::from_elem(self.concat(&pieces, axis as isize)?, 1))
    }

    /// Zeros of `shape` but `width` along `axis`, broadcast from one scalar zero.
    fn zero_gap(&mut self, shape: &[usize], axis: usize, width: usize, zero: &mut Option<NodeId>) -> Result<NodeId> {
        let mut gap = shape.to_vec();
        gap[axis] = width;
        let z = *zero.get_or_insert_with(|| self.scalar(0.0));
        self.broadcast_to(z, &gap)
    }

    fn zeros_like_in_root(&mut self, w: NodeId) -> NodeId {
        let shape = self.shape_of(w).to_vec();
        let twin = self.grad_scope(crate::scope::ScopeId::ROOT);
        self.enter_known(twin).zeros(&shape)
    }

    /// The gradient of `loss` for every parameter leaf of the graph, keyed by name.
    ///
    /// # Errors
    /// As [`Graph::grad`].
    pub fn param_grads(&mut self, loss: NodeId) -> Result<BTreeMap<String, NodeId>> {
        let (names, ids): (Vec<String>, Vec<NodeId>) = self.params().iter().map(|(k, v)| (k.clone(), *v)).unzip();
        let gs = self.grad(loss, &ids)?;
        Ok(names.into_iter().zip(gs).collect())
    }

    /// The values of [`Graph::param_grads`].
    ///
    /// # Errors
    /// As [`Graph::grad`].
    pub fn param_grad_values(&mut self, loss: NodeId) -> Result<BTreeMap<String, ArrayD<T>>> {
        let gs = self.param_grads(loss)?;
        gs.into_iter().map(|(k, id)| Ok((k, self.value(id)?.to_owned()))).collect()
    }
}
