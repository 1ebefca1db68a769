//! Complete models built from the layers.

mod any;
mod char_rnn;

pub use any::{AnyRecurrent, CellKind};
pub use char_rnn::CharRnn;
