//! One module per family of fixture cases; `run` dispatches on `case`.

mod elementary;

use crate::common::fixture::Fixture;
use crate::Outcome;

/// Cases that the layers and training issues implement.
const PENDING: &[&str] = &[
    "elman_tanh_many_to_many",
    "elman_relu",
    "elman_many_to_one_ce",
    "jordan",
    "lstm",
    "lstm_peephole",
    "gru_torch",
    "gru_classic",
    "bilstm",
    "stacked_gru",
    "stacked_lstm_bidirectional",
    "rcl",
    "rcl_lrn",
    "char_lm_teacher_forcing",
    "truncated_bptt",
    "residual_rnn",
    "gated_residual",
    "deep_transition",
    "deep_transition_skip",
    "clip_grad_norm",
    "one_to_many_generation",
    "train_trajectory_sgd",
    "train_trajectory_adam",
    "train_trajectory_adamw",
    "train_trajectory_tbptt",
    "safetensors_state_dict",
    "second_order",
];

/// Runs one fixture, by its `case`.
pub fn run(f: &Fixture) -> Result<Outcome, String> {
    match f.case.as_str() {
        "gradcheck_sanity" => elementary::gradcheck_sanity(f).map(Outcome::Ran),
        c if PENDING.contains(&c) => Ok(Outcome::Pending("layer not implemented yet")),
        other => Err(format!("unknown case `{other}`")),
    }
}
