//! # unrolled
//!
//! Recurrent neural networks as explicitly unrolled, inspectable computational
//! graphs. This facade re-exports [`unrolled_autograd`] (the tape and reverse mode)
//! and [`unrolled_layers`] (recurrent architectures as graph templates).

#![warn(missing_docs)]

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub use unrolled_autograd as autograd;
pub use unrolled_autograd::ndarray;
pub use unrolled_layers as layers;

/// The names most programs need.
pub mod prelude {
    pub use unrolled_autograd::{
        gradcheck, gradgradcheck, CheckOptions, Direction, Error, Graph, NodeId, ParamStore, Reduction, Result,
    };
}
