//! One layer in one or two directions, with the merge of a bidirectional layer.

use unrolled_autograd::{Direction, Float, Graph, NodeId, ParamStore, Result};

use super::unroll::{unroll, UnrollOptions, Unrolled};
use crate::cell::{Cell, State};

/// How a bidirectional layer combines its two directions at each step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Merge {
    /// `[forward, backward]` on the feature axis (PyTorch's layout; the default).
    #[default]
    Concat,
    /// `forward + backward`.
    Sum,
    /// `(forward + backward) / 2`.
    Mean,
    /// `forward ⊙ backward`.
    Mul,
}

/// A recurrent layer: a forward cell and, for a bidirectional layer, a backward one.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer<C> {
    /// The forward-direction cell.
    pub fwd: C,
    /// The backward-direction cell, if bidirectional.
    pub bwd: Option<C>,
    /// How the two directions combine.
    pub merge: Merge,
}

/// What a layer produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerOutput {
    /// The merged output of every step, in time order.
    pub outputs: Vec<NodeId>,
    /// The forward run.
    pub fwd: Unrolled,
    /// The backward run (outputs re-aligned to time order), if bidirectional.
    pub bwd: Option<Unrolled>,
}

impl<C> Layer<C> {
    /// A forward-only layer.
    pub fn forward_only(cell: C) -> Self {
        Layer { fwd: cell, bwd: None, merge: Merge::Concat }
    }
    /// A bidirectional layer.
    pub fn bidirectional(fwd: C, bwd: C, merge: Merge) -> Self {
        Layer { fwd, bwd: Some(bwd), merge }
    }
    /// The number of directions (1 or 2).
    pub fn directions(&self) -> usize {
        1 + self.bwd.is_some() as usize
    }
    /// The feature size of the merged output.
    pub fn output_size<T: Float>(&self) -> usize
    where
        C: Cell<T>,
    {
        match (self.bwd.is_some(), self.merge) {
            (true, Merge::Concat) => 2 * self.fwd.output_size(),
            _ => self.fwd.output_size(),
        }
    }

    /// Runs the layer over the per-step `inputs`. A bidirectional layer runs its
    /// forward cell under the scope `fwd` and its backward cell, time reversed,
    /// under `bwd`; the backward outputs are re-aligned to time order and merged.
    /// `init` holds the initial state of each direction (zeros when `None`).
    ///
    /// # Errors
    /// As [`unroll`].
    pub fn run<T: Float>(
        &self,
        g: &mut Graph<T>,
        p: &ParamStore<T>,
        inputs: &[NodeId],
        init: [Option<State>; 2],
        lengths: Option<&[usize]>,
    ) -> Result<LayerOutput>
    where
        C: Cell<T>,
    {
        let [i0, i1] = init;
        let Some(bwd_cell) = &self.bwd else {
            let fwd = unroll(&self.fwd, g, p, inputs, i0, UnrollOptions { reverse: false, lengths })?;
            return Ok(LayerOutput { outputs: fwd.outputs.clone(), fwd, bwd: None });
        };
        let fwd = {
            let mut g = g.direction(Direction::Forward);
            unroll(&self.fwd, &mut g, p, inputs, i0, UnrollOptions { reverse: false, lengths })?
        };
        let bwd = {
            let mut g = g.direction(Direction::Backward);
            unroll(bwd_cell, &mut g, p, inputs, i1, UnrollOptions { reverse: true, lengths })?
        };
        let mut outputs = Vec::with_capacity(inputs.len());
        for (t, (&a, &b)) in fwd.outputs.iter().zip(&bwd.outputs).enumerate() {
            let mut g = g.step(t);
            let mut g = g.scope("merge");
            outputs.push(match self.merge {
                Merge::Concat => g.concat(&[a, b], -1)?,
                Merge::Sum => g.add(a, b)?,
                Merge::Mean => {
                    let s = g.add(a, b)?;
                    g.mul_scalar(s, 0.5)?
                }
                Merge::Mul => g.mul(a, b)?,
            });
        }
        Ok(LayerOutput { outputs, fwd, bwd: Some(bwd) })
    }
}
