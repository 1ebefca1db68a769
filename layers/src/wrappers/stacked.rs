//! Stacked (deep) recurrent networks: layer `k+1` reads layer `k`'s merged outputs.

use unrolled_autograd::{Error, Float, Graph, NodeId, ParamStore, Result};

use super::bidirectional::{Layer, LayerOutput};
use crate::cell::{Cell, State};

/// Layers run bottom to top, with optional dropout between layers (not after the last).
#[derive(Clone, Debug, PartialEq)]
pub struct Stacked<C> {
    /// The layers, bottom first.
    pub layers: Vec<Layer<C>>,
    /// Dropout probability on each layer's output but the last, in training runs.
    pub dropout: f64,
}

/// Options of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunOptions<'a> {
    /// Sequence lengths (`1..=T` each), as PyTorch's packed sequences.
    pub lengths: Option<&'a [usize]>,
    /// A training run: dropout between layers is applied.
    pub train: bool,
    /// The seed of the dropout masks.
    pub seed: u64,
}

/// What a stack produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackedOutput {
    /// The top layer's merged output at every step.
    pub outputs: Vec<NodeId>,
    /// The final state of every cell, indexed `s = D*l + d` (PyTorch's `h_n` order).
    pub final_states: Vec<State>,
    /// Every layer's run.
    pub layers: Vec<LayerOutput>,
}

impl<C> Stacked<C> {
    /// The number of directions (of the first layer; all layers agree).
    pub fn directions(&self) -> usize {
        self.layers.first().map_or(1, Layer::directions)
    }

    /// Runs the stack over per-step `inputs`; layer `l` under the scope `l{l}`.
    /// `init` holds one state per cell, indexed `s = D*l + d` (zeros when `None`).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a wrong number of initial states; as [`Layer::run`].
    pub fn run<T: Float>(
        &self,
        g: &mut Graph<T>,
        p: &ParamStore<T>,
        inputs: &[NodeId],
        init: Option<&[State]>,
        opts: RunOptions,
    ) -> Result<StackedOutput>
    where
        C: Cell<T>,
    {
        let d = self.directions();
        if let Some(init) = init {
            if init.len() != self.layers.len() * d {
                return Err(Error::InvalidInput {
                    op: "stacked",
                    scope: g.scope_path(),
                    reason: format!("{} initial states for {} layers of {d} directions", init.len(), self.layers.len()),
                    shapes: Vec::new(),
                });
            }
        }
        let mut xs = inputs.to_vec();
        let mut layers = Vec::with_capacity(self.layers.len());
        let mut final_states = Vec::with_capacity(self.layers.len() * d);
        for (l, layer) in self.layers.iter().enumerate() {
            let mut g = g.layer(l);
            let i0 = init.map(|s| s[d * l].clone());
            let i1 = if d == 2 { init.map(|s| s[d * l + 1].clone()) } else { None };
            let out = layer.run(&mut g, p, &xs, [i0, i1], opts.lengths)?;
            final_states.push(out.fwd.final_state.clone());
            if let Some(b) = &out.bwd {
                final_states.push(b.final_state.clone());
            }
            xs = out.outputs.clone();
            if opts.train && self.dropout > 0.0 && l + 1 < self.layers.len() {
                let mut g = g.scope("dropout");
                for (t, x) in xs.iter_mut().enumerate() {
                    let seed = opts.seed ^ ((l as u64) << 40) ^ (t as u64).wrapping_mul(0x9E37_79B9);
                    *x = g.dropout(*x, self.dropout, seed)?;
                }
            }
            layers.push(out);
        }
        Ok(StackedOutput { outputs: xs, final_states, layers })
    }
}
