//! Complete models built from the layers.

mod any;
mod char_rnn;
mod rcnn;

pub use any::{AnyRecurrent, CellKind};
pub use char_rnn::CharRnn;
pub use rcnn::Rcnn;
