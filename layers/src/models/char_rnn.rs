//! The character-level language model of the lectures: an embedding, a recurrent
//! module and a linear readout to next-character logits.

use unrolled_autograd::{Float, Graph, NodeId, ParamStore, Result};

use super::any::{AnyRecurrent, CellKind};
use crate::init::{init_params, Init, ParamSpec, Role};
use crate::wrappers::{RecurrentConfig, RecurrentOutput, RunOptions};

/// `embedding.weight [V, E]` → `{rnn,lstm,gru}.*` → `fc.weight [V, H]`, `fc.bias [V]`,
/// named as the equivalent PyTorch module's `state_dict`.
#[derive(Clone, Debug, PartialEq)]
pub struct CharRnn {
    /// Vocabulary size `V`.
    pub vocab: usize,
    /// Embedding size `E`.
    pub embedding_dim: usize,
    /// The recurrent module.
    pub rnn: AnyRecurrent,
}

/// A forward pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CharRnnOutput {
    /// Next-character logits `[T, B, V]`.
    pub logits: NodeId,
    /// The recurrent module's output and final state.
    pub rnn: RecurrentOutput,
}

impl CharRnn {
    /// A model with `layers` layers of `hidden` units of `kind`.
    pub fn new(kind: CellKind, vocab: usize, embedding_dim: usize, hidden: usize, layers: usize) -> Self {
        let prefix = format!("{}.", kind.name());
        let rnn = AnyRecurrent::new(kind, &prefix, RecurrentConfig::new(embedding_dim, hidden).layers(layers));
        CharRnn { vocab, embedding_dim, rnn }
    }

    /// The hidden size `H`.
    pub fn hidden(&self) -> usize {
        self.rnn.config().hidden_size
    }

    /// Every parameter's spec.
    pub fn params<T: Float>(&self) -> Vec<ParamSpec> {
        let (v, h) = (self.vocab, self.hidden());
        let mut specs = vec![ParamSpec::new("embedding.weight", &[v, self.embedding_dim], Role::Embedding, 1, 1)];
        specs.extend(self.rnn.params::<T>());
        specs.push(ParamSpec::new("fc.weight", &[v, h], Role::InputWeight, 1, h));
        specs.push(ParamSpec::new("fc.bias", &[v], Role::Bias, 1, h));
        specs
    }

    /// Draws every parameter as PyTorch's default initialization would.
    pub fn init_params<T: Float>(&self, store: &mut ParamStore<T>, seed: u64) {
        init_params(&self.params::<T>(), store, &Init::torch(seed));
    }

    /// Logits for int64 `tokens [T, B]` from `state` (each part `[L, B, H]`; zeros when `None`).
    ///
    /// # Errors
    /// An out-of-range token, or the recurrent module's errors.
    pub fn forward<T: Float>(
        &self,
        g: &mut Graph<T>,
        p: &ParamStore<T>,
        tokens: NodeId,
        state: Option<&[NodeId]>,
        opts: RunOptions,
    ) -> Result<CharRnnOutput> {
        let emb = g.param(p, "embedding.weight")?;
        let x = g.scope("embedding").embedding(emb, tokens)?;
        let rnn = self.rnn.forward(g, p, x, state, opts)?;
        let mut g = g.scope("fc");
        let w = g.param(p, "fc.weight")?;
        let b = g.param(p, "fc.bias")?;
        let logits = g.linear(rnn.output, w, Some(b))?;
        Ok(CharRnnOutput { logits, rnn })
    }
}

impl CharRnn {
    /// Warm-start generation: feeds `prime` (token ids, at least one) through the
    /// model, then free-runs `n` more tokens, each sampled from the logits at
    /// `temperature` (0 is greedy) among the `top_k` most likely (0 keeps all).
    /// One single-step graph is recorded and replayed for every token.
    ///
    /// # Errors
    /// An empty prime or an out-of-range token.
    pub fn generate<T: Float>(
        &self,
        p: &ParamStore<T>,
        prime: &[i64],
        n: usize,
        temperature: f64,
        top_k: usize,
        rng: &mut unrolled_autograd::Rng,
    ) -> Result<Vec<i64>> {
        use ndarray::{ArrayD, IxDyn};
        let first = *prime.first().ok_or_else(|| unrolled_autograd::Error::InvalidInput {
            op: "generate",
            scope: String::new(),
            reason: "the prime is empty".into(),
            shapes: Vec::new(),
        })?;
        let (l, h) = (self.rnn.config().num_layers, self.hidden());
        let mut g = Graph::<T>::new();
        let tok = g.index_input(ArrayD::from_elem(IxDyn(&[1, 1]), first));
        let state: Vec<NodeId> =
            (0..self.rnn.state_parts()).map(|_| g.input(ArrayD::zeros(IxDyn(&[l, 1, h])))).collect();
        let out = self.forward(&mut g, p, tok, Some(&state), RunOptions::default())?;
        let mut produced = Vec::with_capacity(n);
        if n == 0 {
            return Ok(produced);
        }
        // Position `i` of prime ++ produced has just been fed; its logits are in the graph.
        let mut i = 0;
        loop {
            let next = if i + 1 < prime.len() {
                prime[i + 1]
            } else {
                let logits: Vec<f64> = g.value(out.logits)?.iter().map(|v| v.f64()).collect();
                let t = crate::train::sample_logits(&logits, temperature, top_k, rng) as i64;
                produced.push(t);
                if produced.len() == n {
                    break;
                }
                t
            };
            let new_state: Vec<ArrayD<T>> =
                out.rnn.final_state.iter().map(|&s| g.value(s).map(|v| v.to_owned())).collect::<Result<_>>()?;
            for (&s, v) in state.iter().zip(new_state) {
                g.set_value(s, v)?;
            }
            g.set_index_value(tok, ArrayD::from_elem(IxDyn(&[1, 1]), next))?;
            g.replay()?;
            i += 1;
        }
        Ok(produced)
    }

    /// Scheduled sampling (Bengio et al. 2015): a forward pass over `tokens [T, B]`
    /// in which, at each step after the first and for each sequence, the input is
    /// the model's own greedy prediction from the previous step with probability
    /// `prob`, else the true token. The choice reads the previous step's logits, so
    /// the graph is recorded step by step (define-by-run); no gradient flows
    /// through the choice. Step `t` is recorded under the scope `t{t}`. Returns the
    /// logits `[T, B, V]`.
    ///
    /// # Errors
    /// As [`CharRnn::forward`].
    pub fn forward_scheduled<T: Float>(
        &self,
        g: &mut Graph<T>,
        p: &ParamStore<T>,
        tokens: &ndarray::ArrayD<i64>,
        prob: f64,
        rng: &mut unrolled_autograd::Rng,
    ) -> Result<NodeId> {
        use ndarray::{ArrayD, Axis, IxDyn};
        if tokens.ndim() != 2 || tokens.is_empty() {
            return Err(unrolled_autograd::Error::InvalidInput {
                op: "forward_scheduled",
                scope: g.scope_path(),
                reason: format!("tokens must be [T, B] with T, B >= 1, got {:?}", tokens.shape()),
                shapes: Vec::new(),
            });
        }
        let (steps, batch) = (tokens.shape()[0], tokens.shape()[1]);
        let mut state: Option<Vec<NodeId>> = None;
        let mut logits = Vec::with_capacity(steps);
        let mut prev: Option<ArrayD<T>> = None;
        for t in 0..steps {
            let mut row: Vec<i64> = tokens.index_axis(Axis(0), t).iter().copied().collect();
            if let Some(pl) = &prev {
                for (b, tok) in row.iter_mut().enumerate() {
                    if rng.uniform() < prob {
                        let lane = pl
                            .index_axis(Axis(0), 0)
                            .index_axis(Axis(0), b)
                            .iter()
                            .map(|v| v.f64())
                            .collect::<Vec<_>>();
                        *tok = crate::train::sample_logits(&lane, 0.0, 0, rng) as i64;
                    }
                }
            }
            let mut g = g.step(t);
            let tok = g.index_input(ArrayD::from_shape_vec(IxDyn(&[1, batch]), row).expect("sized"));
            let out = self.forward(&mut g, p, tok, state.as_deref(), RunOptions::default())?;
            prev = Some(g.value(out.logits)?.to_owned());
            state = Some(out.rnn.final_state.clone());
            logits.push(out.logits);
        }
        g.concat(&logits, 0)
    }
}
