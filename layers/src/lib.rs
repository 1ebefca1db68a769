//! # unrolled-layers
//!
//! Recurrent architectures as graph templates over `unrolled-autograd`.

#![warn(missing_docs)]

pub use unrolled_autograd as autograd;
