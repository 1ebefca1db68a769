//! One module per family of fixture cases; `run` dispatches on `case`.

mod elementary;
mod layers;
mod run;
mod safetensors;
mod second_order;
mod training;

use crate::common::fixture::Fixture;
use crate::Outcome;

/// Runs one fixture, by its `case`.
pub fn run(f: &Fixture) -> Result<Outcome, String> {
    match f.case.as_str() {
        "gradcheck_sanity" => elementary::gradcheck_sanity(f).map(Outcome::Ran),
        "elman_tanh_many_to_many" | "elman_relu" => layers::elman(f).map(Outcome::Ran),
        "elman_many_to_one_ce" => layers::elman_many_to_one_ce(f).map(Outcome::Ran),
        "jordan" => layers::jordan(f).map(Outcome::Ran),
        "lstm" => layers::lstm(f).map(Outcome::Ran),
        "clip_grad_norm" => layers::clip_grad_norm(f).map(Outcome::Ran),
        "lstm_peephole" => layers::lstm_peephole(f).map(Outcome::Ran),
        "gru_torch" => layers::gru_torch(f).map(Outcome::Ran),
        "gru_classic" => layers::gru_classic(f).map(Outcome::Ran),
        "bilstm" | "stacked_lstm_bidirectional" => layers::lstm_stack(f).map(Outcome::Ran),
        "stacked_gru" => layers::stacked_gru(f).map(Outcome::Ran),
        "rcl" | "rcl_lrn" => layers::rcl(f).map(Outcome::Ran),
        "char_lm_teacher_forcing" => layers::char_lm_teacher_forcing(f).map(Outcome::Ran),
        "truncated_bptt" => layers::truncated_bptt(f).map(Outcome::Ran),
        "residual_rnn" | "gated_residual" => layers::residual(f).map(Outcome::Ran),
        "deep_transition" | "deep_transition_skip" => layers::deep_transition(f).map(Outcome::Ran),
        "one_to_many_generation" => layers::one_to_many_generation(f).map(Outcome::Ran),
        "second_order" => second_order::second_order(f).map(Outcome::Ran),
        "train_trajectory_sgd" | "train_trajectory_adam" | "train_trajectory_adamw" => {
            training::lm_trajectory(f).map(Outcome::Ran)
        }
        "train_trajectory_tbptt" => training::tbptt_trajectory(f).map(Outcome::Ran),
        "safetensors_state_dict" => safetensors::safetensors_state_dict(f).map(Outcome::Ran),
        other => Err(format!("unknown case `{other}`")),
    }
}
