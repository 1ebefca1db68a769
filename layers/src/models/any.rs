//! A recurrent module whose cell is chosen at run time.

use serde::{Deserialize, Serialize};
use unrolled_autograd::{Error, Float, Graph, NodeId, ParamStore, Result};

use crate::cell::Cell;
use crate::cells::{Elman, Gru, GruVariant, Lstm, Nonlinearity};
use crate::init::ParamSpec;
use crate::wrappers::{Recurrent, RecurrentConfig, RecurrentOutput, RunOptions};

/// The cell of a recurrent module chosen at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellKind {
    /// A tanh Elman RNN (`nn.RNN`).
    Rnn,
    /// An LSTM (`nn.LSTM`).
    Lstm,
    /// A GRU (`nn.GRU`).
    Gru,
}

impl CellKind {
    /// The module name PyTorch code usually gives it: `rnn`, `lstm`, `gru`.
    pub fn name(self) -> &'static str {
        match self {
            CellKind::Rnn => "rnn",
            CellKind::Lstm => "lstm",
            CellKind::Gru => "gru",
        }
    }
}

impl std::str::FromStr for CellKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "rnn" => Ok(CellKind::Rnn),
            "lstm" => Ok(CellKind::Lstm),
            "gru" => Ok(CellKind::Gru),
            other => Err(Error::InvalidInput {
                op: "cell",
                scope: String::new(),
                reason: format!("unknown cell `{other}` (rnn, lstm, gru)"),
                shapes: Vec::new(),
            }),
        }
    }
}

/// `nn.RNN`, `nn.LSTM` or `nn.GRU`, chosen at run time.
#[derive(Clone, Debug, PartialEq)]
pub enum AnyRecurrent {
    /// A tanh RNN.
    Rnn(Recurrent<Elman>),
    /// An LSTM.
    Lstm(Recurrent<Lstm>),
    /// A GRU (PyTorch's formulation).
    Gru(Recurrent<Gru>),
}

impl AnyRecurrent {
    /// A module of `kind` whose parameters are named `{prefix}weight_ih_l0`, ….
    pub fn new(kind: CellKind, prefix: &str, config: RecurrentConfig) -> Self {
        match kind {
            CellKind::Rnn => AnyRecurrent::Rnn(Recurrent::rnn(prefix, config, Nonlinearity::Tanh)),
            CellKind::Lstm => AnyRecurrent::Lstm(Recurrent::lstm(prefix, config)),
            CellKind::Gru => AnyRecurrent::Gru(Recurrent::gru(prefix, config, GruVariant::Torch)),
        }
    }

    /// The kind.
    pub fn kind(&self) -> CellKind {
        match self {
            AnyRecurrent::Rnn(_) => CellKind::Rnn,
            AnyRecurrent::Lstm(_) => CellKind::Lstm,
            AnyRecurrent::Gru(_) => CellKind::Gru,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RecurrentConfig {
        match self {
            AnyRecurrent::Rnn(m) => &m.config,
            AnyRecurrent::Lstm(m) => &m.config,
            AnyRecurrent::Gru(m) => &m.config,
        }
    }

    /// The number of state parts: 2 for an LSTM (`h`, `c`), else 1.
    pub fn state_parts(&self) -> usize {
        1 + matches!(self, AnyRecurrent::Lstm(_)) as usize
    }

    /// The names of each step's taps ([`Cell::tap_names`]): `i f g o` for an LSTM,
    /// `r z n` for a GRU, none for an RNN.
    pub fn tap_names(&self) -> &'static [&'static str] {
        match self {
            AnyRecurrent::Rnn(_) => &[],
            AnyRecurrent::Lstm(m) => m.stack.layers.first().map_or(&[], |l| <Lstm as Cell<f64>>::tap_names(&l.fwd)),
            AnyRecurrent::Gru(m) => m.stack.layers.first().map_or(&[], |l| <Gru as Cell<f64>>::tap_names(&l.fwd)),
        }
    }

    /// Every parameter's spec.
    pub fn params<T: Float>(&self) -> Vec<ParamSpec> {
        match self {
            AnyRecurrent::Rnn(m) => m.params::<T>(),
            AnyRecurrent::Lstm(m) => m.params::<T>(),
            AnyRecurrent::Gru(m) => m.params::<T>(),
        }
    }

    /// As [`Recurrent::forward`].
    ///
    /// # Errors
    /// As [`Recurrent::forward`].
    pub fn forward<T: Float>(
        &self,
        g: &mut Graph<T>,
        p: &ParamStore<T>,
        x: NodeId,
        state: Option<&[NodeId]>,
        opts: RunOptions,
    ) -> Result<RecurrentOutput> {
        match self {
            AnyRecurrent::Rnn(m) => m.forward(g, p, x, state, opts),
            AnyRecurrent::Lstm(m) => m.forward(g, p, x, state, opts),
            AnyRecurrent::Gru(m) => m.forward(g, p, x, state, opts),
        }
    }
}
