//! The cell abstraction: one time step, emitted into a graph.

use smallvec::SmallVec;
use unrolled_autograd::{Error, Float, Graph, NodeId, ParamStore, Result};

use crate::init::ParamSpec;

/// The recurrent state a cell carries from step to step: one node per part,
/// `h` first (and `c` second for an LSTM). Each part is `[B, ...]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State(pub SmallVec<[NodeId; 2]>);

impl State {
    /// A state of one part.
    pub fn one(h: NodeId) -> Self {
        State(SmallVec::from_slice(&[h]))
    }
    /// A state of two parts (an LSTM's `h` and `c`).
    pub fn two(h: NodeId, c: NodeId) -> Self {
        State(SmallVec::from_slice(&[h, c]))
    }
    /// The first part (the hidden state `h`).
    ///
    /// # Panics
    /// For a state with no parts; cells use [`State::part`], which returns an error.
    pub fn h(&self) -> NodeId {
        self.0[0]
    }
    /// The second part (an LSTM's cell state `c`), if any.
    pub fn c(&self) -> Option<NodeId> {
        self.0.get(1).copied()
    }
    /// The parts.
    pub fn parts(&self) -> &[NodeId] {
        &self.0
    }
    /// Part `k`, or an error naming the cell's scope if the state has fewer parts.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when part `k` is missing.
    pub fn part<T: Float>(&self, g: &Graph<T>, k: usize) -> Result<NodeId> {
        self.0.get(k).copied().ok_or_else(|| Error::InvalidInput {
            op: "state",
            scope: g.scope_path(),
            reason: format!("the cell needs state part {k}; the state has {} parts", self.0.len()),
            shapes: Vec::new(),
        })
    }
}

/// What one step produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The step's output (`h` for RNN, LSTM and GRU cells; `y` for a Jordan cell).
    pub output: NodeId,
    /// The state handed to the next step.
    pub state: State,
    /// Intermediate activations worth looking at, named by [`Cell::tap_names`]
    /// (an LSTM's gates `i f g o`, a GRU's `r z n`).
    pub taps: SmallVec<[NodeId; 4]>,
}

/// One time step of a recurrent network as a graph template.
///
/// A cell records `step` into the graph under the current scope (the wrappers
/// add `l{k}`, `fwd`/`bwd` and `t{t}`), reading its parameters by name from a
/// [`ParamStore`]. Wrappers ([`unroll`](crate::unroll), [`Layer`](crate::Layer),
/// [`Stacked`](crate::Stacked), the sequence modes) are written once over this trait.
pub trait Cell<T: Float> {
    /// Feature size of the input `x_t` (`[B, input_size]`).
    fn input_size(&self) -> usize;
    /// Feature size of the output.
    fn output_size(&self) -> usize;
    /// The shapes of the state parts for a batch of `batch`.
    fn state_shapes(&self, batch: usize) -> Vec<Vec<usize>> {
        vec![vec![batch, self.output_size()]]
    }
    /// Names of the taps [`Step::taps`] holds, in order.
    fn tap_names(&self) -> &'static [&'static str] {
        &[]
    }
    /// Every parameter the cell reads: name, shape and role (for initialization).
    fn params(&self) -> Vec<ParamSpec>;
    /// Records one step: input `x` `[B, input_size]`, state in, output and state out.
    /// A cell implements this, or [`Cell::project_inputs`] and [`Cell::step_projected`]
    /// (then a step is its input's projection under the scope `gates`, then the
    /// projected step).
    ///
    /// # Errors
    /// The graph's errors (shapes that do not fit, a missing parameter).
    fn step(&self, g: &mut Graph<T>, p: &ParamStore<T>, x: NodeId, state: &State) -> Result<Step> {
        let projected = self.project_inputs(&mut g.scope("gates"), p, x)?;
        match projected {
            Some(xp) => self.step_projected(g, p, xp, state),
            None => Err(Error::InvalidInput {
                op: "step",
                scope: g.scope_path(),
                reason: "the cell implements neither step nor project_inputs".into(),
                shapes: Vec::new(),
            }),
        }
    }

    /// For cells whose step begins with an affine map of the input alone
    /// (`x W_ihᵀ + b_ih`): that map for every step at once, `xs [T, B, I] -> [T, B, P]`,
    /// one matrix multiply instead of `T` (and one for its weight gradient).
    /// [`unroll`](crate::unroll) uses it when it returns `Some`, on every step at once,
    /// or on segments of at most 8,192 rows (steps × batch) for longer sequences.
    ///
    /// # Errors
    /// The graph's errors.
    fn project_inputs(&self, _g: &mut Graph<T>, _p: &ParamStore<T>, _xs: NodeId) -> Result<Option<NodeId>> {
        Ok(None)
    }

    /// One step from the projected input `xp [B, P]` (a step of
    /// [`Cell::project_inputs`]); equal to [`Cell::step`] on the raw input.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a cell that does not project its inputs.
    fn step_projected(&self, g: &mut Graph<T>, _p: &ParamStore<T>, _xp: NodeId, _state: &State) -> Result<Step> {
        Err(Error::InvalidInput {
            op: "step_projected",
            scope: g.scope_path(),
            reason: "this cell does not project its inputs".into(),
            shapes: Vec::new(),
        })
    }

    /// A zero state for a batch of `batch` (constants).
    fn zero_state(&self, g: &mut Graph<T>, batch: usize) -> State {
        State(self.state_shapes(batch).iter().map(|s| g.zeros(s)).collect())
    }

    /// Checks a given state against [`Cell::state_shapes`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a wrong number of parts, [`Error::ShapeMismatch`] for a wrong shape.
    fn check_state(&self, g: &Graph<T>, state: &State, batch: usize) -> Result<()> {
        let want = self.state_shapes(batch);
        if want.len() != state.0.len() {
            return Err(Error::InvalidInput {
                op: "state",
                scope: g.scope_path(),
                reason: format!("the cell's state has {} parts, {} given", want.len(), state.0.len()),
                shapes: Vec::new(),
            });
        }
        for (w, &id) in want.iter().zip(state.parts()) {
            let got = g.shape(id)?;
            if got != &w[..] {
                return Err(Error::ShapeMismatch {
                    op: "state",
                    scope: g.scope_path(),
                    lhs: w.clone(),
                    rhs: got.to_vec(),
                });
            }
        }
        Ok(())
    }
}
