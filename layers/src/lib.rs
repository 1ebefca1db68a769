//! # unrolled-layers
//!
//! Recurrent architectures as graph templates over `unrolled-autograd`: a cell
//! emits one time step into a graph; wrappers written once over the [`Cell`]
//! trait unroll it, run it in both directions, stack it and put it in a
//! sequence mode. Backpropagation through any of them is the engine's ordinary
//! reverse sweep.
//!
//! ```
//! use unrolled_autograd::{Graph, ParamStore};
//! use unrolled_layers::{Init, Recurrent, RecurrentConfig, RunOptions};
//! # fn main() -> unrolled_autograd::Result<()> {
//! // A 2-layer bidirectional LSTM with PyTorch's parameter names.
//! let lstm = Recurrent::lstm("lstm.", RecurrentConfig::new(3, 4).layers(2).bidirectional(true));
//! let mut params = ParamStore::<f64>::new();
//! lstm.init_params(&mut params, &Init::torch(0));
//! assert!(params.contains("lstm.weight_hh_l1_reverse"));
//!
//! let mut g = Graph::new();
//! let x = g.input(ndarray::ArrayD::zeros(vec![5, 2, 3]));   // [T, B, I]
//! let out = lstm.forward(&mut g, &params, x, None, RunOptions::default())?;
//! assert_eq!(g.shape(out.output)?, &[5, 2, 8]);              // [T, B, 2H]
//! assert_eq!(g.shape(out.h_n())?, &[4, 2, 4]);               // [L*D, B, H]
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod cell;
pub mod cells;
pub mod diagnostics;
pub mod dynamics;
mod gate;
mod init;
pub mod interpret;
pub mod models;
pub mod plot;
pub mod train;
mod wrappers;

pub use cell::{Cell, State, Step};
pub use cells::{
    DeepTransition, Elman, GatedResidual, Gru, GruVariant, Jordan, Lrn, Lstm, Nonlinearity, Rcl, RclOutput, Residual,
};
pub use gate::{Affine, FusedGates, TorchNames};
pub use init::{init_params, orthogonal, Init, ParamSpec, Role, WeightInit};
pub use models::{AnyRecurrent, CellKind, CharRnn, Rcnn};
pub use train::*;
pub use unrolled_autograd as autograd;
pub use wrappers::*;
