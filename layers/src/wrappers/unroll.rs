//! Unrolling a cell over a sequence: one `t{t}` scope per step.

use ndarray::{ArrayD, IxDyn};
use smallvec::SmallVec;
use unrolled_autograd::{Error, Float, Graph, NodeId, ParamStore, Result};

use crate::cell::{Cell, State};

/// A cell unrolled over a sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unrolled {
    /// The output of every step, in time order (`outputs[t]` is step `t`, whichever
    /// way time ran). Past a sequence's end its outputs are zero.
    pub outputs: Vec<NodeId>,
    /// The state after every step, in time order.
    pub states: Vec<State>,
    /// The taps of every step ([`Cell::tap_names`]), in time order.
    pub taps: Vec<SmallVec<[NodeId; 4]>>,
    /// The final state: after the last step run (for a reversed run, after `t = 0`);
    /// with lengths, each sequence's state at its own last step.
    pub final_state: State,
}

/// How to unroll.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnrollOptions<'a> {
    /// Run time backward, from `t = T-1` to `0` (the reverse half of a bidirectional layer).
    pub reverse: bool,
    /// The length of each sequence of the batch (`1..=T` each), as PyTorch's packed sequences.
    pub lengths: Option<&'a [usize]>,
}

/// Splits a sequence-major `[T, B, ...]` node into `T` nodes `[B, ...]`, step `t`
/// recorded under the scope `t{t}`.
///
/// # Errors
/// [`Error::InvalidInput`] for a rank below 1 or `T = 0`.
pub fn split_steps<T: Float>(g: &mut Graph<T>, x: NodeId) -> Result<Vec<NodeId>> {
    let shape = g.shape(x)?.to_vec();
    if shape.is_empty() || shape[0] == 0 {
        return Err(Error::InvalidInput {
            op: "split_steps",
            scope: g.scope_path(),
            reason: "a sequence needs at least one step on axis 0".into(),
            shapes: vec![shape],
        });
    }
    (0..shape[0]).map(|t| g.step(t).select(x, 0, t)).collect()
}

/// The `[T, ...]` tensor whose consecutive slices the steps are (as [`split_steps`]
/// makes them), read off the recorded graph, so it can be used whole.
fn sliced_from<T: Float>(g: &Graph<T>, inputs: &[NodeId]) -> Option<NodeId> {
    use unrolled_autograd::Op;
    let mut source = None;
    for (t, &x) in inputs.iter().enumerate() {
        let n = g.node(x).ok()?;
        let Op::Select(sel) = n.op() else { return None };
        let src = n.inputs()[0];
        if sel.axis != 0 || sel.index != t || source.is_some_and(|s| s != src) {
            return None;
        }
        source = Some(src);
    }
    let src = source?;
    (g.shape(src).ok()?.first() == Some(&inputs.len())).then_some(src)
}

fn invalid<T: Float>(g: &Graph<T>, reason: String) -> Error {
    Error::InvalidInput { op: "unroll", scope: g.scope_path(), reason, shapes: Vec::new() }
}

/// Per step, a `[B, 1, …]` mask of the sequences still running (`None` when all run to T).
fn masks<T: Float>(
    g: &mut Graph<T>,
    lengths: Option<&[usize]>,
    steps: usize,
    batch: usize,
    rank: usize,
) -> Result<Vec<Option<NodeId>>> {
    let Some(lengths) = lengths else {
        return Ok(vec![None; steps]);
    };
    if lengths.len() != batch {
        return Err(invalid(g, format!("{} lengths for a batch of {batch}", lengths.len())));
    }
    if let Some(&l) = lengths.iter().find(|&&l| l == 0 || l > steps) {
        return Err(invalid(g, format!("length {l} is not in 1..={steps}")));
    }
    let mut shape = vec![1; rank.max(1)];
    shape[0] = batch;
    (0..steps)
        .map(|t| {
            if lengths.iter().all(|&l| t < l) {
                return Ok(None);
            }
            let v = lengths.iter().map(|&l| if t < l { T::one() } else { T::zero() }).collect();
            let m = ArrayD::from_shape_vec(IxDyn(&shape), v).expect("sized");
            Ok(Some(g.step(t).constant(m)))
        })
        .collect()
}

/// Unrolls `cell` over the per-step inputs `inputs` (`[B, ...]` each), from `init`
/// (zeros when `None`). Step `t` is recorded under the scope `t{t}`.
///
/// With `lengths`, a sequence's steps past its end keep its state and output
/// zeros, so its final state is the state at its own last step and, run in
/// reverse, it starts at its own end, as PyTorch's packed sequences do.
///
/// # Errors
/// [`Error::InvalidInput`] for no steps, lengths that do not fit, or a state of the
/// wrong number of parts; [`Error::ShapeMismatch`] for a state of the wrong shape;
/// the cell's errors for inputs of the wrong size.
pub fn unroll<T: Float, C: Cell<T> + ?Sized>(
    cell: &C,
    g: &mut Graph<T>,
    p: &ParamStore<T>,
    inputs: &[NodeId],
    init: Option<State>,
    opts: UnrollOptions,
) -> Result<Unrolled> {
    let steps = inputs.len();
    if steps == 0 {
        return Err(invalid(g, "a sequence needs at least one step".into()));
    }
    let batch = *g.shape(inputs[0])?.first().ok_or_else(|| invalid(g, "inputs need a batch axis".into()))?;
    let state = match init {
        Some(s) => {
            cell.check_state(g, &s, batch)?;
            s
        }
        None => cell.zero_state(g, batch),
    };
    let rank = cell.state_shapes(batch).first().map_or(2, Vec::len);
    let masks = masks(g, opts.lengths, steps, batch, rank)?;
    let order: Vec<usize> = if opts.reverse { (0..steps).rev().collect() } else { (0..steps).collect() };
    // One matrix multiply for the input projection of a segment of steps, when the cell
    // has one: every step's at once for most sequences, a segment at a time for long
    // ones, each recorded just before its first step runs, so a lean replay holds one
    // segment's projection at a time (`PROJECTION_ROWS`).
    let seg = segment_steps(steps, batch);
    let source = sliced_from(g, inputs);
    let layer_scope = g.current_scope();
    let project = |g: &mut Graph<T>, k: usize| -> Result<Option<NodeId>> {
        let (start, end) = (k * seg, ((k + 1) * seg).min(steps));
        let mut g = g.enter(layer_scope)?;
        let mut g = g.scope("input_projection");
        let xs = match source {
            Some(x) if start == 0 && end == steps => x,
            Some(x) => g.narrow(x, 0, start, end - start)?,
            None => g.stack(&inputs[start..end], 0)?,
        };
        cell.project_inputs(&mut g, p, xs)
    };
    let ranks_ok = {
        let g = g.scope("input_projection");
        inputs.iter().all(|&x| g.shape(x).map(|s| s.len() == 2).unwrap_or(false))
    };
    let first = order[0] / seg;
    let projected = if ranks_ok { project(g, first)? } else { None };
    match projected {
        Some(xp) => {
            let mut current = (first, xp);
            let step = move |g: &mut Graph<T>, t: usize, _: Option<NodeId>| {
                let k = t / seg;
                if k != current.0 {
                    let xp =
                        project(g, k)?.ok_or_else(|| invalid(g, "the cell stopped projecting its inputs".into()))?;
                    current = (k, xp);
                }
                g.select(current.1, 0, t - k * seg)
            };
            run(cell, g, p, state, &order, step, &masks, true)
        }
        None => run(cell, g, p, state, &order, |_, t, _| Ok(inputs[t]), &masks, false),
    }
}

/// The most rows (time steps × batch) one input-projection product covers. A longer
/// sequence is projected a segment of steps at a time, each segment just before its
/// first step, so that a lean replay never holds the projection of every step (at
/// W5's T = 10000, B = 8, H = 128: 164 MB at once, against 16 MB per segment).
const PROJECTION_ROWS: usize = 8_192;

/// The steps per input-projection segment for a sequence of `steps` steps of `batch`.
fn segment_steps(steps: usize, batch: usize) -> usize {
    (PROJECTION_ROWS / batch.max(1)).clamp(1, steps.max(1))
}

/// Unrolls `cell` for `steps` steps, where `feed(g, t, prev_output)` makes the input
/// of step `t` (for generation: the previous output fed back, differentiated through).
///
/// # Errors
/// As [`unroll`], and `feed`'s errors.
pub fn unroll_with<T: Float, C: Cell<T> + ?Sized>(
    cell: &C,
    g: &mut Graph<T>,
    p: &ParamStore<T>,
    steps: usize,
    init: State,
    feed: impl FnMut(&mut Graph<T>, usize, Option<NodeId>) -> Result<NodeId>,
) -> Result<Unrolled> {
    if steps == 0 {
        return Err(invalid(g, "a sequence needs at least one step".into()));
    }
    let batch = *g.shape(init.part(g, 0)?)?.first().ok_or_else(|| invalid(g, "a state needs a batch axis".into()))?;
    cell.check_state(g, &init, batch)?;
    let order: Vec<usize> = (0..steps).collect();
    run(cell, g, p, init, &order, feed, &vec![None; steps], false)
}

#[allow(clippy::too_many_arguments)]
fn run<T: Float, C: Cell<T> + ?Sized>(
    cell: &C,
    g: &mut Graph<T>,
    p: &ParamStore<T>,
    mut state: State,
    order: &[usize],
    mut feed: impl FnMut(&mut Graph<T>, usize, Option<NodeId>) -> Result<NodeId>,
    masks: &[Option<NodeId>],
    projected: bool,
) -> Result<Unrolled> {
    let n = order.len();
    let mut outputs = vec![None; n];
    let mut states = vec![None; n];
    let mut taps = vec![SmallVec::new(); n];
    let mut prev: Option<NodeId> = None;
    for &t in order {
        let mut g = g.step(t);
        let x = feed(&mut g, t, prev)?;
        let step =
            if projected { cell.step_projected(&mut g, p, x, &state)? } else { cell.step(&mut g, p, x, &state)? };
        let (out, new_state) = match masks[t] {
            None => (step.output, step.state),
            Some(m) => {
                let mut g = g.scope("mask");
                let parts = step
                    .state
                    .parts()
                    .iter()
                    .zip(state.parts())
                    .map(|(&new, &old)| g.where_(m, new, old))
                    .collect::<Result<_>>()?;
                (g.mul(step.output, m)?, State(parts))
            }
        };
        outputs[t] = Some(out);
        states[t] = Some(new_state.clone());
        taps[t] = step.taps;
        prev = Some(out);
        state = new_state;
    }
    Ok(Unrolled {
        outputs: outputs.into_iter().map(|o| o.expect("every step ran")).collect(),
        states: states.into_iter().map(|s| s.expect("every step ran")).collect(),
        taps,
        final_state: state,
    })
}
