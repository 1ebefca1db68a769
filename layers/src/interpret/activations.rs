//! Recording a character model's hidden and cell activations over a text.

use ndarray::{Array2, ArrayD, Axis, IxDyn};
use serde::{Deserialize, Serialize};
use unrolled_autograd::{Error, Float, Graph, NodeId, ParamStore, Result};

use crate::models::CharRnn;
use crate::wrappers::RunOptions;

/// The activations of every layer at every character: `h[l]` and, for an LSTM,
/// `c[l]`, each `[T, H]` (row `t` after reading character `t`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Activations {
    /// The hidden state of each layer.
    pub h: Vec<Array2<f64>>,
    /// The cell state of each layer (LSTM only; empty otherwise).
    pub c: Vec<Array2<f64>>,
}

/// Runs `model` over `tokens` (one sequence) from a zero state, `chunk` characters
/// per recorded graph (the state carried between chunks), and keeps every layer's
/// states at every step. Only the forward pass is recorded.
///
/// # Errors
/// [`Error::InvalidInput`] for no tokens or `chunk = 0`; an out-of-range token.
pub fn record_activations<T: Float>(
    model: &CharRnn,
    p: &ParamStore<T>,
    tokens: &[i64],
    chunk: usize,
) -> Result<Activations> {
    if tokens.is_empty() || chunk == 0 {
        return Err(Error::InvalidInput {
            op: "record_activations",
            scope: String::new(),
            reason: format!("needs tokens and a chunk of at least 1 (got {} tokens, chunk {chunk})", tokens.len()),
            shapes: vec![],
        });
    }
    let (layers, hidden, parts) = (model.rnn.config().num_layers, model.hidden(), model.rnn.state_parts());
    let n = tokens.len();
    let mut acts: Vec<Vec<Array2<f64>>> = vec![vec![Array2::zeros((n, hidden)); layers]; parts];
    let mut carried: Vec<ArrayD<T>> = vec![ArrayD::zeros(IxDyn(&[layers, 1, hidden])); parts];
    for start in (0..n).step_by(chunk) {
        let piece = &tokens[start..(start + chunk).min(n)];
        let mut g = Graph::<T>::new();
        let tok = g.index_input(ArrayD::from_shape_vec(IxDyn(&[piece.len(), 1]), piece.to_vec()).map_err(|e| {
            Error::InvalidInput {
                op: "record_activations",
                scope: String::new(),
                reason: e.to_string(),
                shapes: vec![],
            }
        })?);
        let state: Vec<NodeId> = carried.iter().map(|v| g.input(v.clone())).collect();
        let out = model.forward(&mut g, p, tok, Some(&state), RunOptions::default())?;
        for (l, layer) in out.rnn.detail.layers.iter().enumerate() {
            for (t, s) in layer.fwd.states.iter().enumerate() {
                for (k, &part) in s.parts().iter().enumerate().take(parts) {
                    let v = g.value(part)?.index_axis(Axis(0), 0).mapv(|x| x.f64());
                    acts[k][l].row_mut(start + t).assign(&v);
                }
            }
        }
        carried = out.rnn.final_state.iter().map(|&s| g.value(s).map(|v| v.to_owned())).collect::<Result<_>>()?;
    }
    let mut it = acts.into_iter();
    Ok(Activations { h: it.next().unwrap_or_default(), c: it.next().unwrap_or_default() })
}
