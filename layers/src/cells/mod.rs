//! The cells: one file per family.

mod deep_transition;
mod elman;
mod gru;
mod jordan;
mod lstm;
mod rcl;
mod residual;

pub use deep_transition::DeepTransition;
pub use elman::{Elman, Nonlinearity};
pub use gru::{Gru, GruVariant};
pub use jordan::Jordan;
pub use lstm::Lstm;
pub use rcl::{Lrn, Rcl, RclOutput};
pub use residual::{GatedResidual, Residual};
