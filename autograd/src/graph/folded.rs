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
/// its projected input, or by a sum of two terms that an activation computes through
/// (an Elman step's `tanh(x_t + h W_hhᵀ)`). A layer's input projection for every time
/// step is such a sum. The sum is not made: each select is a view of its step of `p`,
/// and the step (or the activation) adds the bias as it reads it, with the same
/// operations in the same order (the sum rounded, then the gate's), so every value is
/// the same, bit for bit. That saves a pass that writes the whole sum to memory (52 MB
/// in W1-L's step, 13 MB in W2-L's) and reads it back. `p` then lives until the last
/// step reads it (`last` is updated), as the sum would have.
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
    // The activation computing through each sum that is not made (an Elman step's).
    let mut through_reader = vec![LeanPlan::NONE; nodes.len()];
    for (i, f) in folds.iter().enumerate() {
        if let (Fold::Through(j), Some((Reader::Tanh | Reader::Sigmoid | Reader::Relu, _))) = (*f, reader(&nodes[i].op))
        {
            through_reader[j as usize] = i as u32;
        }
    }
    for (i, node) in nodes.iter().enumerate().filter(|&(i, _)| needed[i]) {
        let step = matches!(node.op, Op::LstmCell(_) | Op::GruCell(_));
        let sum = through_reader[i] != LeanPlan::NONE;
        for (k, j) in node.inputs.iter().enumerate() {
            let j = j.index();
            let once = node.inputs.iter().filter(|x| x.index() == j).count() == 1;
            by_selects[j] &= is_select(&node.op) && node.inputs.len() == 1;
            by_steps[j] &= (step && k == 0 && once) || (sum && once);
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
        // A sum computed through by an activation, which adds the bias (see
        // `LeanPlan::biased_term`); else a fused step.
        let step = match through_reader[step] {
            LeanPlan::NONE => {
                folds[step] = Fold::Biased(j as u32);
                step
            }
            reader => reader as usize,
        };
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

/// `out[r, c] = f((x[r, c] + bias[c]) + other[r, c])` for an activation `reader`, rows
/// of `bias.len()`; `other` is `out` itself when `None`.
fn biased<T: Float>(reader: Reader, out: &mut [T], other: Option<&[T]>, x: &[T], bias: &[T]) {
    match reader {
        Reader::Tanh => biased_pass(out, other, x, bias, tanh),
        Reader::Sigmoid => biased_pass(out, other, x, bias, sigmoid),
        Reader::Relu => biased_pass(out, other, x, bias, relu),
        Reader::Grad(_) => unreachable!("planned for activations only"),
    }
}

/// [`biased`] for one activation `f`, split over the engine's threads by rows when large.
#[inline(always)]
fn biased_pass<T: Float>(out: &mut [T], other: Option<&[T]>, x: &[T], bias: &[T], f: impl Fn(T) -> T + Sync) {
    use crate::simd::{map3, update2};
    let w = bias.len();
    crate::gemm::for_rows(out, w, &|first, blk| {
        crate::simd::vectorized(
            #[inline(always)]
            || {
                for (r, row) in blk.chunks_exact_mut(w).enumerate() {
                    let at = (first + r) * w..(first + r + 1) * w;
                    match other {
                        Some(o) => map3(row, &x[at.clone()], bias, &o[at], |x, b, o| f((x + b) + o)),
                        None => update2(row, &x[at], bias, |o, x, b| f((x + b) + o)),
                    }
                }
            },
        );
    });
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
        bias: Option<(usize, usize)>,
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
        if let Some((x, bs)) = bias {
            return self.compute_through_biased((i, j), (x, bs), place, dying, live);
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
    /// [`Graph::compute_through`] of a sum one of whose terms, `x`, is a select of the
    /// bias sum `bs` (a view of its step of the sum's first term; see [`slices`]): each
    /// element is `f((x + bias) + other)`, the sum with the bias rounded first, as the
    /// bias sum's own value would be. Into the join's rows when placed there, else into
    /// the other term's buffer when it dies here, else into a new one. Returns `false`,
    /// having computed nothing, when the bias is not one row of the output's width.
    fn compute_through_biased(
        &mut self,
        (i, j): (usize, usize),
        (x, bs): (usize, usize),
        place: Option<(usize, usize)>,
        dying: impl Fn(usize) -> bool,
        live: &mut usize,
    ) -> Result<bool> {
        let (what, _) = reader(&self.nodes[i].op).expect("planned for a reader");
        let width = *self.nodes[i].shape.last().unwrap_or(&0);
        let bias = self.nodes[bs].inputs[1].index();
        let other = self.nodes[j].inputs.iter().map(|t| t.index()).find(|&t| t != x);
        let (Some(other), false) = (other, matches!(what, Reader::Grad(_))) else { return Ok(false) };
        if !self.computed(bias) {
            return Err(self.not_computed(self.nodes[i].op.name(), bias));
        }
        if width == 0 || self.values[bias].float_slice().is_none_or(|v| v.len() != width) {
            return Ok(false);
        }
        if self.has[i] {
            self.release(i); // the value of an earlier run
        }
        let owns = |t: usize| matches!(&self.values[t], Value::Float(v) if v.is_standard_layout());
        if let Some((join, index)) = place {
            let slot = self.part_slot(join, index, live);
            let v = &self.values;
            let (xs, os, b) = (v[x].float_slice(), v[other].float_slice(), v[bias].float_slice());
            let (xs, os, b) = (xs.expect("row-major"), os.expect("row-major"), b.expect("one row"));
            // SAFETY: as `part_slot`'s: the pass writes the slot whole.
            biased(what, unsafe { &mut *slot }, Some(os), xs, b);
            self.set_part(i, join, index);
            return Ok(true);
        }
        let out = if dying(other) && other != x && owns(other) {
            let mut acc = into_float(self.values.take(other));
            self.has[other] = false;
            let v = &self.values;
            let (xs, b) = (v[x].float_slice().expect("row-major"), v[bias].float_slice().expect("one row"));
            biased(what, acc.as_slice_mut().expect("row-major"), None, xs, b);
            acc
        } else {
            let v = &self.values;
            let (xs, os, b) = (v[x].float_slice(), v[other].float_slice(), v[bias].float_slice());
            let (xs, os, b) = (xs.expect("row-major"), os.expect("row-major"), b.expect("one row"));
            // SAFETY: the pass writes every element of the buffer and reads none.
            unsafe { fresh::filled(&self.nodes[i].shape, |buf| biased(what, buf, Some(os), xs, b)) }
        };
        self.values.set(i, Value::Float(out));
        self.has[i] = true;
        Ok(true)
    }

    /// Makes the select `x` of the bias sum `bs` (a view of its step of the sum's first
    /// term) the step of the sum itself: the step plus the bias, as the sum's `add`
    /// computes it (for a reader that does not add the bias).
    pub(super) fn add_bias_to_slice(&mut self, x: usize, bs: usize) -> Result<()> {
        let bias = self.nodes[bs].inputs[1];
        let node = &self.nodes[bs];
        let vals = [&self.values[x], &self.values[bias.index()]];
        let out = node.op.rule::<T>().forward(&vals, &self.nodes[x].shape);
        let out = out.map_err(|f| self.fail(node.op.name(), f, &[self.nodes[x].inputs[0], bias]))?;
        self.release(x);
        self.values.set(x, Value::Float(out));
        self.has[x] = true;
        Ok(())
    }

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

    /// Computes the fused step `i`, adding the bias of the sum `j` to its projected input
    /// when given (a [`Fold::Slice`] of `j`; see [`slices`]), and writing its `h'` block
    /// into the `tees` too (see `placed`).
    pub(super) fn compute_step(
        &mut self,
        i: usize,
        j: Option<usize>,
        tees: &[crate::ops::fused::Tee<T>],
    ) -> Result<()> {
        self.check_inputs(i)?;
        let b = j.map(|j| self.nodes[j].inputs[1].index());
        if let Some(b) = b.filter(|&b| !self.computed(b)) {
            return Err(self.not_computed(self.nodes[i].op.name(), b));
        }
        if self.has[i] {
            self.release(i); // the value of an earlier run
        }
        let node = &self.nodes[i];
        let vals: SmallVec<[&Value<T>; 4]> = node.inputs.iter().map(|x| &self.values[x.index()]).collect();
        let out = crate::ops::fused::step_teed(&node.op, &vals, b.map(|b| &self.values[b]), &node.shape, tees);
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

    /// The term of the sum `j` (one that an activation computes through) that is a
    /// select of a bias sum not made, and that bias sum: the activation adds the bias
    /// to the term (see [`slices`]).
    pub(super) fn biased_term(&self, nodes: &[Node], j: usize) -> Option<(usize, usize)> {
        nodes[j].inputs.iter().find_map(|x| self.slice_of(x.index()).map(|bs| (x.index(), bs)))
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

    /// Three Elman steps, `tanh(x_t W_ihᵀ + b + h W_hhᵀ)` over `[3, 40, 16]` inputs, `H` =
    /// 24: the graph, the bias sum, the selects, the step sums, the activations.
    fn elman<T: Float>() -> (Graph<T>, NodeId, Vec<NodeId>, Vec<NodeId>, Vec<NodeId>) {
        let (t, b, h) = (3, 40, 24);
        let cast = |a: ArrayD<f64>| a.mapv(T::of);
        let mut g = Graph::<T>::new();
        let x = g.input(cast(filled(&[t, b, 16], 1)));
        let w = g.input(cast(filled(&[h, 16], 2)));
        let bias = g.input(cast(filled(&[h], 3)));
        let u = g.input(cast(filled(&[h, h], 4)));
        let p = g.matmul_t(x, w, false, true).unwrap();
        let sum = g.add(p, bias).unwrap();
        let mut state = g.input(cast(filled(&[b, h], 5)));
        let (mut sels, mut sums, mut acts) = (Vec::new(), Vec::new(), Vec::new());
        for k in 0..t {
            let xp = g.select(sum, 0, k).unwrap();
            let hp = g.matmul_t(state, u, false, true).unwrap();
            // The select second for one step: the sum's order does not matter.
            let s = if k == 1 { g.add(hp, xp) } else { g.add(xp, hp) }.unwrap();
            state = g.tanh(s).unwrap();
            sels.push(xp);
            sums.push(s);
            acts.push(state);
        }
        (g, sum, sels, sums, acts)
    }

    #[test]
    fn an_elman_steps_activation_adds_the_projections_bias() {
        let (g, sum, sels, sums, acts) = elman::<f64>();
        let keep = [acts[2]];
        let plan = LeanPlan::new(&g.nodes, &keep, 8);
        assert!(plan.folded(sum.index()));
        for ((s, x), a) in sels.iter().zip(&sums).zip(&acts) {
            assert_eq!(plan.slice_of(s.index()), Some(sum.index()));
            assert_eq!(plan.through(a.index()), Some(x.index()));
            assert_eq!(plan.biased_term(&g.nodes, x.index()), Some((s.index(), sum.index())));
        }
        // The projection lives until the last activation has read it.
        let p = g.nodes[sum.index()].inputs[0].index();
        assert_eq!(plan.last[p], acts[2].index() as u32);
        // A step sum another node reads is made, and so is the bias sum then.
        let (mut g, sum, _, sums, acts) = elman::<f64>();
        let extra = g.sigmoid(sums[1]).unwrap();
        let plan = LeanPlan::new(&g.nodes, &[acts[2], extra], 8);
        assert!(!plan.folded(sum.index()));
    }

    #[test]
    fn activations_adding_the_bias_give_the_values_of_the_sum_made() {
        fn check<T: Float + std::fmt::Debug>() {
            let (mut g, _, _, _, acts) = elman::<T>();
            g.replay().unwrap();
            let eager: Vec<ArrayD<T>> = acts.iter().map(|&k| g.value(k).unwrap().to_owned()).collect();
            g.set_small_graph_limit(0);
            for keep in [&acts[..], &acts[2..]] {
                for _ in 0..2 {
                    g.replay_keeping(keep).unwrap();
                    for &k in keep {
                        let i = acts.iter().position(|&a| a == k).expect("an activation");
                        assert_eq!(g.value(k).unwrap().to_owned(), eager[i], "node {}", k.index());
                    }
                }
            }
        }
        check::<f64>();
        check::<f32>();
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
