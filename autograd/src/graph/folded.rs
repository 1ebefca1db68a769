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

impl LeanPlan {
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
