//! Sequence modes as templates: many-to-one, one-to-many, encoder-decoder.
//! (Many-to-many is [`unroll`](super::unroll) or a [`Recurrent`](super::Recurrent)
//! module with a readout applied at every step.)

use ndarray::{ArrayD, IxDyn};
use unrolled_autograd::{Error, Float, Graph, NodeId, ParamStore, Result};

use super::unroll::{unroll, unroll_with, UnrollOptions, Unrolled};
use crate::cell::{Cell, State, Step};

/// How a many-to-one model summarizes its outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pool {
    /// The output at each sequence's own last step.
    Last,
    /// The mean over each sequence's steps.
    Mean,
    /// The elementwise max over each sequence's steps.
    Max,
}

fn lengths_or_full<T: Float>(
    g: &Graph<T>,
    lengths: Option<&[usize]>,
    steps: usize,
    batch: usize,
) -> Result<Vec<usize>> {
    let l = lengths.map_or_else(|| vec![steps; batch], <[usize]>::to_vec);
    if l.len() != batch || l.iter().any(|&n| n == 0 || n > steps) {
        return Err(Error::InvalidInput {
            op: "many_to_one",
            scope: g.scope_path(),
            reason: format!("lengths {l:?} do not fit a batch of {batch} and {steps} steps"),
            shapes: Vec::new(),
        });
    }
    Ok(l)
}

/// One summary `[B, F]` of per-step outputs `[B, F]` (in time order), for a batch
/// whose sequences have the given lengths (all `T` when `None`).
///
/// # Errors
/// [`Error::InvalidInput`] for no outputs or lengths that do not fit.
pub fn many_to_one<T: Float>(
    g: &mut Graph<T>,
    outputs: &[NodeId],
    lengths: Option<&[usize]>,
    pool: Pool,
) -> Result<NodeId> {
    let first = *outputs.first().ok_or_else(|| Error::InvalidInput {
        op: "many_to_one",
        scope: g.scope_path(),
        reason: "no outputs".into(),
        shapes: Vec::new(),
    })?;
    let batch = *g.shape(first)?.first().ok_or_else(|| Error::InvalidInput {
        op: "many_to_one",
        scope: g.scope_path(),
        reason: "outputs need a batch axis".into(),
        shapes: Vec::new(),
    })?;
    let lens = lengths_or_full(g, lengths, outputs.len(), batch)?;
    let mut g = g.scope("pool");
    let mask = |g: &mut Graph<T>, f: &dyn Fn(usize, usize) -> bool, t: usize| {
        let v = lens.iter().map(|&l| if f(t, l) { T::one() } else { T::zero() }).collect();
        g.constant(ArrayD::from_shape_vec(IxDyn(&[batch, 1]), v).expect("sized"))
    };
    match pool {
        Pool::Last if lengths.is_none() => Ok(*outputs.last().expect("non-empty")),
        Pool::Last | Pool::Mean => {
            let mut acc: Option<NodeId> = None;
            for (t, &o) in outputs.iter().enumerate() {
                let m = if pool == Pool::Last {
                    mask(&mut g, &|t, l| t + 1 == l, t)
                } else {
                    mask(&mut g, &|t, l| t < l, t)
                };
                let term = g.mul(o, m)?;
                acc = Some(match acc {
                    None => term,
                    Some(a) => g.add(a, term)?,
                });
            }
            let acc = acc.expect("non-empty");
            if pool == Pool::Last {
                return Ok(acc);
            }
            let inv = lens.iter().map(|&l| T::one() / T::of(l as f64)).collect();
            let inv = g.constant(ArrayD::from_shape_vec(IxDyn(&[batch, 1]), inv).expect("sized"));
            g.mul(acc, inv)
        }
        Pool::Max => {
            let neg = g.scalar(f64::NEG_INFINITY);
            let mut masked = Vec::with_capacity(outputs.len());
            for (t, &o) in outputs.iter().enumerate() {
                let m = mask(&mut g, &|t, l| t < l, t);
                masked.push(g.where_(m, o, neg)?);
            }
            let s = g.stack(&masked, 0)?;
            g.max(s, &[0], false)
        }
    }
}

/// One-to-many: from one input `x1 [B, I]`, run `steps` steps where the readout
/// `y_t = readout(g, h_t)` (`[B, I]`, under the scope `t{t}/readout`) is fed back as
/// the next input and differentiated through. Starts from `init` (zeros when `None`).
/// Returns the readouts and the run.
///
/// # Errors
/// [`Error::InvalidInput`] for zero steps; the cell's and the readout's errors.
pub fn one_to_many<T: Float, C: Cell<T> + ?Sized>(
    cell: &C,
    g: &mut Graph<T>,
    p: &ParamStore<T>,
    x1: NodeId,
    init: Option<State>,
    steps: usize,
    mut readout: impl FnMut(&mut Graph<T>, NodeId) -> Result<NodeId>,
) -> Result<(Vec<NodeId>, Unrolled)> {
    if steps == 0 {
        return Err(Error::InvalidInput {
            op: "one_to_many",
            scope: g.scope_path(),
            reason: "zero steps".into(),
            shapes: Vec::new(),
        });
    }
    let batch = g.shape(x1)?[0];
    let mut state = match init {
        Some(s) => {
            cell.check_state(g, &s, batch)?;
            s
        }
        None => cell.zero_state(g, batch),
    };
    let (mut ys, mut outputs, mut states, mut taps) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut x = x1;
    for t in 0..steps {
        let mut g = g.step(t);
        let Step { output, state: next, taps: tp } = cell.step(&mut g, p, x, &state)?;
        let y = readout(&mut g.scope("readout"), output)?;
        ys.push(y);
        outputs.push(output);
        states.push(next.clone());
        taps.push(tp);
        state = next;
        x = y;
    }
    Ok((ys, Unrolled { outputs, states, taps, final_state: state }))
}

/// An encoder-decoder (seq2seq): the encoder's final state starts the decoder.
#[derive(Clone, Debug, PartialEq)]
pub struct Seq2Seq<E, D> {
    /// The encoder cell (scope `encoder`).
    pub encoder: E,
    /// The decoder cell (scope `decoder`); its state has the encoder's shape.
    pub decoder: D,
}

/// What an encoder-decoder produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seq2SeqOutput {
    /// The encoder's run.
    pub encoder: Unrolled,
    /// The decoder's run.
    pub decoder: Unrolled,
}

impl<E, D> Seq2Seq<E, D> {
    /// Encodes `source` (per-step inputs) under the scope `encoder`.
    ///
    /// # Errors
    /// The encoder's errors.
    pub fn encode<T: Float>(
        &self,
        g: &mut Graph<T>,
        p: &ParamStore<T>,
        source: &[NodeId],
        lengths: Option<&[usize]>,
    ) -> Result<Unrolled>
    where
        E: Cell<T>,
    {
        unroll(&self.encoder, &mut g.scope("encoder"), p, source, None, UnrollOptions { reverse: false, lengths })
    }

    /// Teacher forcing: encodes `source`, then decodes the given decoder inputs
    /// (typically the target shifted right, behind a start token) under `decoder`.
    ///
    /// # Errors
    /// The cells' errors.
    pub fn teacher_forced<T: Float>(
        &self,
        g: &mut Graph<T>,
        p: &ParamStore<T>,
        source: &[NodeId],
        lengths: Option<&[usize]>,
        decoder_inputs: &[NodeId],
    ) -> Result<Seq2SeqOutput>
    where
        E: Cell<T>,
        D: Cell<T>,
    {
        let encoder = self.encode(g, p, source, lengths)?;
        let init = encoder.final_state.clone();
        let decoder =
            unroll(&self.decoder, &mut g.scope("decoder"), p, decoder_inputs, Some(init), UnrollOptions::default())?;
        Ok(Seq2SeqOutput { encoder, decoder })
    }

    /// Free running from an encoding: decodes `steps` steps from the input `first`,
    /// where `next(g, t, output)` makes the input of step `t + 1` from step `t`'s
    /// output (a readout and an embedding of its argmax, say), under `decoder`.
    ///
    /// # Errors
    /// The decoder's and `next`'s errors.
    pub fn generate<T: Float>(
        &self,
        g: &mut Graph<T>,
        p: &ParamStore<T>,
        encoded: &Unrolled,
        first: NodeId,
        steps: usize,
        mut next: impl FnMut(&mut Graph<T>, usize, NodeId) -> Result<NodeId>,
    ) -> Result<Unrolled>
    where
        D: Cell<T>,
    {
        let init = encoded.final_state.clone();
        unroll_with(&self.decoder, &mut g.scope("decoder"), p, steps, init, |g, t, prev| match prev {
            None => Ok(first),
            Some(out) => next(g, t - 1, out),
        })
    }
}
