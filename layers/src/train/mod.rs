//! Training tools: optimizers, gradient clipping, checkpoints.

mod checkpoint;
mod clip;
mod optim;
mod recompute;
mod sample;

pub use checkpoint::{load_safetensors, load_state_dict, save_safetensors, write_atomically, Checkpoint};
pub use clip::{clip_grad_norm, clip_grad_norm_per_tensor, clip_grad_value, grad_norm};
pub use optim::{Adagrad, Adam, AnyOptimizer, Optimizer, RmsProp, Sgd};
pub use recompute::{recomputed_bptt, RecomputedStep};
pub use sample::{sample_logits, Tbptt, Window};
