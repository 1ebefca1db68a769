//! Training tools: gradient clipping (and, with the training issue, optimizers,
//! truncated BPTT and checkpoints).

mod clip;
mod optim;

pub use clip::{clip_grad_norm, clip_grad_norm_per_tensor, clip_grad_value, grad_norm};
pub use optim::{Adagrad, Adam, AnyOptimizer, Optimizer, RmsProp, Sgd};
