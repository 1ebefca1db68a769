//! Fused recurrent cell steps: one node computes every gate of an LSTM or GRU step
//! (or an Elman step's activation), and one node per input computes its gradient.
//!
//! An unrolled network records a handful of nodes per step instead of dozens, and
//! each step reads its `[B, G*H]` pre-activations once. The per-gate structure stays
//! visible: the output holds every gate's activation beside the new state, and the
//! layers record each gate as a named slice of it (the cell's taps).
//!
//! The gradient nodes ([`LstmCellGrad`], [`GruCellGrad`], [`ActivationGrad`]) are
//! differentiable too. Their own backward rules expand the gradient formula into
//! primitive ops and differentiate that, so second and higher orders work as for any
//! other op; only first-order gradients take the fused path.

use std::borrow::Cow;

use ndarray::{ArrayD, ArrayViewD, Ix2};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::fresh::{filled_row_blocks, filled_rows};
use super::{arity, fin, grads, shape_of, Back, FResult, Fail, Grads, Op, Rule};
use crate::error::Result;
use crate::float::Float;
use crate::gemm::{for_row_blocks, for_rows};
use crate::graph::Graph;
use crate::node::{NodeId, Shape, Value};
use crate::ops::activation::sigmoid;
use crate::ops::elementwise::combine_in_place;
use crate::ops::reduce::{BlockSums, RowSums};
use crate::simd::{map1, map2, map3, map4, map5};

/// The elements of `a` in row-major order, borrowed when `a` is contiguous.
fn flat<T: Float>(a: ArrayViewD<'_, T>) -> Cow<'_, [T]> {
    match a.to_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().copied().collect()),
    }
}

/// A `[B, w]` input read row by row: row `r` is `data[r·ld .. r·ld + w]`. A state
/// block viewed in the previous step's fused output (`c` of an LSTM step, `h` of a
/// GRU step) is read in place, its rows `ld` apart; any other layout is copied.
struct Rows<'a, T: Clone> {
    data: Cow<'a, [T]>,
    ld: usize,
}

impl<'a, T: Float> Rows<'a, T> {
    fn of(a: ArrayViewD<'a, T>) -> Self {
        let w = a.shape().get(1).copied().unwrap_or(0);
        if let Ok(m) = a.view().into_dimensionality::<Ix2>() {
            let (rows, st) = (m.nrows(), m.strides());
            if rows > 0 && w > 0 && st[1] == 1 && st[0] >= w as isize {
                let ld = st[0] as usize;
                // SAFETY: the view's rows lie `ld` apart in one buffer, from its first
                // element to its last one's row end; the span between them is part of
                // the same (initialized, immutably borrowed) buffer.
                let data = unsafe { std::slice::from_raw_parts(m.as_ptr(), (rows - 1) * ld + w) };
                return Rows { data: Cow::Borrowed(data), ld };
            }
        }
        Rows { data: flat(a), ld: w }
    }

    /// The rows from row `r0` on (each `chunks(ld)` item starts a row; take its first `w`).
    fn rows_from(&self, r0: usize) -> &[T] {
        &self.data[r0 * self.ld..]
    }
}

/// A row-major `[B, H]` buffer a fused step also writes its `h'` block into: a lean
/// replay's join of the steps' states (`graph/placed.rs`), written while the rows are
/// in the cache instead of copied from every step's output at the join.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tee<T> {
    rows: *mut T,
    len: usize,
}

// SAFETY: a tee is written only by the step it is given to, each row by the one share
// of the step's rows that computes it.
unsafe impl<T: Send> Send for Tee<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Tee<T> {}

impl<T: Float> Tee<T> {
    /// A tee writing into `slot`, which must stay valid and be written by nothing
    /// else until the step computed with it returns.
    pub(crate) fn new(slot: *mut [T]) -> Self {
        Tee { rows: slot.cast::<T>(), len: slot.len() }
    }

    /// Writes row `r` (`h` elements) of the state block.
    #[inline(always)]
    fn write(&self, r: usize, row: &[T]) {
        let h = row.len();
        assert!((r + 1) * h <= self.len, "a tee row within the tee");
        let to = self.rows.wrapping_add(r * h);
        // SAFETY: in bounds (checked), and row `r` of the tee is written by the one
        // share of the step computing row `r`.
        unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), to, h) };
    }
}

/// Checks that `s[k]` is `[B, width]` for the batch `B` of `s[0]`.
fn check_2d(s: &[&[usize]], k: usize, batch: usize, width: usize) -> FResult<()> {
    if s[k].len() != 2 || s[k][0] != batch || s[k][1] != width {
        return Err(Fail::Mismatch(s[0].iter().copied().collect(), s[k].iter().copied().collect()));
    }
    Ok(())
}

/// `[B, W]` of input 0 with `W` divisible by `parts`: `(B, W / parts)`.
fn rows_and_hidden(s: &[&[usize]], parts: usize, what: &str) -> FResult<(usize, usize)> {
    if s[0].len() != 2 || !s[0][1].is_multiple_of(parts) || s[0][1] == 0 {
        return Err(Fail::Invalid(format!("{what} must be [B, {parts}H] with H > 0, got {:?}", s[0])));
    }
    Ok((s[0][0], s[0][1] / parts))
}

// ----- LSTM ----------------------------------------------------------------------------

/// One LSTM step (PyTorch's gate order i, f, g, o), inputs `xp [B, 4H]` (projected
/// input with both biases), `hh [B, 4H]` (`h W_hhᵀ`) and `c [B, H]`. The output is
/// `[B, 6H]`: blocks `h' | c' | i | f | g | o` where
/// `i, f, o = σ(·)`, `g = tanh(·)` of `xp + hh`, `c' = f c + i g`, `h' = o tanh(c')`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LstmCell;

/// Which input an [`LstmCellGrad`] node is the gradient of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LstmGradOf {
    /// The pre-activations `xp + hh` (`[B, 4H]`; the same for `xp` and `hh`).
    Gates,
    /// The previous cell state `c` (`[B, H]`).
    Cell,
}

/// The gradient of an [`LstmCell`] step: inputs `out [B, 6H]` (the step's output),
/// `c [B, H]` (its previous cell state) and `g [B, 6H]` (the gradient of `out`); or,
/// when `state_only`, `out`, `c`, `g_h [B, H]` and `g_c [B, H]`: the gradients of the
/// `h'` and `c'` blocks alone, the gate taps having received none (the reverse sweep
/// of an unrolled LSTM: no `[B, 6H]` gradient with zeros in the gaps is built).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LstmCellGrad {
    /// Which input's gradient.
    pub of: LstmGradOf,
    /// Whether the gradient comes as the two state blocks only (four inputs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub state_only: bool,
}

impl<T: Float> Rule<T> for LstmCell {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, 3)?;
        let (b, h) = rows_and_hidden(s, 4, "the gates")?;
        check_2d(s, 1, b, 4 * h)?;
        check_2d(s, 2, b, h)?;
        Ok(Shape::from_slice(&[b, 6 * h]))
    }

    fn forward(&self, x: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
        Ok(lstm_forward(x, None, shape, &[]))
    }

    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        lstm_backward(g, b.out, b.inputs, b.needs, &[b.grad], false)
    }

    /// `h'` and `c'`.
    fn state_blocks(&self) -> usize {
        2
    }

    fn backward_from_states(&self, g: &mut Graph<T>, b: &Back, states: &[NodeId]) -> Result<Grads> {
        lstm_backward(g, b.out, b.inputs, b.needs, states, true)
    }
}

/// An [`LstmCell`] step's output; with `bias` (`[4H]`), of the projected input plus
/// the bias (the sum rounded first, as a separate `add` would).
fn lstm_forward<T: Float>(x: &[&Value<T>], bias: Option<&[T]>, shape: &[usize], tees: &[Tee<T>]) -> ArrayD<T> {
    let (rows, h) = (shape[0], shape[1] / 6);
    let (xp, hh, c) = (flat(fin(x, 0)), flat(fin(x, 1)), Rows::of(fin(x, 2)));
    // SAFETY: `lstm_forward_rows` writes all six blocks of every row (gates first,
    // then `c'` and `h'` from them) and reads only what it has written.
    unsafe {
        filled_rows(rows, 6 * h, &|r0, out| {
            let (xp, hh, cs) = (&xp[r0 * 4 * h..], &hh[r0 * 4 * h..], c.rows_from(r0));
            crate::simd::vectorized(
                #[inline(always)]
                || lstm_forward_rows(out, (xp, bias, hh), (cs, c.ld), h, (r0, tees)),
            );
        })
    }
}

/// Rows of an LSTM step's output from the rows of its projected input (and bias), of
/// its hidden product, and of its previous cell state (rows `ldc` apart); the rows are
/// the step's from row `r0` on, and each row's `h'` is also written into the `tees`.
#[inline(always)]
fn lstm_forward_rows<T: Float>(
    out: &mut [T],
    (xp, bias, hh): (&[T], Option<&[T]>, &[T]),
    (c, ldc): (&[T], usize),
    h: usize,
    (r0, tees): (usize, &[Tee<T>]),
) {
    for (q, ((o, (z, zh)), cp)) in out
        .chunks_exact_mut(6 * h)
        .zip(xp.chunks_exact(4 * h).zip(hh.chunks_exact(4 * h)))
        .zip(c.chunks(ldc))
        .enumerate()
    {
        let cp = &cp[..h];
        let (oh, rest) = o.split_at_mut(h);
        let (oc, gates) = rest.split_at_mut(h);
        // Each pass reads and writes few enough slices to vectorize.
        for (k, og) in gates.chunks_exact_mut(h).enumerate() {
            let (a, b) = (&z[k * h..(k + 1) * h], &zh[k * h..(k + 1) * h]);
            match (bias.map(|v| &v[k * h..(k + 1) * h]), k == 2) {
                (None, true) => map2(og, a, b, |a, b| (a + b).tanh_fast()),
                (None, false) => map2(og, a, b, |a, b| sigmoid(a + b)),
                (Some(v), true) => map3(og, a, v, b, |a, v, b| ((a + v) + b).tanh_fast()),
                (Some(v), false) => map3(og, a, v, b, |a, v, b| sigmoid((a + v) + b)),
            }
        }
        let (i, f, g, o_) = (&gates[..h], &gates[h..2 * h], &gates[2 * h..3 * h], &gates[3 * h..]);
        map4(oc, f, cp, i, g, |f, c, i, g| f * c + i * g);
        map2(oh, o_, oc, |o, c| o * c.tanh_fast());
        for t in tees {
            t.write(r0 + q, oh);
        }
    }
}

/// The gradient nodes of an [`LstmCell`] step, from the gradient of its whole output
/// (`grad = [g]`) or, `state_only`, of its state blocks (`grad = [g_h, g_c]`).
fn lstm_backward<T: Float>(
    g: &mut Graph<T>,
    out: NodeId,
    inputs: &[NodeId],
    needs: &[bool],
    grad: &[NodeId],
    state_only: bool,
) -> Result<Grads> {
    let mut ins: SmallVec<[NodeId; 4]> = SmallVec::from_slice(&[out, inputs[2]]);
    ins.extend_from_slice(grad);
    let mut one = |need: bool, of| -> Result<Option<NodeId>> {
        if !need {
            return Ok(None);
        }
        g.push(Op::LstmCellGrad(LstmCellGrad { of, state_only }), &ins).map(Some)
    };
    let gates = one(needs[0] || needs[1], LstmGradOf::Gates)?;
    let dc = one(needs[2], LstmGradOf::Cell)?;
    grads([gates, gates, dc])
}

impl<T: Float> Rule<T> for LstmCellGrad {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, if self.state_only { 4 } else { 3 })?;
        let (b, h) = rows_and_hidden(s, 6, "an LSTM step's output")?;
        check_2d(s, 1, b, h)?;
        if self.state_only {
            check_2d(s, 2, b, h)?;
            check_2d(s, 3, b, h)?;
        } else {
            check_2d(s, 2, b, 6 * h)?;
        }
        Ok(Shape::from_slice(&[b, if self.of == LstmGradOf::Gates { 4 * h } else { h }]))
    }

    fn forward(&self, x: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
        Ok(self.write_rows(x, shape, None, &RowSums::NONE, None).expect("a new array when given no slice"))
    }

    fn forward_into(&self, x: &[&Value<T>], shape: &[usize], out: &mut [T]) -> bool {
        self.write_rows(x, shape, None, &RowSums::NONE, Some(out));
        true
    }

    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let of = self.of;
        expanded_vjp(g, b, |g, x| lstm_grad_primitive(g, of, x[0], x[1], &x[2..]))
    }
}

/// Where a gradient kernel also writes its sibling node's rows (a lean replay computes
/// the two together; see `graph/paired.rs`): row `r` at `r·width`.
struct SiblingRows<T>(*mut T);

// SAFETY: the kernel's threads write disjoint rows through the pointer (each its own
// block of rows, as they write the lead node's output).
unsafe impl<T: Send> Sync for SiblingRows<T> {}

impl<T> SiblingRows<T> {
    /// Row `r` of `width` elements.
    ///
    /// # Safety
    /// Row `r` lies in the buffer, and only the caller's share writes it.
    #[allow(clippy::mut_from_ref)]
    unsafe fn row(&self, r: usize, width: usize) -> &mut [T] {
        // SAFETY: as the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(r * width), width) }
    }

    /// Rows `r..r + count` of `width` elements, once written.
    ///
    /// # Safety
    /// The rows lie in the buffer, the caller's share wrote them all, and no one
    /// writes them while the slice lives.
    unsafe fn rows(&self, r: usize, count: usize, width: usize) -> &[T] {
        // SAFETY: as the caller's contract.
        unsafe { std::slice::from_raw_parts(self.0.add(r * width), count * width) }
    }
}

/// A fused gradient kernel that writes its output in blocks of whole rows, with
/// `sibling` the same rows of a sibling node's output, and adding the rows it writes
/// into `sums` (the output's, the sibling's).
trait RowKernel<T: Float> {
    /// Hands `run` the output's rows, width and the kernel that writes a block of
    /// whole rows (first row, the block).
    fn rows_with<R>(
        &self,
        x: &[&Value<T>],
        shape: &[usize],
        sibling: Option<&SiblingRows<T>>,
        sums: &RowSums<T>,
        run: impl FnOnce(usize, usize, &(dyn Fn(usize, &mut [T]) + Sync)) -> R,
    ) -> R;

    /// The output written into `out`, split over the engine's threads (`None`: into a
    /// new array, returned), with `sibling` the same rows of the sibling's output,
    /// and adding the rows into `sums` (each share then whole blocks of rows).
    fn write_rows(
        &self,
        x: &[&Value<T>],
        shape: &[usize],
        sibling: Option<&SiblingRows<T>>,
        sums: &RowSums<T>,
        out: Option<&mut [T]>,
    ) -> Option<ArrayD<T>> {
        let align = sums.align();
        match out {
            Some(out) => {
                self.rows_with(x, shape, sibling, sums, |_, w, f| for_row_blocks(out, w, out.len(), align, f));
                None
            }
            // SAFETY: the kernel writes every element of each row it is handed.
            None => Some(
                self.rows_with(x, shape, sibling, sums, |rows, w, f| unsafe { filled_row_blocks(rows, w, align, f) }),
            ),
        }
    }
}

/// A fused gradient node's output (an LSTM's gate gradients, a GRU's gradient of
/// either projection) written into `out` with its rows added into `sums`, block by
/// block (see `graph/summed.rs`); `false`, having written nothing, for other ops.
pub(crate) fn write_summed<T: Float>(
    op: &Op,
    x: &[&Value<T>],
    shape: &[usize],
    out: &mut [T],
    sums: BlockSums<T>,
) -> bool {
    let sums = RowSums { lead: Some(sums), sibling: None };
    match op {
        Op::LstmCellGrad(rule) if sums_its_rows(op) => rule.write_rows(x, shape, None, &sums, Some(out)),
        Op::GruCellGrad(rule) if sums_its_rows(op) => rule.write_rows(x, shape, None, &sums, Some(out)),
        _ => return false,
    };
    true
}

/// Whether `op` is a fused gradient whose output [`write_summed`] writes with its
/// rows' sums (an LSTM's gate gradients, a GRU's gradient of either projection).
pub(crate) fn sums_its_rows(op: &Op) -> bool {
    match op {
        Op::LstmCellGrad(rule) => rule.of == LstmGradOf::Gates,
        Op::GruCellGrad(rule) => rule.of != GruGradOf::State,
        _ => false,
    }
}

/// Runs `kernel` (the lead node, output `shape`) writing `lead` (`None`: a new array,
/// returned) and every row of its sibling's `[rows, width]` output: `sib` when given (a
/// placed part; `None` back), else a new array.
fn with_sibling<T: Float>(
    kernel: &impl RowKernel<T>,
    (x, shape): (&[&Value<T>], &[usize]),
    width: usize,
    (lead, sib): (Option<&mut [T]>, Option<&mut [T]>),
    sums: &RowSums<T>,
) -> (Option<ArrayD<T>>, Option<ArrayD<T>>) {
    let run = |lead: Option<&mut [T]>, to: &SiblingRows<T>| kernel.write_rows(x, shape, Some(to), sums, lead);
    if let Some(s) = sib {
        return (run(lead, &SiblingRows(s.as_mut_ptr())), None);
    }
    let mut made = None;
    // SAFETY: the kernel writes every row of the sibling's output, and reads none.
    let own = unsafe { super::fresh::filled(&[shape[0], width], |s| made = run(lead, &SiblingRows(s.as_mut_ptr()))) };
    (made, Some(own))
}

impl LstmCellGrad {
    /// The gate gradients (`self`, of [`LstmGradOf::Gates`]) into `gates` (`None`: a
    /// new array) and the sibling node's cell-state gradient (`dc·f`, the same inputs
    /// and `state_only`) into `cell` (`None`: a new `[B, H]` array), in one pass over
    /// the rows: the gradient reaching `c'` is computed once for both. The values are
    /// the two nodes' own. Each node's rows are also added into its `sums`, if any.
    pub(crate) fn with_cell<T: Float>(
        &self,
        x: &[&Value<T>],
        shape: &[usize],
        (gates, cell): (Option<&mut [T]>, Option<&mut [T]>),
        sums: &RowSums<T>,
    ) -> (Option<ArrayD<T>>, Option<ArrayD<T>>) {
        debug_assert_eq!(self.of, LstmGradOf::Gates);
        with_sibling(self, (x, shape), fin(x, 1).shape()[1], (gates, cell), sums)
    }
}

impl<T: Float> RowKernel<T> for LstmCellGrad {
    /// Hands `run` the output's rows, width and the kernel that writes a block of whole
    /// rows (each row written whole: `dc·f` of the cell, or the four gate blocks; with
    /// `cell`, the gates' and the same rows of the cell's).
    fn rows_with<R>(
        &self,
        x: &[&Value<T>],
        shape: &[usize],
        cell: Option<&SiblingRows<T>>,
        sums: &RowSums<T>,
        run: impl FnOnce(usize, usize, &(dyn Fn(usize, &mut [T]) + Sync)) -> R,
    ) -> R {
        let rows = shape[0];
        let h = fin(x, 1).shape()[1];
        let (out, c) = (flat(fin(x, 0)), Rows::of(fin(x, 1)));
        // The gradient of each row's six blocks: the whole `[B, 6H]` gradient, or the
        // two state blocks with zeros for the taps.
        let (gr, gc) = (flat(fin(x, 2)), if self.state_only { flat(fin(x, 3)) } else { Cow::Borrowed(&[][..]) });
        let (gw, zeros) = if self.state_only { (h, vec![T::zero(); h]) } else { (6 * h, Vec::new()) };
        let one = T::one();
        let w = shape[1];
        run(rows, w, &|r0, res| {
            let (out, cs, gr) = (&out[r0 * 6 * h..], c.rows_from(r0), &gr[r0 * gw..]);
            let gc = if self.state_only { &gc[r0 * h..] } else { &gc[..] };
            let (mut dc, mut tc) = (vec![T::zero(); h], vec![T::zero(); h]);
            crate::simd::vectorized(
                #[inline(always)]
                || {
                    for (k, ((r, o), (cp, g))) in res
                        .chunks_exact_mut(w)
                        .zip(out.chunks_exact(6 * h))
                        .zip(cs.chunks(c.ld).zip(gr.chunks_exact(gw)))
                        .enumerate()
                    {
                        let cp = &cp[..h];
                        let (cn, ig, fg, gg, og) =
                            (&o[h..2 * h], &o[2 * h..3 * h], &o[3 * h..4 * h], &o[4 * h..5 * h], &o[5 * h..]);
                        let (g_h, g_c, g_i, g_f, g_g, g_o) = if self.state_only {
                            let z = &zeros[..];
                            (g, &gc[k * h..(k + 1) * h], z, z, z, z)
                        } else {
                            (&g[..h], &g[h..2 * h], &g[2 * h..3 * h], &g[3 * h..4 * h], &g[4 * h..5 * h], &g[5 * h..])
                        };
                        // dc = g_c + g_h o (1 - tanh²c'), the gradient reaching c' (passes that vectorize).
                        map1(&mut tc, cn, |c| c.tanh_fast());
                        map4(&mut dc, g_c, g_h, og, &tc, |gc, gh, o, t| gc + gh * o * (one - t * t));
                        if self.of == LstmGradOf::Cell {
                            map2(r, &dc, fg, |d, f| d * f);
                            continue;
                        }
                        if let Some(cell) = cell {
                            // SAFETY: row `r0 + k` of the `[B, H]` cell output, written by
                            // this share only (it owns the same rows of the gates').
                            map2(unsafe { cell.row(r0 + k, h) }, &dc, fg, |d, f| d * f);
                        }
                        let (ri, rest) = r.split_at_mut(h);
                        let (rf, rest) = rest.split_at_mut(h);
                        let (rg, ro) = rest.split_at_mut(h);
                        map4(ri, &dc, gg, g_i, ig, |d, g, t, i| (d * g + t) * i * (one - i));
                        map4(rf, &dc, cp, g_f, fg, |d, c, t, f| (d * c + t) * f * (one - f));
                        map4(rg, &dc, ig, g_g, gg, |d, i, t, g| (d * i + t) * (one - g * g));
                        map4(ro, g_h, &tc, g_o, og, |gh, t, go, o| (gh * t + go) * o * (one - o));
                    }
                    let count = res.len() / w.max(1);
                    // SAFETY: the share's rows are whole blocks from `r0` (`sums.align()`),
                    // and it wrote them all (the cell's through its sibling rows).
                    unsafe {
                        if let Some(s) = &sums.lead {
                            s.add_rows((r0, count), res, w, (0, w), w);
                        }
                        if let (Some(s), Some(cell)) = (&sums.sibling, cell) {
                            s.add_rows((r0, count), cell.rows(r0, count, h), h, (0, h), h);
                        }
                    }
                },
            );
        })
    }
}

/// [`LstmCellGrad`] in primitive ops (what its own gradient differentiates). `grad` is
/// as the node's: the output's gradient `[g]` (blocks `h' | c' | i | f | g | o`), or
/// the state blocks' `[g_h, g_c]` alone (`state_only`: no gradient for the taps).
fn lstm_grad_primitive<T: Float>(
    g: &mut Graph<T>,
    of: LstmGradOf,
    out: NodeId,
    c: NodeId,
    grad: &[NodeId],
) -> Result<NodeId> {
    let h = g.shape(c)?[1];
    let blk = |g: &mut Graph<T>, x: NodeId, k: usize| g.narrow(x, 1, k * h, h);
    let (cn, ig, fg, gg, og) = (blk(g, out, 1)?, blk(g, out, 2)?, blk(g, out, 3)?, blk(g, out, 4)?, blk(g, out, 5)?);
    let (g_h, g_c, taps) = match *grad {
        [whole] => (blk(g, whole, 0)?, blk(g, whole, 1)?, Some(whole)),
        [g_h, g_c] => (g_h, g_c, None),
        _ => unreachable!("one gradient or two, checked by the node's shape rule"),
    };
    let tc = g.tanh(cn)?;
    let dc = {
        let t = g.mul(g_h, og)?;
        let t = g.activation_grad(ActivationKind::Tanh, tc, t)?;
        g.add(g_c, t)?
    };
    if of == LstmGradOf::Cell {
        return g.mul(dc, fg);
    }
    // (a b + the tap's own gradient) through the gate's activation.
    let term = |g: &mut Graph<T>, a: NodeId, b: NodeId, k: usize, act: NodeId, kind| -> Result<NodeId> {
        let mut t = g.mul(a, b)?;
        if let Some(gr) = taps {
            let tap = blk(g, gr, k)?;
            t = g.add(t, tap)?;
        }
        g.activation_grad(kind, act, t)
    };
    let di = term(g, dc, gg, 2, ig, ActivationKind::Sigmoid)?;
    let df = term(g, dc, c, 3, fg, ActivationKind::Sigmoid)?;
    let dg = term(g, dc, ig, 4, gg, ActivationKind::Tanh)?;
    let d_o = term(g, g_h, tc, 5, og, ActivationKind::Sigmoid)?;
    g.concat(&[di, df, dg, d_o], 1)
}

// ----- GRU -----------------------------------------------------------------------------

/// One GRU step in PyTorch's formulation (gate order r, z, n), inputs `xp [B, 3H]`
/// (`x W_ihᵀ + b_ih`), `hp [B, 3H]` (`h W_hhᵀ + b_hh`) and `h [B, H]`. The output is
/// `[B, 4H]`: blocks `h' | r | z | n` where `r, z = σ(xp + hp)`,
/// `n = tanh(xp_n + r hp_n)`, `h' = (1 - z) n + z h`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GruCell;

/// Which input a [`GruCellGrad`] node is the gradient of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GruGradOf {
    /// The projected input `xp` (`[B, 3H]`).
    Input,
    /// The projected state `hp` (`[B, 3H]`).
    Hidden,
    /// The previous state `h` (`[B, H]`), through the interpolation only.
    State,
}

/// The gradient of a [`GruCell`] step: inputs `out [B, 4H]`, `hp [B, 3H]`, `h [B, H]`
/// (the step's output, projected state and previous state) and `g [B, 4H]` (the
/// gradient of `out`); when `state_only`, `g_h [B, H]` instead of `g`: the gradient
/// of the `h'` block alone, the gate taps having received none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GruCellGrad {
    /// Which input's gradient.
    pub of: GruGradOf,
    /// Whether the gradient is the `h'` block's only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub state_only: bool,
}

impl<T: Float> Rule<T> for GruCell {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, 3)?;
        let (b, h) = rows_and_hidden(s, 3, "the gates")?;
        check_2d(s, 1, b, 3 * h)?;
        check_2d(s, 2, b, h)?;
        Ok(Shape::from_slice(&[b, 4 * h]))
    }

    fn forward(&self, x: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
        Ok(gru_forward(x, None, shape, &[]))
    }

    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        gru_backward(g, b.out, b.inputs, b.needs, b.grad, false)
    }

    /// `h'`.
    fn state_blocks(&self) -> usize {
        1
    }

    fn backward_from_states(&self, g: &mut Graph<T>, b: &Back, states: &[NodeId]) -> Result<Grads> {
        gru_backward(g, b.out, b.inputs, b.needs, states[0], true)
    }
}

/// A [`GruCell`] step's output; with `bias` (`[3H]`), of the projected input plus the
/// bias (the sum rounded first, as a separate `add` would).
fn gru_forward<T: Float>(x: &[&Value<T>], bias: Option<&[T]>, shape: &[usize], tees: &[Tee<T>]) -> ArrayD<T> {
    let (rows, h) = (shape[0], shape[1] / 4);
    let (xp, hp, hs) = (flat(fin(x, 0)), flat(fin(x, 1)), Rows::of(fin(x, 2)));
    // SAFETY: every row's four blocks are written (`r`, `z`, `n`, then `h'`), each read only
    // after it is written.
    unsafe {
        filled_rows(rows, 4 * h, &|r0, out| {
            let (xp, hp, hv) = (&xp[r0 * 3 * h..], &hp[r0 * 3 * h..], hs.rows_from(r0));
            crate::simd::vectorized(
                #[inline(always)]
                || {
                    for (q, ((o, (zx, zh)), hv)) in out
                        .chunks_exact_mut(4 * h)
                        .zip(xp.chunks_exact(3 * h).zip(hp.chunks_exact(3 * h)))
                        .zip(hv.chunks(hs.ld))
                        .enumerate()
                    {
                        let hv = &hv[..h];
                        // Each pass reads and writes few enough slices to vectorize.
                        let (oh, rest) = o.split_at_mut(h);
                        let (or, rest) = rest.split_at_mut(h);
                        let (oz, on) = rest.split_at_mut(h);
                        if let Some(v) = bias {
                            map3(or, &zx[..h], &v[..h], &zh[..h], |a, v, b| sigmoid((a + v) + b));
                            map3(oz, &zx[h..2 * h], &v[h..2 * h], &zh[h..2 * h], |a, v, b| sigmoid((a + v) + b));
                            let (xn, vn, hn) = (&zx[2 * h..], &v[2 * h..], &zh[2 * h..]);
                            map4(on, xn, vn, or, hn, |x, v, r, hn| ((x + v) + r * hn).tanh_fast());
                        } else {
                            map2(or, &zx[..h], &zh[..h], |a, b| sigmoid(a + b));
                            map2(oz, &zx[h..2 * h], &zh[h..2 * h], |a, b| sigmoid(a + b));
                            map3(on, &zx[2 * h..], or, &zh[2 * h..], |x, r, hn| (x + r * hn).tanh_fast());
                        }
                        map3(oh, oz, on, hv, |z, n, hv| (T::one() - z) * n + z * hv);
                        for t in tees {
                            t.write(r0 + q, oh);
                        }
                    }
                },
            );
        })
    }
}

/// A fused step's output, with `bias` added to its projected input (the sum rounded
/// first, as a separate `add` would: a lean replay's step reading the projection of
/// every step without the bias added), and its `h'` block also written into the
/// `tees` (each the step's `[B, H]` rows, row-major).
pub(crate) fn step_teed<T: Float>(
    op: &Op,
    x: &[&Value<T>],
    bias: Option<&Value<T>>,
    shape: &[usize],
    tees: &[Tee<T>],
) -> FResult<ArrayD<T>> {
    let v = bias.map(|b| flat(fin(&[b], 0)));
    let (h, gates) = match op {
        Op::LstmCell(_) => (shape[1] / 6, 4),
        Op::GruCell(_) => (shape[1] / 4, 3),
        _ => return Err(Fail::Invalid(format!("{} is not a fused step", op.name()))),
    };
    if let Some(v) = v.as_ref().filter(|v| v.len() != gates * h) {
        return Err(Fail::Mismatch(shape_of(&[v.len()]), shape_of(&[gates * h])));
    }
    if let Some(t) = tees.iter().find(|t| t.len != shape[0] * h) {
        return Err(Fail::Mismatch(shape_of(&[t.len]), shape_of(&[shape[0], h])));
    }
    Ok(match op {
        Op::LstmCell(_) => lstm_forward(x, v.as_deref(), shape, tees),
        _ => gru_forward(x, v.as_deref(), shape, tees),
    })
}

/// The gradient nodes of a [`GruCell`] step, from the gradient of its whole output or,
/// `state_only`, of its `h'` block.
fn gru_backward<T: Float>(
    g: &mut Graph<T>,
    out: NodeId,
    inputs: &[NodeId],
    needs: &[bool],
    grad: NodeId,
    state_only: bool,
) -> Result<Grads> {
    let ins = [out, inputs[1], inputs[2], grad];
    let mut one = |k: usize, of: GruGradOf| -> Result<Option<NodeId>> {
        if !needs[k] {
            return Ok(None);
        }
        g.push(Op::GruCellGrad(GruCellGrad { of, state_only }), &ins).map(Some)
    };
    let dx = one(0, GruGradOf::Input)?;
    let dhp = one(1, GruGradOf::Hidden)?;
    let dh = one(2, GruGradOf::State)?;
    grads([dx, dhp, dh])
}

impl<T: Float> Rule<T> for GruCellGrad {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, 4)?;
        let (b, h) = rows_and_hidden(s, 4, "a GRU step's output")?;
        check_2d(s, 1, b, 3 * h)?;
        check_2d(s, 2, b, h)?;
        check_2d(s, 3, b, if self.state_only { h } else { 4 * h })?;
        Ok(Shape::from_slice(&[b, if self.of == GruGradOf::State { h } else { 3 * h }]))
    }

    fn forward(&self, x: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
        Ok(self.write_rows(x, shape, None, &RowSums::NONE, None).expect("a new array when given no slice"))
    }

    fn forward_into(&self, x: &[&Value<T>], shape: &[usize], out: &mut [T]) -> bool {
        self.write_rows(x, shape, None, &RowSums::NONE, Some(out));
        true
    }

    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let (of, state_only) = (self.of, self.state_only);
        expanded_vjp(g, b, |g, x| gru_grad_primitive(g, of, x[0], x[1], x[2], x[3], state_only))
    }
}

impl GruCellGrad {
    /// The gradient of the projected input (`self`, of [`GruGradOf::Input`]) into
    /// `input` (`None`: a new array) and the sibling node's gradient of the projected
    /// state (of [`GruGradOf::Hidden`], the same inputs and `state_only`) into `hidden`
    /// (`None`: a new array), in one pass over the rows: the two differ only in the
    /// last block, scaled by the reset gate. The values are the two nodes' own. Each
    /// node's rows are also added into its `sums`, if any.
    pub(crate) fn with_hidden<T: Float>(
        &self,
        x: &[&Value<T>],
        shape: &[usize],
        (input, hidden): (Option<&mut [T]>, Option<&mut [T]>),
        sums: &RowSums<T>,
    ) -> (Option<ArrayD<T>>, Option<ArrayD<T>>) {
        debug_assert_eq!(self.of, GruGradOf::Input);
        with_sibling(self, (x, shape), shape[1], (input, hidden), sums)
    }
}

impl<T: Float> RowKernel<T> for GruCellGrad {
    /// Hands `run` the output's rows, width and the kernel that writes a block of whole
    /// rows: `g_h·z` (of the state), or the three gate blocks (`dn` first, read by `dr`
    /// and then scaled in place for the hidden product); with `hidden`, also the hidden
    /// product's rows there (the input's, `dn` scaled).
    fn rows_with<R>(
        &self,
        x: &[&Value<T>],
        shape: &[usize],
        hidden: Option<&SiblingRows<T>>,
        sums: &RowSums<T>,
        run: impl FnOnce(usize, usize, &(dyn Fn(usize, &mut [T]) + Sync)) -> R,
    ) -> R {
        let rows = shape[0];
        let h = fin(x, 2).shape()[1];
        let (out, hp, hs, gr) = (flat(fin(x, 0)), flat(fin(x, 1)), Rows::of(fin(x, 2)), flat(fin(x, 3)));
        let one = T::one();
        let w = shape[1];
        // Without taps' gradients (`state_only`) their blocks read as zeros.
        let (gw, zeros) = if self.state_only { (h, vec![T::zero(); h]) } else { (4 * h, Vec::new()) };
        run(rows, w, &|r0, res| {
            let (out, hp, hv, gr) = (&out[r0 * 4 * h..], &hp[r0 * 3 * h..], hs.rows_from(r0), &gr[r0 * gw..]);
            crate::simd::vectorized(
                #[inline(always)]
                || {
                    for (k, (r, ((o, zh), (hv, g)))) in res
                        .chunks_exact_mut(w)
                        .zip(
                            out.chunks_exact(4 * h)
                                .zip(hp.chunks_exact(3 * h))
                                .zip(hv.chunks(hs.ld).zip(gr.chunks_exact(gw))),
                        )
                        .enumerate()
                    {
                        let hv = &hv[..h];
                        let (rg, zg, ng) = (&o[h..2 * h], &o[2 * h..3 * h], &o[3 * h..]);
                        let (g_h, g_r, g_z, g_n) = if self.state_only {
                            (g, &zeros[..], &zeros[..], &zeros[..])
                        } else {
                            (&g[..h], &g[h..2 * h], &g[2 * h..3 * h], &g[3 * h..])
                        };
                        if self.of == GruGradOf::State {
                            map2(r, g_h, zg, |g, z| g * z);
                            continue;
                        }
                        // Passes that vectorize: dn first (dr reads it), then dr and dz.
                        let (dr, rest) = r.split_at_mut(h);
                        let (dz, dn) = rest.split_at_mut(h);
                        map4(dn, g_h, zg, g_n, ng, |gh, z, gn, n| (gh * (one - z) + gn) * (one - n * n));
                        map4(dr, dn, &zh[2 * h..], g_r, rg, |dn, hn, gr, r| (dn * hn + gr) * r * (one - r));
                        map5(dz, g_h, hv, ng, g_z, zg, |gh, hv, n, gz, z| (gh * (hv - n) + gz) * z * (one - z));
                        if self.of == GruGradOf::Hidden {
                            for (d, &r) in dn.iter_mut().zip(rg) {
                                *d *= r;
                            }
                        }
                        if let Some(hidden) = hidden {
                            // SAFETY: row `r0 + k` of the hidden product's `[B, 3H]`
                            // gradient, written by this share only (it owns the same
                            // rows of the input's).
                            let to = unsafe { hidden.row(r0 + k, 3 * h) };
                            let (to_rz, to_n) = to.split_at_mut(2 * h);
                            to_rz.copy_from_slice(&r[..2 * h]);
                            map2(to_n, &r[2 * h..], rg, |d, r| d * r);
                        }
                    }
                    let count = res.len() / w.max(1);
                    // SAFETY: the share's rows are whole blocks from `r0` (`sums.align()`),
                    // and it wrote them all (the hidden product's through its sibling rows).
                    unsafe {
                        if let Some(s) = &sums.lead {
                            s.add_rows((r0, count), res, w, (0, w), w);
                        }
                        if let (Some(s), Some(hidden)) = (&sums.sibling, hidden) {
                            let rows = hidden.rows(r0, count, w);
                            match &sums.lead {
                                // The reset and update blocks are the input's: so are their sums.
                                Some(lead) => {
                                    s.add_rows((r0, count), rows, w, (2 * h, h), w);
                                    s.copy_from(lead, (r0, count), w, 2 * h);
                                }
                                None => s.add_rows((r0, count), rows, w, (0, w), w),
                            }
                        }
                    }
                },
            );
        })
    }
}

/// [`GruCellGrad`] in primitive ops: `gr` is the output's gradient, or the `h'`
/// block's alone (`state_only`, no taps' gradients).
fn gru_grad_primitive<T: Float>(
    g: &mut Graph<T>,
    of: GruGradOf,
    out: NodeId,
    hp: NodeId,
    hs: NodeId,
    gr: NodeId,
    state_only: bool,
) -> Result<NodeId> {
    let h = g.shape(hs)?[1];
    let blk = |g: &mut Graph<T>, x: NodeId, k: usize| g.narrow(x, 1, k * h, h);
    let g_h = if state_only { gr } else { blk(g, gr, 0)? };
    // `d + the tap's own gradient` (nothing to add without taps).
    let with_tap = |g: &mut Graph<T>, d: NodeId, k: usize| -> Result<NodeId> {
        if state_only {
            return Ok(d);
        }
        let tap = blk(g, gr, k)?;
        g.add(d, tap)
    };
    let (r, z, n) = (blk(g, out, 1)?, blk(g, out, 2)?, blk(g, out, 3)?);
    if of == GruGradOf::State {
        return g.mul(g_h, z);
    }
    let dz = {
        let d = g.sub(hs, n)?;
        let d = g.mul(g_h, d)?;
        let d = with_tap(g, d, 2)?;
        g.activation_grad(ActivationKind::Sigmoid, z, d)?
    };
    let dn = {
        let one_z = g.rsub_scalar(z, 1.0)?;
        let d = g.mul(g_h, one_z)?;
        let d = with_tap(g, d, 3)?;
        g.activation_grad(ActivationKind::Tanh, n, d)?
    };
    let dr = {
        let hn = blk(g, hp, 2)?;
        let d = g.mul(dn, hn)?;
        let d = with_tap(g, d, 1)?;
        g.activation_grad(ActivationKind::Sigmoid, r, d)?
    };
    let last = if of == GruGradOf::Hidden { g.mul(dn, r)? } else { dn };
    g.concat(&[dr, dz, last], 1)
}

// ----- activations ---------------------------------------------------------------------

/// An activation whose derivative is written in terms of its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationKind {
    /// `y = tanh(x)`: `dy/dx = 1 - y²`.
    Tanh,
    /// `y = σ(x)`: `dy/dx = y (1 - y)`.
    Sigmoid,
}

impl ActivationKind {
    /// `g ⊙ dy/dx` for one element, from the activation's output `y`: the one formula
    /// every path computing an [`ActivationGrad`] uses, so they agree bit for bit.
    #[inline(always)]
    pub(crate) fn grad<T: Float>(self, y: T, g: T) -> T {
        match self {
            ActivationKind::Tanh => g * (T::one() - y * y),
            ActivationKind::Sigmoid => g * y * (T::one() - y),
        }
    }
}

/// The gradient through an activation from its output: inputs `y` (the activation's
/// output) and `g` (the gradient of `y`), output `g ⊙ dy/dx` in one pass.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActivationGrad {
    /// Which activation.
    pub kind: ActivationKind,
}

impl<T: Float> Rule<T> for ActivationGrad {
    fn infer(&self, s: &[&[usize]]) -> FResult<Shape> {
        arity(s, 2)?;
        if s[0] != s[1] {
            return Err(Fail::Mismatch(s[0].iter().copied().collect(), s[1].iter().copied().collect()));
        }
        Ok(s[0].iter().copied().collect())
    }

    fn forward(&self, x: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>> {
        let (y, g) = (flat(fin(x, 0)), flat(fin(x, 1)));
        // SAFETY: `activation_grad_into` writes every element and reads none.
        Ok(unsafe { super::fresh::filled(shape, |v| activation_grad_into(self.kind, shape, v, &y, &g)) })
    }

    fn forward_into(&self, x: &[&Value<T>], shape: &[usize], out: &mut [T]) -> bool {
        let (y, g) = (flat(fin(x, 0)), flat(fin(x, 1)));
        activation_grad_into(self.kind, shape, out, &y, &g);
        true
    }

    fn forward_in_place(&self, acc: &mut ArrayD<T>, pos: usize, x: &[&Value<T>]) -> bool {
        let other = fin(x, 1 - pos);
        if other.shape() != acc.shape() {
            return false;
        }
        // acc holds y (pos 0) or g (pos 1); the other input is the other one.
        // (Matched outside the passes, so each loop is one kind's.)
        use ActivationKind::{Sigmoid, Tanh};
        match (self.kind, pos) {
            (Tanh, 0) => combine_in_place(acc, &other, |y, g| Tanh.grad(y, g)),
            (Tanh, _) => combine_in_place(acc, &other, |g, y| Tanh.grad(y, g)),
            (Sigmoid, 0) => combine_in_place(acc, &other, |y, g| Sigmoid.grad(y, g)),
            (Sigmoid, _) => combine_in_place(acc, &other, |g, y| Sigmoid.grad(y, g)),
        }
        true
    }

    /// With `u` the gradient of the output: d/dg = `u ⊙ dy/dx` (this op again), and
    /// d/dy = `-2 u g y` (tanh) or `u g (1 - 2y)` (sigmoid).
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads> {
        let (y, gy, u) = (b.inputs[0], b.inputs[1], b.grad);
        let dy = if b.needs[0] {
            let ug = g.mul(u, gy)?;
            Some(match self.kind {
                ActivationKind::Tanh => {
                    let t = g.mul(ug, y)?;
                    g.affine(t, -2.0, 0.0)?
                }
                ActivationKind::Sigmoid => {
                    let t = g.affine(y, -2.0, 1.0)?;
                    g.mul(ug, t)?
                }
            })
        } else {
            None
        };
        let dg = if b.needs[1] { Some(g.activation_grad(self.kind, y, u)?) } else { None };
        grads([dy, dg])
    }
}

/// `out = g ⊙ dy/dx` from the activation's output `y` (all of `shape`), one
/// vectorized pass, its rows split over the engine's threads when large.
fn activation_grad_into<T: Float>(kind: ActivationKind, shape: &[usize], out: &mut [T], y: &[T], g: &[T]) {
    let w = shape.last().copied().unwrap_or(1).max(1);
    for_rows(out, w, &|r0, blk| {
        let (y, g) = (&y[r0 * w..r0 * w + blk.len()], &g[r0 * w..r0 * w + blk.len()]);
        crate::simd::vectorized(
            #[inline(always)]
            || match kind {
                ActivationKind::Tanh => map2(blk, y, g, |y, g| ActivationKind::Tanh.grad(y, g)),
                ActivationKind::Sigmoid => map2(blk, y, g, |y, g| ActivationKind::Sigmoid.grad(y, g)),
            },
        );
    });
}

// ----- second order by expansion -------------------------------------------------------

/// The backward rule of a fused gradient node: the node's formula re-recorded in
/// primitive ops over the same inputs, then differentiated with the incoming gradient.
fn expanded_vjp<T: Float>(
    g: &mut Graph<T>,
    b: &Back,
    primitive: impl FnOnce(&mut Graph<T>, &[NodeId]) -> Result<NodeId>,
) -> Result<Grads> {
    let barrier = g.len();
    let expanded = {
        let mut g = g.scope("expanded");
        primitive(&mut *g, b.inputs)?
    };
    let wanted: Vec<NodeId> = b.inputs.iter().zip(b.needs).filter(|(_, &n)| n).map(|(&i, _)| i).collect();
    let mut got = g.partial_vjp(expanded, b.grad, &wanted, barrier)?.into_iter();
    Ok(b.needs.iter().map(|&n| if n { got.next() } else { None }).collect())
}

impl<T: Float> Graph<T> {
    /// One fused LSTM step (see [`LstmCell`]): `xp`, `hh` `[B, 4H]`, `c` `[B, H]` →
    /// `[B, 6H]` holding `h' | c' | i | f | g | o`.
    ///
    /// ```
    /// use ndarray::Array2;
    /// use unrolled_autograd::Graph;
    /// # fn main() -> unrolled_autograd::Result<()> {
    /// let mut g = Graph::<f64>::new();
    /// let xp = g.input(Array2::zeros((2, 12)).into_dyn());
    /// let hh = g.input(Array2::zeros((2, 12)).into_dyn());
    /// let c = g.input(Array2::ones((2, 3)).into_dyn());
    /// let out = g.lstm_cell(xp, hh, c)?;
    /// assert_eq!(g.shape(out)?, &[2, 18]);
    /// assert_eq!(g.value(out)?[[0, 3]], 0.5); // c' = σ(0)·1 + σ(0)·tanh(0)
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] or [`crate::Error::ShapeMismatch`] for shapes that do not fit.
    pub fn lstm_cell(&mut self, xp: NodeId, hh: NodeId, c: NodeId) -> Result<NodeId> {
        self.push(Op::LstmCell(LstmCell), &[xp, hh, c])
    }

    /// One fused GRU step (see [`GruCell`]): `xp`, `hp` `[B, 3H]`, `h` `[B, H]` →
    /// `[B, 4H]` holding `h' | r | z | n`.
    ///
    /// # Errors
    /// As [`Graph::lstm_cell`].
    pub fn gru_cell(&mut self, xp: NodeId, hp: NodeId, h: NodeId) -> Result<NodeId> {
        self.push(Op::GruCell(GruCell), &[xp, hp, h])
    }

    /// `g ⊙ dy/dx` for the activation `kind` with output `y` (see [`ActivationGrad`]).
    ///
    /// # Errors
    /// [`crate::Error::ShapeMismatch`] if `y` and `g` differ in shape.
    pub fn activation_grad(&mut self, kind: ActivationKind, y: NodeId, g: NodeId) -> Result<NodeId> {
        self.push(Op::ActivationGrad(ActivationGrad { kind }), &[y, g])
    }
}
