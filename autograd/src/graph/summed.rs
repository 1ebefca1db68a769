//! Bias gradients summed by the fused gradient kernels as they write their rows.
//!
//! A recurrent layer's bias gradients are column sums of its steps' gate gradients:
//! the input projection's bias over the stack of every step's (`[T, B, G·H]`, 39 MB
//! at W3-L's size, read once more from memory after the sweep), and a GRU's hidden
//! bias over each step's own (`[B, 3H]`, half of it in the other core's cache). A
//! sum over rows adds blocks of [`SUM_BLOCK_ROWS`] rows, each in row order, and then
//! the blocks' sums in block order (`ops::reduce`); a fused gradient kernel whose
//! threads each write whole blocks of rows sums its blocks once its share's rows are
//! written, while they are in the cache (a few columns at a time over a block's rows,
//! the sums in registers: adding each row as it was written kept the sums out of the
//! L1 cache and cost twice as much), and the sum only adds the blocks' sums. The
//! values are the sum's own, bit for bit. Alternating per replay on an Emerald Rapids
//! Xeon, W3-L's step took 0.9 ms less on average and W1-L's 2.2 ms less.
//!
//! A sum is computed so when it sums over the leading axes (a bias gradient) and its
//! input is a fused gradient node's output ([`crate::ops::GruCellGrad`] of either
//! projection, [`crate::ops::LstmCellGrad`]'s gate gradients) or a join laid out in
//! place (`placed`) whose parts are all such outputs of whole blocks of rows, each
//! computed by a kernel that can add its rows (with its sibling, `paired`, or into
//! its join's rows). When a part was computed otherwise, or the threads could not
//! share its rows in whole blocks without leaving one idle, the sum is made as usual
//! from its input.

use super::placed::Place;
use super::{Graph, LeanPlan};
use crate::float::Float;
use crate::node::Node;
use crate::ops::fused::sums_its_rows;
use crate::ops::reduce::{sum_blocks, BlockSums, SUM_BLOCK_ROWS};
use crate::ops::{Op, SumTo};

/// A node's part in a sum of rows added by the kernels that write them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Summed {
    /// Computed as usual.
    Not,
    /// A fused gradient node whose rows, from row `first` of the sum `sum`'s input
    /// on, its kernel adds into the sum's block sums.
    Feeds { sum: u32, first: u32 },
    /// A sum computed from the block sums its input's nodes added.
    Sum,
}

/// The block sums of a [`Summed::Sum`] during a lean replay.
#[derive(Clone, Debug, Default)]
pub(super) struct Summing<T> {
    /// Each block's sums, a row of the sum's length per block (kept from one replay to
    /// the next).
    sums: Vec<T>,
    /// The rows added in this replay.
    rows: usize,
}

/// Each node's [`Summed`] in a lean replay (empty when no sum is computed so). `pairs`
/// and `places` are the plan's: a node feeds a sum only when it is computed by a kernel
/// that adds its rows, with its sibling or into its join's rows.
pub(super) fn sums(nodes: &[Node], needed: &[bool], pairs: &[u32], places: &[Place]) -> Vec<Summed> {
    let mut sibling = vec![false; if pairs.is_empty() { 0 } else { nodes.len() }];
    for &k in pairs.iter().filter(|&&k| k != LeanPlan::NONE) {
        sibling[k as usize] = true;
    }
    let paired = |i: usize| pairs.get(i).is_some_and(|&k| k != LeanPlan::NONE) || sibling.get(i) == Some(&true);
    let placed = |i: usize| matches!(places.get(i), Some(Place::Part { .. }));
    let mut out: Vec<Summed> = Vec::new();
    for (s, node) in nodes.iter().enumerate() {
        let Op::SumTo(SumTo { shape }) = &node.op else { continue };
        let x = node.inputs[0].index();
        let xs = &nodes[x].shape;
        if !needed[s] || shape.len() != 1 || xs.len() < 2 || xs.last() != shape.first() || shape[0] == 0 {
            continue;
        }
        // The nodes writing the input's rows, each with its first row.
        let parts: Vec<(usize, usize)> = if sums_its_rows(&nodes[x].op) {
            vec![(x, 0)]
        } else if matches!(places.get(x), Some(Place::Join)) {
            let of = nodes[x].inputs.len();
            let rows = xs[..xs.len() - 1].iter().product::<usize>() / of.max(1);
            let whole = of == 1 || rows.is_multiple_of(SUM_BLOCK_ROWS);
            let part = |(q, p): (usize, &crate::node::NodeId)| {
                let at = matches!(places[p.index()], Place::Part { join, index } if join as usize == x && index as usize == q);
                (at && sums_its_rows(&nodes[p.index()].op)).then_some((p.index(), q * rows))
            };
            match nodes[x].inputs.iter().enumerate().map(part).collect::<Option<Vec<_>>>() {
                Some(parts) if whole => parts,
                _ => continue,
            }
        } else {
            continue;
        };
        let free = |p: usize| out.get(p).is_none_or(|f| *f == Summed::Not);
        if !parts.iter().all(|&(p, _)| needed[p] && (paired(p) || placed(p)) && free(p)) {
            continue;
        }
        if out.is_empty() {
            out = vec![Summed::Not; nodes.len()];
        }
        out[s] = Summed::Sum;
        for (p, first) in parts {
            out[p] = Summed::Feeds { sum: s as u32, first: first as u32 };
        }
    }
    out
}

impl LeanPlan {
    /// The sum node `i` adds its rows into, and its first row there.
    pub(super) fn feeds(&self, i: usize) -> Option<(usize, usize)> {
        match self.sums.get(i) {
            Some(&Summed::Feeds { sum, first }) => Some((sum as usize, first as usize)),
            _ => None,
        }
    }

    /// Whether node `i` is a sum its input's nodes add their rows into.
    pub(super) fn is_summed(&self, i: usize) -> bool {
        matches!(self.sums.get(i), Some(Summed::Sum))
    }
}

impl<T: Float> Graph<T> {
    /// Where node `i`'s kernel adds its rows (`feeds`: the sum and the first row, see
    /// [`LeanPlan::feeds`]), counted as added.
    pub(super) fn block_sums(&mut self, i: usize, feeds: Option<(usize, usize)>) -> Option<BlockSums<T>> {
        let (sum, first) = feeds?;
        let rows = self.nodes[i].shape[0];
        let xs = &self.nodes[self.nodes[sum].inputs[0].index()].shape;
        let len = self.nodes[sum].shape[0];
        let blocks = (xs.iter().product::<usize>() / len).div_ceil(SUM_BLOCK_ROWS);
        let s = self.summing.entry(sum).or_default();
        if s.sums.len() != blocks * len {
            s.sums = vec![T::zero(); blocks * len];
        }
        s.rows += rows;
        Some(BlockSums(s.sums[first / SUM_BLOCK_ROWS * len..].as_mut_ptr()))
    }

    /// Whether the threads share the rows of a kernel writing node `i` (the lead of a
    /// pair, or a node alone) in whole blocks as they would share them otherwise: when
    /// not, its rows are not added (the sum is then made from its input), lest a thread
    /// sit idle.
    pub(super) fn sums_in_blocks(&self, i: usize) -> bool {
        let shape = &self.nodes[i].shape;
        let (rows, work) = (shape[0], shape.iter().product::<usize>());
        if rows == 0 {
            return false;
        }
        let per = |align| crate::gemm::rows_per_share(rows, work, align);
        rows.div_ceil(per(SUM_BLOCK_ROWS)) == rows.div_ceil(per(1))
    }

    /// Computes the sum `i` from the block sums its input's nodes added, when they
    /// added every row of it; `false`, having computed nothing, otherwise.
    pub(super) fn sum_added(&mut self, i: usize) -> bool {
        let xs = &self.nodes[self.nodes[i].inputs[0].index()].shape;
        let len = self.nodes[i].shape[0];
        let rows = xs.iter().product::<usize>() / len;
        let Some(s) = self.summing.get_mut(&i) else { return false };
        let all = std::mem::take(&mut s.rows) == rows;
        if !all {
            return false;
        }
        let v = sum_blocks(&s.sums, len, len);
        if self.has[i] {
            self.release(i); // the value of an earlier run
        }
        let value = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[len]), v).expect("sized");
        self.values.set(i, crate::node::Value::Float(value));
        self.has[i] = true;
        true
    }

    /// Forgets the rows added by a replay that did not finish.
    pub(super) fn clear_summing(&mut self) {
        for s in self.summing.values_mut() {
            s.rows = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, Dimension};

    use super::*;
    use crate::node::NodeId;

    fn filled<T: Float>(shape: &[usize], seed: usize) -> ArrayD<T> {
        ArrayD::from_shape_fn(shape, |d| T::of(((d.as_array_view().sum() * 7 + seed) % 13) as f64 * 0.1 - 0.6))
    }

    /// `t` steps of a fused LSTM or GRU (`[B, H]`) with biases on both projections, the
    /// steps' `h'` stacked for the loss; the graph, and what a training step keeps
    /// (every weight's and bias's gradient, then the loss).
    fn steps<T: Float>(lstm: bool, t: usize, b: usize, h: usize) -> (Graph<T>, Vec<NodeId>) {
        let (i, gates) = (4, if lstm { 4 } else { 3 });
        let mut g = Graph::<T>::new();
        g.set_deferred(true);
        g.set_small_graph_limit(0);
        let x = g.input(filled(&[t, b, i], 1));
        let w = g.input(filled(&[gates * h, i], 2));
        let u = g.input(filled(&[gates * h, h], 3));
        let (bi, bh) = (g.input(filled(&[gates * h], 7)), g.input(filled(&[gates * h], 8)));
        let p = g.matmul_t(x, w, false, true).unwrap();
        let p = g.add(p, bi).unwrap();
        let (mut state, mut c) = (g.input(filled(&[b, h], 4)), g.input(filled(&[b, h], 5)));
        let mut outs = Vec::new();
        for k in 0..t {
            let xp = g.select(p, 0, k).unwrap();
            let hp = g.matmul_t(state, u, false, true).unwrap();
            let hp = if lstm { hp } else { g.add(hp, bh).unwrap() };
            let out = if lstm { g.lstm_cell(xp, hp, c).unwrap() } else { g.gru_cell(xp, hp, state).unwrap() };
            state = g.narrow(out, 1, 0, h).unwrap();
            if lstm {
                c = g.narrow(out, 1, h, h).unwrap();
            }
            outs.push(state);
        }
        let all = g.stack(&outs, 0).unwrap();
        let a = g.constant(filled(&[t, b, h], 6));
        let weighted = g.mul(all, a).unwrap();
        let loss = g.sum_all(weighted).unwrap();
        let wrt: &[NodeId] = if lstm { &[w, u, bi] } else { &[w, u, bi, bh] };
        let mut keep = g.grad(loss, wrt).unwrap();
        keep.push(loss);
        (g, keep)
    }

    fn sums_of<T: Float>(g: &Graph<T>) -> Vec<usize> {
        (0..g.nodes.len()).filter(|&i| matches!(g.nodes[i].op, Op::SumTo(_))).collect()
    }

    #[test]
    fn the_bias_sums_are_fed_by_the_kernels_writing_their_rows() {
        // B = 64: whole blocks of rows, the stack's sum fed; B = 5: each step's own sum
        // only (a block would span two steps of the stack).
        for (lstm, b, stacked) in [(false, 64, true), (true, 64, true), (false, 5, false), (true, 5, false)] {
            let (g, keep) = steps::<f32>(lstm, 3, b, 8);
            let plan = LeanPlan::new(&g.nodes, &keep, 4);
            let sums = sums_of(&g);
            let summed: Vec<usize> = sums.iter().copied().filter(|&s| plan.is_summed(s)).collect();
            // The stack's sum (the input bias's), and a GRU's hidden bias's, one per step.
            let want = usize::from(stacked) + if lstm { 0 } else { 3 };
            assert_eq!(summed.len(), want, "lstm {lstm}, B = {b}");
            for &s in &summed {
                let x = g.nodes[s].inputs[0].index();
                let parts: Vec<usize> = match g.nodes[x].op {
                    Op::Stack(_) => g.nodes[x].inputs.iter().map(|p| p.index()).collect(),
                    _ => vec![x],
                };
                for (q, p) in parts.into_iter().enumerate() {
                    assert_eq!(plan.feeds(p), Some((s, q * b)), "lstm {lstm}, B = {b}, sum {s}");
                }
            }
        }
    }

    #[test]
    fn sums_fed_by_the_kernels_have_the_values_of_the_sums_made() {
        fn check<T: Float + std::fmt::Debug>() {
            // Two blocks a step (and a share of rows each on two threads), one, and a
            // part of one; rows of 3H and 4H columns: two chunks of the sums and a rest.
            for (lstm, b, h) in [(false, 64, 96), (true, 64, 80), (false, 32, 8), (true, 5, 8), (false, 1, 8)] {
                let (mut g, keep) = steps::<T>(lstm, 3, b, h);
                g.replay().unwrap();
                let eager: Vec<ArrayD<T>> = keep.iter().map(|&k| g.value(k).unwrap().to_owned()).collect();
                for run in 0..2 {
                    g.replay_keeping(&keep).unwrap();
                    for (k, e) in keep.iter().zip(&eager) {
                        let lean = g.value(*k).unwrap();
                        let same = lean.iter().zip(e.iter()).all(|(a, b)| a.f64().to_bits() == b.f64().to_bits());
                        assert!(same, "lstm {lstm}, B = {b}, H = {h}, run {run}, node {k:?}");
                    }
                }
                // Every sum the plan feeds was computed from its block sums.
                let plan = LeanPlan::new(&g.nodes, &keep, std::mem::size_of::<T>());
                for s in sums_of(&g).into_iter().filter(|&s| plan.is_summed(s)) {
                    assert!(g.summing.get(&s).is_some_and(|f| !f.sums.is_empty()), "sum {s} was not fed");
                }
            }
        }
        check::<f32>();
        check::<f64>();
    }
}
