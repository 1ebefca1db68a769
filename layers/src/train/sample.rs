//! Choosing the next token from logits: greedy, temperature, top-k.

use unrolled_autograd::{Float, Graph, NodeId, Result, Rng};

/// Samples an index from `logits` at `temperature` (0 or less means greedy), keeping
/// only the `top_k` largest (0 keeps all). Ties in greedy choice go to the lowest index;
/// non-finite logits or temperature fall back to the greedy choice; empty logits give 0.
pub fn sample_logits(logits: &[f64], temperature: f64, top_k: usize, rng: &mut Rng) -> usize {
    if logits.is_empty() {
        return 0;
    }
    let argmax = logits.iter().enumerate().fold(0, |b, (i, &v)| if v > logits[b] { i } else { b });
    if temperature <= 0.0 || top_k == 1 {
        return argmax;
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    let keep = if top_k == 0 { order.len() } else { top_k.min(order.len()) };
    let kept = &order[..keep];
    let m = logits[argmax];
    let weights: Vec<f64> = kept.iter().map(|&i| ((logits[i] - m) / temperature).exp()).collect();
    let total: f64 = weights.iter().sum();
    if !total.is_finite() || total <= 0.0 {
        return argmax; // non-finite logits or temperature: the greedy choice
    }
    let mut u = rng.uniform() * total;
    for (&i, w) in kept.iter().zip(&weights) {
        if u < *w {
            return i;
        }
        u -= w;
    }
    kept[keep - 1]
}

/// Truncated backpropagation through time with `k1` steps between updates and `k2`
/// steps backpropagated (Williams & Peng; `k1 = k2` is the common chunked form).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tbptt {
    /// Steps between updates.
    pub k1: usize,
    /// Steps backpropagated (`>= k1`).
    pub k2: usize,
}

/// One update of a [`Tbptt`] schedule over a sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// The step whose incoming state is the (detached) start of the recorded graph.
    pub start: usize,
    /// The first step whose loss counts in this update (earlier steps of the window
    /// only carry gradient through the state).
    pub loss_from: usize,
    /// One past the last step.
    pub end: usize,
}

impl Tbptt {
    /// Cuts the graph at a window boundary: each state part passes through a
    /// `detach` node recorded under the scope `tbptt_cut`, so the cut shows in the
    /// graph's text, drawing and queries. No gradient flows back past it.
    ///
    /// # Errors
    /// [`Error::ForeignNode`](unrolled_autograd::Error::ForeignNode) for another graph's node.
    pub fn cut<T: Float>(g: &mut Graph<T>, state: &[NodeId]) -> Result<Vec<NodeId>> {
        let mut g = g.scope("tbptt_cut");
        state.iter().map(|&s| g.detach(s)).collect()
    }

    /// The windows over a sequence of `len` steps: every `k1` steps, backpropagate
    /// through the last `k2`. Each window's state is detached at `start`.
    pub fn windows(&self, len: usize) -> Vec<Window> {
        let k1 = self.k1.max(1);
        let k2 = self.k2.max(k1);
        (0..len.div_ceil(k1))
            .map(|n| {
                // k1 = k2: disjoint chunks; otherwise every update backpropagates k2 steps.
                let end = ((n + 1) * k1).min(len);
                let start = if k1 == k2 { n * k1 } else { end.saturating_sub(k2) };
                Window { start, loss_from: n * k1, end }
            })
            .collect()
    }
}
