//! Wrappers written once for every cell: unrolling, directions, stacking, the
//! PyTorch-style modules and the sequence modes.

mod bidirectional;
mod modes;
mod recurrent;
mod stacked;
mod unroll;

pub use bidirectional::{Layer, LayerOutput, Merge};
pub use modes::{many_to_one, one_to_many, Pool, Seq2Seq, Seq2SeqOutput};
pub use recurrent::{Recurrent, RecurrentConfig, RecurrentOutput};
pub use stacked::{RunOptions, Stacked, StackedOutput};
pub use unroll::{split_steps, unroll, unroll_with, UnrollOptions, Unrolled};
