//! Sums a lean replay does not make: their one reader computes through them.
//!
//! An Elman step records `tanh(add(xp, h W_hhᵀ))`, and its reverse step
//! `activation_grad(h', add_n(g_next, g_out))`: a sum of two same-shaped values read by
//! nothing but an activation, or by the gradient through one. A lean replay keeps no
//! value that nothing reads, so it need not make the sum at all: the reader computes
//! each element from the sum's two terms in one pass, with the same operations in the
//! same order as the two nodes one after the other (the sum rounded, then the
//! activation), so every value is the same, bit for bit. The sum stays in the graph,
//! and a plain replay, or a lean one that keeps it, makes its value as before.
//!
//! This saves a pass over the step's buffers and a node's turn in the replay: 200
//! passes of 128 KB in W2-L's step, and two of the nine nodes a step of W6 computes.
//!
//! A layer's input projection plus its bias, `X W_ihᵀ + b`, is another sum nothing
//! needs whole: every time step selects its slice, and a fused LSTM or GRU step is the
//! one reader of each. The steps then read their slice of the product as a view and
//! add the bias themselves ([`slices`]), which saves writing the whole sum to memory
//! and reading it back: 0.7–3.8 ms (up to 1.5%) of W1-L's step in three alternations.

use smallvec::SmallVec;

use super::{into_float, Graph, LeanPlan};
use crate::error::Result;
use crate::float::Float;
use crate::node::{Node, Value};
use crate::ops::activation::{relu, sigmoid, tanh};
use crate::ops::{fresh, ActivationKind, Op};

/// A node's part in a fold, in a lean replay's plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fold {
    /// Computed as usual.
    Not,
    /// A sum whose value is not made: its one reader computes through it.
    Into,
    /// Computes through the sum given, one of its inputs.
    Through(u32),
    /// A step of a bias sum along its first axis (see [`slices`]): a view of the step
    /// of the sum's first term (the sum given is not made).
    Slice(u32),
    /// A fused step that adds the bias of the sum given to its projected input, a
    /// [`Fold::Slice`] of that sum.
    Biased(u32),
}

/// What a reader computes from the sum `s` (and the activation's output `y`).
#[derive(Clone, Copy)]
enum Reader {
    Tanh,
    Sigmoid,
    Relu,
    /// `s ⊙ dy/dx`: the gradient through an activation, `s` the gradient of its output.
    Grad(ActivationKind),
}

/// The reader `op` is, and the position of the input it may compute through.
fn reader(op: &Op) -> Option<(Reader, usize)> {
    Some(match op {
        Op::Tanh(_) => (Reader::Tanh, 0),
        Op::Sigmoid(_) => (Reader::Sigmoid, 0),
        Op::Relu(_) => (Reader::Relu, 0),
        Op::ActivationGrad(a) => (Reader::Grad(a.kind), 1),
        _ => return None,
    })
}

/// Each node's [`Fold`] for a lean replay that computes the `needed` nodes and keeps the
/// `pinned` ones (empty when nothing folds). A folded sum's inputs are then last read by
/// its reader (`last` is updated), so they live until it has computed.
pub(super) fn folds(nodes: &[Node], needed: &[bool], pinned: &[bool], copies: &[bool], last: &mut [u32]) -> Vec<Fold> {
    let mut readers = vec![0u32; nodes.len()];
    for (i, node) in nodes.iter().enumerate() {
        if needed[i] {
            for j in &node.inputs {
                readers[j.index()] += 1;
            }
        }
    }
    let mut folds: Vec<Fold> = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let Some((_, at)) = reader(&node.op).filter(|_| needed[i]) else { continue };
        let j = node.inputs[at].index();
        let sum = &nodes[j];
        let two_terms = match sum.op {
            Op::Add(_) | Op::AddN(_) => sum.inputs.len() == 2,
            _ => false,
        };
        // Terms of the sum's own shape (no broadcast), neither a copy made again for
        // each reader (see `LeanPlan::copies`).
        let fits = two_terms
            && !pinned[j]
            && readers[j] == 1
            && sum.inputs.iter().all(|t| nodes[t.index()].shape == sum.shape && !copies[t.index()]);
        if !fits {
            continue;
        }
        if folds.is_empty() {
            folds = vec![Fold::Not; nodes.len()];
        }
        folds[j] = Fold::Into;
        folds[i] = Fold::Through(j as u32);
        for t in &sum.inputs {
            let t = t.index();
            last[t] = last[t].max(i as u32);
        }
    }
    folds
}

/// Adds to `folds` the sums of a bias that only fused cells read: `p + b`, `b` one
/// row broadcast over every row of `p` (`[T, …, N] + [N]`), read by nothing but
/// selects along the first axis, each read by nothing but a fused LSTM or GRU step as
/// its projected input. A layer's input projection for every time step is such a sum.
/// The sum is not made: each select is a view of its step of `p`, and the step adds
/// the bias as it reads it, with the same operations in the same order (the sum
/// rounded, then the gate's), so every value is the same, bit for bit. That saves a
/// pass that writes the whole sum to memory (52 MB in W1-L's step) and reads it back.
/// `p` then lives until the last step reads it (`last` is updated), as the sum would have.
pub(super) fn slices(
    nodes: &[Node],
    needed: &[bool],
    pinned: &[bool],
    copies: &[bool],
    last: &mut [u32],
    folds: &mut Vec<Fold>,
) {
    let is_select = |op: &Op| matches!(op, Op::Select(s) if s.axis == 0);
    // Per node: whether every needed reader is a select along the first axis, whether
    // every one is a fused step reading it as its projected input alone, how many read
    // it, and the last.
    let mut by_selects = vec![true; nodes.len()];
    let mut by_steps = vec![true; nodes.len()];
    let mut readers = vec![0u32; nodes.len()];
    let mut last_reader = vec![0u32; nodes.len()];
    for (i, node) in nodes.iter().enumerate().filter(|&(i, _)| needed[i]) {
        let step = matches!(node.op, Op::LstmCell(_) | Op::GruCell(_));
        for (k, j) in node.inputs.iter().enumerate() {
            let j = j.index();
            by_selects[j] &= is_select(&node.op) && node.inputs.len() == 1;
            by_steps[j] &= step && k == 0 && !node.inputs[1..].iter().any(|x| x.index() == j);
            readers[j] += 1;
            last_reader[j] = i as u32;
        }
    }
    let bias_sum = |j: usize| -> bool {
        let sum = &nodes[j];
        let (Op::Add(_), [p, b]) = (&sum.op, &sum.inputs[..]) else { return false };
        let (pn, bn) = (&nodes[p.index()], &nodes[b.index()]);
        needed[j]
            && !pinned[j]
            && by_selects[j]
            && readers[j] > 0
            && sum.shape.len() >= 2
            && pn.shape == sum.shape
            && bn.shape[..] == sum.shape[sum.shape.len() - 1..]
            && p != b
            && !copies[p.index()]
    };
    // A sum qualifies when every select of it is read by one step, and by nothing else
    // (the step adds the bias; another reader would read the view without it).
    let mut fits: Vec<bool> = (0..nodes.len()).map(bias_sum).collect();
    for (i, node) in nodes.iter().enumerate().filter(|&(i, _)| needed[i]) {
        if let (true, Some(&x)) = (is_select(&node.op), node.inputs.first()) {
            fits[x.index()] &= !pinned[i] && readers[i] == 1 && by_steps[i];
        }
    }
    let mut steps: Vec<(usize, usize)> = Vec::new(); // (step, sum)
    for (i, node) in nodes.iter().enumerate().filter(|&(i, _)| needed[i]) {
        let (true, Some(&x)) = (is_select(&node.op), node.inputs.first()) else { continue };
        let j = x.index();
        if !fits[j] {
            continue;
        }
        if folds.is_empty() {
            *folds = vec![Fold::Not; nodes.len()];
        }
        folds[j] = Fold::Into;
        folds[i] = Fold::Slice(j as u32);
        steps.push((last_reader[i] as usize, j));
    }
    for (step, j) in steps {
        folds[step] = Fold::Biased(j as u32);
        for t in &nodes[j].inputs {
            let t = t.index();
            last[t] = last[t].max(step as u32);
        }
    }
}

/// The two terms of a sum, as the pass reads them.
#[derive(Clone, Copy)]
enum Terms<'a, T> {
    /// Both in their own buffers.
    Both(&'a [T], &'a [T]),
    /// The first is the output buffer itself (computed in place), the second given.
    OutFirst(&'a [T]),
    /// The second is the output buffer itself, the first given.
    OutSecond(&'a [T]),
}

impl<'a, T> Terms<'a, T> {
    fn rows(self, r: std::ops::Range<usize>) -> Terms<'a, T> {
        match self {
            Terms::Both(a, b) => Terms::Both(&a[r.clone()], &b[r]),
            Terms::OutFirst(b) => Terms::OutFirst(&b[r]),
            Terms::OutSecond(a) => Terms::OutSecond(&a[r]),
        }
    }
}

/// `out[k] = f(a[k] + b[k], y[k])` (`y` unread when absent), split over the engine's
/// threads when large.
#[inline(always)]
fn pass<T: Float>(out: &mut [T], terms: Terms<'_, T>, y: Option<&[T]>, f: impl Fn(T, T) -> T + Sync) {
    use crate::simd::{map2, map3, update1, update2};
    crate::gemm::for_rows(out, 1, &|first, blk| {
        let r = first..first + blk.len();
        let (terms, y) = (terms.rows(r.clone()), y.map(|y| &y[r]));
        crate::simd::vectorized(
            #[inline(always)]
            || match (terms, y) {
                (Terms::Both(a, b), Some(y)) => map3(blk, a, b, y, |a, b, y| f(a + b, y)),
                (Terms::Both(a, b), None) => map2(blk, a, b, |a, b| f(a + b, T::zero())),
                (Terms::OutFirst(b), Some(y)) => update2(blk, b, y, |a, b, y| f(a + b, y)),
                (Terms::OutFirst(b), None) => update1(blk, b, |a, b| f(a + b, T::zero())),
                (Terms::OutSecond(a), Some(y)) => update2(blk, a, y, |b, a, y| f(a + b, y)),
                (Terms::OutSecond(a), None) => update1(blk, a, |b, a| f(a + b, T::zero())),
            },
        );
    });
}

/// [`pass`] for `reader`, each kind its own loop.
fn compute<T: Float>(reader: Reader, out: &mut [T], terms: Terms<'_, T>, y: Option<&[T]>) {
    match reader {
        Reader::Tanh => pass(out, terms, y, |s, _| tanh(s)),
        Reader::Sigmoid => pass(out, terms, y, |s, _| sigmoid(s)),
        Reader::Relu => pass(out, terms, y, |s, _| relu(s)),
        Reader::Grad(ActivationKind::Tanh) => pass(out, terms, y, |s, y| ActivationKind::Tanh.grad(y, s)),
        Reader::Grad(ActivationKind::Sigmoid) => pass(out, terms, y, |s, y| ActivationKind::Sigmoid.grad(y, s)),
    }
}

impl<T: Float> Graph<T> {
    /// Computes node `i` through the sum `j` (its input, whose value is not made): into
    /// its rows of a join when it is a placed part there (`place`: the join and the
    /// index), else into the buffer of a term that dies here (`dying`), else into a new
    /// one. Returns `false`, having computed nothing, when a term or the activation's
    /// output is not row-major (the caller then makes the sum and computes `i` as usual).
    pub(super) fn compute_through(
        &mut self,
        (i, j): (usize, usize),
        place: Option<(usize, usize)>,
        dying: impl Fn(usize) -> bool,
        live: &mut usize,
    ) -> Result<bool> {
        self.check_inputs(j)?;
        let node = &self.nodes[i];
        if let Some(x) = node.inputs.iter().find(|x| x.index() != j && !self.computed(x.index())) {
            return Err(self.not_computed(node.op.name(), x.index()));
        }
        let (what, _) = reader(&node.op).expect("planned for a reader");
        let y = matches!(what, Reader::Grad(_)).then(|| node.inputs[0].index());
        let [a, b]: [usize; 2] = [self.nodes[j].inputs[0].index(), self.nodes[j].inputs[1].index()];
        let n: usize = node.shape.iter().product();
        let row_major = |x: usize| self.values[x].float_slice().is_some_and(|s| s.len() == n);
        if !row_major(a) || !row_major(b) || y.is_some_and(|y| !row_major(y)) {
            return Ok(false);
        }
        if self.has[i] {
            self.release(i); // the value of an earlier run
        }
        if let Some((join, index)) = place {
            let slot = self.part_slot(join, index, live);
            let v = &self.values;
            let terms = Terms::Both(v[a].float_slice().expect("row-major"), v[b].float_slice().expect("row-major"));
            // SAFETY: as `part_slot`'s: the pass writes the slot whole.
            compute(what, unsafe { &mut *slot }, terms, y.map(|y| v[y].float_slice().expect("row-major")));
            self.set_part(i, join, index);
            return Ok(true);
        }
        // A term read only here, owning its row-major buffer, becomes the output.
        let reads = |x: usize| usize::from(a == x) + usize::from(b == x) + usize::from(y == Some(x));
        let owns = |x: usize| matches!(&self.values[x], Value::Float(v) if v.is_standard_layout());
        let out = match [a, b].into_iter().find(|&x| dying(x) && reads(x) == 1 && owns(x)) {
            Some(t) => {
                let mut acc = into_float(self.values.take(t));
                self.has[t] = false;
                let v = &self.values;
                let other = v[if t == a { b } else { a }].float_slice().expect("row-major");
                let terms = if t == a { Terms::OutFirst(other) } else { Terms::OutSecond(other) };
                let buf = acc.as_slice_mut().expect("row-major");
                compute(what, buf, terms, y.map(|y| v[y].float_slice().expect("row-major")));
                acc
            }
            None => {
                let v = &self.values;
                let terms = Terms::Both(v[a].float_slice().expect("row-major"), v[b].float_slice().expect("row-major"));
                let y = y.map(|y| v[y].float_slice().expect("row-major"));
                // SAFETY: the pass writes every element of the buffer and reads none.
                unsafe { fresh::filled(&self.nodes[i].shape, |buf| compute(what, buf, terms, y)) }
            }
        };
        self.values.set(i, Value::Float(out));
        self.has[i] = true;
        Ok(true)
    }
}

impl<T: Float> Graph<T> {
    /// Makes the select `i` of the bias sum `j` (not made; see [`slices`]) from the
    /// sum's first term instead: a view of its step where it can be, else a copy.
    pub(super) fn compute_slice(&mut self, i: usize, j: usize) -> Result<()> {
        let p = self.nodes[j].inputs[0];
        if !self.computed(p.index()) {
            return Err(self.not_computed(self.nodes[i].op.name(), p.index()));
        }
        if self.has[i] {
            self.release(i); // the value of an earlier run
        }
        let node = &self.nodes[i];
        let rule = node.op.rule::<T>();
        if let Some((v, holder)) = super::view_of(rule, &[p], &mut self.values, &mut self.shared, &node.shape) {
            self.values.set(i, Value::Shared(v));
            self.shared.insert(i, holder);
        } else {
            let out = rule
                .forward(&[&self.values[p.index()]], &node.shape)
                .map_err(|f| self.fail(node.op.name(), f, &[p]))?;
            self.values.set(i, Value::Float(out));
        }
        self.has[i] = true;
        Ok(())
    }

    /// Computes the fused step `i` adding the bias of the sum `j` to its projected input
    /// (a [`Fold::Slice`] of `j`; see [`slices`]).
    pub(super) fn compute_biased(&mut self, i: usize, j: usize) -> Result<()> {
        self.check_inputs(i)?;
        let b = self.nodes[j].inputs[1];
        if !self.computed(b.index()) {
            return Err(self.not_computed(self.nodes[i].op.name(), b.index()));
        }
        if self.has[i] {
            self.release(i); // the value of an earlier run
        }
        let node = &self.nodes[i];
        let vals: SmallVec<[&Value<T>; 4]> = node.inputs.iter().map(|x| &self.values[x.index()]).collect();
        let out = crate::ops::fused::step_with_bias(&node.op, &vals, &self.values[b.index()], &node.shape);
        drop(vals);
        let out = out.map_err(|f| self.fail(node.op.name(), f, &node.inputs.clone()))?;
        self.values.set(i, Value::Float(out));
        self.has[i] = true;
        Ok(())
    }
}

impl LeanPlan {
    /// The bias sum node `i` is a select of, made from the sum's first term, if it is.
    pub(super) fn slice_of(&self, i: usize) -> Option<usize> {
        match self.folds.get(i) {
            Some(&Fold::Slice(j)) => Some(j as usize),
            _ => None,
        }
    }

    /// The bias sum whose bias the fused step `i` adds, if it does.
    pub(super) fn biased(&self, i: usize) -> Option<usize> {
        match self.folds.get(i) {
            Some(&Fold::Biased(j)) => Some(j as usize),
            _ => None,
        }
    }

    /// The sum node `i` computes through, if it does.
    pub(super) fn through(&self, i: usize) -> Option<usize> {
        match self.folds.get(i) {
            Some(&Fold::Through(j)) => Some(j as usize),
            _ => None,
        }
    }

    /// Whether node `i` is a sum whose value this plan does not make.
    pub(super) fn folded(&self, i: usize) -> bool {
        matches!(self.folds.get(i), Some(Fold::Into))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::NodeId;
    use ndarray::{ArrayD, Dimension};

    fn filled(shape: &[usize], seed: usize) -> ArrayD<f64> {
        ArrayD::from_shape_fn(shape, |d| ((d.as_array_view().sum() * 7 + seed) % 13) as f64 * 0.1 - 0.6)
    }

    /// Three steps of a fused LSTM (`gru`: GRU) over `[3, 40, 4H]` projections plus a
    /// bias, `H` = 24; `extra` records more readers given a step's select. The graph,
    /// the bias sum, the selects, the steps and the kept nodes (the last output, and
    /// what `extra` returns).
    fn steps(
        gru: bool,
        extra: impl Fn(&mut Graph<f64>, NodeId) -> Vec<NodeId>,
    ) -> (Graph<f64>, NodeId, Vec<NodeId>, Vec<NodeId>, Vec<NodeId>) {
        let (t, b, h) = (3, 40, 24);
        let gates = if gru { 3 } else { 4 };
        let mut g = Graph::<f64>::new();
        let x = g.input(filled(&[t, b, 16], 1));
        let w = g.input(filled(&[gates * h, 16], 2));
        let bias = g.input(filled(&[gates * h], 3));
        let u = g.input(filled(&[gates * h, h], 4));
        let p = g.matmul_t(x, w, false, true).unwrap();
        let sum = g.add(p, bias).unwrap();
        let mut state = g.input(filled(&[b, h], 5));
        let (mut sels, mut cells, mut keep) = (Vec::new(), Vec::new(), Vec::new());
        for k in 0..t {
            let xp = g.select(sum, 0, k).unwrap();
            keep.extend(extra(&mut g, xp));
            let hp = g.matmul_t(state, u, false, true).unwrap();
            let out = if gru { g.gru_cell(xp, hp, state) } else { g.lstm_cell(xp, hp, state) }.unwrap();
            state = g.narrow(out, 1, 0, h).unwrap();
            sels.push(xp);
            cells.push(out);
        }
        keep.push(state);
        (g, sum, sels, cells, keep)
    }

    #[test]
    fn a_projections_bias_is_added_by_the_steps_that_read_it() {
        for gru in [false, true] {
            let (g, sum, sels, cells, keep) = steps(gru, |_, _| Vec::new());
            let plan = LeanPlan::new(&g.nodes, &keep, 8);
            assert_eq!(plan.folds[sum.index()], Fold::Into);
            for (s, c) in sels.iter().zip(&cells) {
                assert_eq!(plan.slice_of(s.index()), Some(sum.index()));
                assert_eq!(plan.biased(c.index()), Some(sum.index()));
            }
            // The projection lives until the last step has read it.
            let p = g.nodes[sum.index()].inputs[0].index();
            assert_eq!(plan.last[p], cells[2].index() as u32);
        }
    }

    #[test]
    fn a_bias_sum_a_step_shares_with_another_reader_is_made() {
        for gru in [false, true] {
            let (g, sum, sels, _, keep) = steps(gru, |g, xp| vec![g.tanh(xp).unwrap()]);
            let plan = LeanPlan::new(&g.nodes, &keep, 8);
            assert!(!plan.folded(sum.index()));
            assert!(sels.iter().all(|s| plan.slice_of(s.index()).is_none()));
            // Read by a second step, whose bias no one would add.
            let (g, sum, _, _, keep) = steps(gru, |g, xp| {
                let width = g.shape(xp).unwrap().to_vec();
                let hp = g.input(filled(&width, 6));
                let state = g.input(filled(&[width[0], 24], 7));
                vec![if gru { g.gru_cell(xp, hp, state) } else { g.lstm_cell(xp, hp, state) }.unwrap()]
            });
            assert!(!LeanPlan::new(&g.nodes, &keep, 8).folded(sum.index()));
            // Kept, the sum is made too.
            let (g, sum, _, _, mut keep) = steps(gru, |_, _| Vec::new());
            keep.push(sum);
            assert!(!LeanPlan::new(&g.nodes, &keep, 8).folded(sum.index()));
        }
    }

    #[test]
    fn steps_adding_the_bias_give_the_values_of_the_sum_made() {
        for gru in [false, true] {
            let (mut g, _, _, cells, mut keep) = steps(gru, |_, _| Vec::new());
            keep.extend(&cells);
            assert!(LeanPlan::new(&g.nodes, &keep, 8).biased(cells[0].index()).is_some());
            g.replay().unwrap();
            let eager: Vec<ArrayD<f64>> = keep.iter().map(|&k| g.value(k).unwrap().to_owned()).collect();
            g.set_small_graph_limit(0);
            for _ in 0..2 {
                g.replay_keeping(&keep).unwrap();
                for (&k, e) in keep.iter().zip(&eager) {
                    assert_eq!(&g.value(k).unwrap().to_owned(), e, "gru {gru}: node {}", k.index());
                }
            }
        }
    }
}
