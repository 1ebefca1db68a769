//! PyTorch-style recurrent modules (`nn.RNN`, `nn.LSTM`, `nn.GRU`): sequence-major
//! tensors in and out, states packed as `[L*D, B, H]`, parameters named as PyTorch
//! names them, so a `state_dict`'s tensors load by name.

use unrolled_autograd::{Error, Float, Graph, NodeId, ParamStore, Result};

use super::bidirectional::{Layer, Merge};
use super::stacked::{RunOptions, Stacked, StackedOutput};
use super::unroll::split_steps;
use crate::cell::{Cell, State};
use crate::cells::{Elman, Gru, GruVariant, Lstm, Nonlinearity};
use crate::init::{init_params, Init, ParamSpec};

/// The sizes and shape of a recurrent module, as PyTorch's constructor arguments.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecurrentConfig {
    /// `input_size`.
    pub input_size: usize,
    /// `hidden_size`.
    pub hidden_size: usize,
    /// `num_layers`.
    pub num_layers: usize,
    /// `bidirectional`.
    pub bidirectional: bool,
    /// `dropout` between layers (training runs only).
    pub dropout: f64,
    /// How directions merge (PyTorch: concat).
    pub merge: Merge,
}

impl RecurrentConfig {
    /// One forward layer.
    pub fn new(input_size: usize, hidden_size: usize) -> Self {
        RecurrentConfig {
            input_size,
            hidden_size,
            num_layers: 1,
            bidirectional: false,
            dropout: 0.0,
            merge: Merge::Concat,
        }
    }
    /// With `n` layers.
    pub fn layers(mut self, n: usize) -> Self {
        self.num_layers = n;
        self
    }
    /// Bidirectional.
    pub fn bidirectional(mut self, yes: bool) -> Self {
        self.bidirectional = yes;
        self
    }
    /// With dropout between layers.
    pub fn dropout(mut self, p: f64) -> Self {
        self.dropout = p;
        self
    }
    /// The number of directions `D`.
    pub fn directions(&self) -> usize {
        1 + self.bidirectional as usize
    }
}

/// A recurrent module over cells `C`: [`Recurrent::rnn`], [`Recurrent::lstm`], [`Recurrent::gru`].
#[derive(Clone, Debug, PartialEq)]
pub struct Recurrent<C> {
    /// The scope the module records under (`rnn`, `lstm`, `gru`).
    pub scope: String,
    /// The configuration.
    pub config: RecurrentConfig,
    /// The cells.
    pub stack: Stacked<C>,
}

/// What a recurrent module produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecurrentOutput {
    /// PyTorch's `output`: the top layer at every step, `[T, B, D*H]` (concat merge).
    pub output: NodeId,
    /// The final state, one node per state part, each `[L*D, B, H]`:
    /// `[h_n]`, or `[h_n, c_n]` for an LSTM.
    pub final_state: Vec<NodeId>,
    /// Every layer's and step's nodes (outputs, states, taps).
    pub detail: StackedOutput,
}

impl RecurrentOutput {
    /// `h_n`, `[L*D, B, H]`.
    pub fn h_n(&self) -> NodeId {
        self.final_state[0]
    }
    /// `c_n`, `[L*D, B, H]` (LSTM only).
    pub fn c_n(&self) -> Option<NodeId> {
        self.final_state.get(1).copied()
    }
}

impl<C> Recurrent<C> {
    /// A module whose cell for layer `l` and direction `reverse` is `make(l, reverse, input_size_of_l)`.
    pub fn build(scope: &str, config: RecurrentConfig, make: impl Fn(usize, bool, usize) -> C) -> Self {
        let d = config.directions();
        let layers = (0..config.num_layers)
            .map(|l| {
                let input = if l == 0 {
                    config.input_size
                } else if config.merge == Merge::Concat {
                    d * config.hidden_size
                } else {
                    config.hidden_size
                };
                let fwd = make(l, false, input);
                match config.bidirectional {
                    true => Layer::bidirectional(fwd, make(l, true, input), config.merge),
                    false => Layer::forward_only(fwd),
                }
            })
            .collect();
        Recurrent { scope: scope.to_owned(), stack: Stacked { layers, dropout: config.dropout }, config }
    }
}

impl Recurrent<Elman> {
    /// PyTorch's `nn.RNN`; parameters `{prefix}weight_ih_l{k}[_reverse]`, … (`prefix` as `"rnn."` or `""`).
    pub fn rnn(prefix: &str, config: RecurrentConfig, nonlinearity: Nonlinearity) -> Self {
        let h = config.hidden_size;
        Self::build("rnn", config, |l, r, i| Elman::new(prefix, l, r, i, h, nonlinearity))
    }
}

impl Recurrent<Lstm> {
    /// PyTorch's `nn.LSTM`.
    pub fn lstm(prefix: &str, config: RecurrentConfig) -> Self {
        let h = config.hidden_size;
        Self::build("lstm", config, |l, r, i| Lstm::new(prefix, l, r, i, h))
    }
    /// An LSTM with peephole connections (`{prefix}weight_ch_l{k}[_reverse]`, `[3H]`).
    pub fn lstm_peephole(prefix: &str, config: RecurrentConfig) -> Self {
        let h = config.hidden_size;
        Self::build("lstm", config, |l, r, i| Lstm::new(prefix, l, r, i, h).with_peepholes(prefix, l, r))
    }
}

impl Recurrent<Gru> {
    /// PyTorch's `nn.GRU` (`GruVariant::Torch`) or the original GRU.
    pub fn gru(prefix: &str, config: RecurrentConfig, variant: GruVariant) -> Self {
        let h = config.hidden_size;
        Self::build("gru", config, |l, r, i| Gru::new(prefix, l, r, i, h, variant))
    }
}

impl<C> Recurrent<C> {
    /// Every parameter of every cell.
    pub fn params<T: Float>(&self) -> Vec<ParamSpec>
    where
        C: Cell<T>,
    {
        self.stack
            .layers
            .iter()
            .flat_map(|l| std::iter::once(&l.fwd).chain(l.bwd.as_ref()))
            .flat_map(|c| c.params())
            .collect()
    }

    /// Draws every parameter into `store`.
    pub fn init_params<T: Float>(&self, store: &mut ParamStore<T>, init: &Init)
    where
        C: Cell<T>,
    {
        init_params(&self.params::<T>(), store, init);
    }

    /// Runs the module on `x [T, B, input_size]` from `state` (each part `[L*D, B, H]`:
    /// `[h0]`, or `[h0, c0]` for an LSTM; zeros when `None`), under the scope `self.scope`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for an input or state of the wrong size;
    /// [`Error::InvalidInput`] for zero steps or lengths that do not fit.
    pub fn forward<T: Float>(
        &self,
        g: &mut Graph<T>,
        p: &ParamStore<T>,
        x: NodeId,
        state: Option<&[NodeId]>,
        opts: RunOptions,
    ) -> Result<RecurrentOutput>
    where
        C: Cell<T>,
    {
        let mut g = g.scope(&self.scope);
        if self.stack.layers.is_empty() || self.config.hidden_size == 0 {
            return Err(Error::InvalidInput {
                op: "recurrent",
                scope: g.scope_path(),
                reason: "a recurrent module needs at least one layer and one hidden unit".into(),
                shapes: Vec::new(),
            });
        }
        let xs = g.shape(x)?.to_vec();
        if xs.len() != 3 || xs[2] != self.config.input_size {
            let mut want = xs.clone();
            want.resize(3, 0);
            want[2] = self.config.input_size;
            return Err(Error::ShapeMismatch { op: "recurrent input", scope: g.scope_path(), lhs: want, rhs: xs });
        }
        let (batch, d, l, h) = (xs[1], self.config.directions(), self.config.num_layers, self.config.hidden_size);
        let cells = l * d;
        let init = match state {
            None => None,
            Some(parts) => {
                let mut states = vec![State(Default::default()); cells];
                for &part in parts {
                    let ps = g.shape(part)?.to_vec();
                    if ps != [cells, batch, h] {
                        return Err(Error::ShapeMismatch {
                            op: "recurrent state",
                            scope: g.scope_path(),
                            lhs: vec![cells, batch, h],
                            rhs: ps,
                        });
                    }
                    for (s, st) in states.iter_mut().enumerate() {
                        st.0.push(g.select(part, 0, s)?);
                    }
                }
                Some(states)
            }
        };
        let steps = split_steps(&mut g, x)?;
        let detail = self.stack.run(&mut g, p, &steps, init.as_deref(), opts)?;
        let output = g.stack(&detail.outputs, 0)?;
        let n_parts = detail.final_states.first().map_or(0, |s| s.0.len());
        let mut final_state = Vec::with_capacity(n_parts);
        for k in 0..n_parts {
            let parts: Vec<NodeId> = detail.final_states.iter().map(|s| s.0[k]).collect();
            final_state.push(g.stack(&parts, 0)?);
        }
        Ok(RecurrentOutput { output, final_state, detail })
    }
}
