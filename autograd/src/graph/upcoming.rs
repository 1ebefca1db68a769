//! Memory fetched ahead: while a recurrent step's product runs, its threads ask their
//! L2 caches for what the step's fused kernel after it will read and write.
//!
//! A step's product (`h W_hhᵀ`, or the gradient `g W_hh`) keeps the cores'
//! multiply-add units busy and leaves the memory system idle; the fused cell after it
//! (or its gradient, or an activation computing through its sum) does little
//! arithmetic on data that has left the cores' caches: the step's slice of the input
//! projection in the forward pass; in the reverse sweep, the step's output and
//! projected state, and the rows of the joins its gate gradients are written into. A
//! lean replay's plan names, for each product, the first such kernel a few nodes after
//! it ([`after_products`]); when the product runs, the values that kernel reads that
//! are already made, and the rows it will write of a join laid out in place (a
//! gradient's rows, or a step's `h'` written into the joins of the states), are
//! handed to the skinny kernel ([`crate::gemm::upcoming`]), whose tiles ask the L2
//! cache for a share of their lines as they go. Values are unchanged: a prefetch is
//! only a hint.
//!
//! On an Emerald Rapids Xeon with two threads, W3-L's reverse step's fused gradient
//! took 4.4 instead of 7.5 ms per training step, and its forward cells 4.0 instead of
//! 4.8 ms.

use super::{Graph, LeanPlan};
use crate::float::Float;
use crate::gemm::Upcoming;
use crate::node::Node;
use crate::ops::Op;

/// How far after a product its kernel is looked for (a GRU step's gradient is three
/// nodes after the product of the step before it).
const REACH: usize = 6;

/// Whether `op` is a fused step or its gradient.
fn fused(op: &Op) -> bool {
    matches!(op, Op::LstmCell(_) | Op::GruCell(_) | Op::LstmCellGrad(_) | Op::GruCellGrad(_))
}

/// For each needed product of two matrices, the first needed node after it within
/// [`REACH`] that is a fused step, its gradient, or a node computing through a sum
/// (`through`: the plan's folds); [`LeanPlan::NONE`] for the others (empty when no
/// product has one).
pub(super) fn after_products(nodes: &[Node], needed: &[bool], through: impl Fn(usize) -> bool) -> Vec<u32> {
    let mut after: Vec<u32> = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        if !needed[i] || !matches!(node.op, Op::MatMul(_)) || node.shape.len() != 2 {
            continue;
        }
        let end = nodes.len().min(i + 1 + REACH);
        let Some(k) = (i + 1..end).find(|&k| needed[k] && (fused(&nodes[k].op) || through(k))) else { continue };
        if after.is_empty() {
            after = vec![LeanPlan::NONE; nodes.len()];
        }
        after[i] = k as u32;
    }
    after
}

impl LeanPlan {
    /// The kernel whose memory product `i` fetches ahead, if any.
    pub(super) fn upcoming(&self, i: usize) -> Option<usize> {
        self.after.get(i).filter(|&&k| k != Self::NONE).map(|&k| k as usize)
    }
}

impl<T: Float> Graph<T> {
    /// What node `k` (a kernel after product `i`) reads that is already made before `i`
    /// (row-major values: its inputs, and a folded sum's terms), then the rows it and
    /// its sibling write of joins laid out in place whose buffers exist, its own and
    /// its state's ([`LeanPlan::tees_of`]).
    pub(super) fn upcoming_of(&self, i: usize, k: usize, plan: &LeanPlan) -> Upcoming {
        let mut up = Upcoming::default();
        let sum = plan.through(k).map(|j| &self.nodes[j].inputs[..]).unwrap_or_default();
        for j in self.nodes[k].inputs.iter().chain(sum).map(|j| j.index()) {
            // A node at or after `i` is not made yet in this run (a value it holds is
            // an earlier run's).
            if j >= i || !self.has[j] {
                continue;
            }
            if let Some(s) = self.values[j].float_slice() {
                up.push(s.as_ptr() as usize, std::mem::size_of_val(s));
            }
        }
        let sibling = plan.pairs.get(k).filter(|&&s| s != LeanPlan::NONE).map(|&s| s as usize);
        for x in std::iter::once(k).chain(sibling) {
            if let Some(&super::Place::Part { join, index }) = plan.places.get(x) {
                if let Some((at, bytes)) = self.placed_slot(join as usize, index as usize) {
                    up.push(at, bytes);
                }
            }
        }
        for t in plan.tees_of(k) {
            if let Some((at, bytes)) = self.placed_slot(t.join as usize, t.index as usize) {
                up.push(at, bytes);
            }
        }
        up
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::NodeId;
    use ndarray::{ArrayD, Dimension};

    fn filled(shape: &[usize], seed: usize) -> ArrayD<f32> {
        ArrayD::from_shape_fn(shape, |d| ((d.as_array_view().sum() * 7 + seed) % 13) as f32 * 0.1 - 0.6)
    }

    /// `t` steps of a fused GRU (`[B, H]` = `[40, 24]`) with a loss and its gradient,
    /// the step's products, cells, and the gradients kept.
    fn gru(t: usize) -> (Graph<f32>, Vec<NodeId>, Vec<NodeId>, Vec<NodeId>) {
        let (b, h) = (40, 24);
        let mut g = Graph::<f32>::new();
        let x = g.input(filled(&[t, b, 16], 1));
        let w = g.input(filled(&[3 * h, 16], 2));
        let u = g.input(filled(&[3 * h, h], 4));
        let p = g.matmul_t(x, w, false, true).unwrap();
        let mut state = g.input(filled(&[b, h], 5));
        let (mut products, mut cells, mut outs) = (Vec::new(), Vec::new(), Vec::new());
        for k in 0..t {
            let xp = g.select(p, 0, k).unwrap();
            let hp = g.matmul_t(state, u, false, true).unwrap();
            let out = g.gru_cell(xp, hp, state).unwrap();
            state = g.narrow(out, 1, 0, h).unwrap();
            products.push(hp);
            cells.push(out);
            outs.push(state);
        }
        let all = g.stack(&outs, 0).unwrap();
        let loss = g.sum_all(all).unwrap();
        let grads = g.grad(loss, &[w, u]).unwrap();
        (g, products, cells, grads)
    }

    #[test]
    fn each_steps_product_fetches_for_the_cell_after_it() {
        let (g, products, cells, grads) = gru(4);
        let plan = LeanPlan::new(&g.nodes, &grads, 4);
        for (p, c) in products.iter().zip(&cells) {
            assert_eq!(plan.upcoming(p.index()), Some(c.index()));
        }
        // In the reverse sweep, a product of a step's gradient fetches for the gradient
        // of the step before it.
        let grad_products: Vec<usize> = (cells.last().unwrap().index()..g.nodes.len())
            .filter(|&i| matches!(g.nodes[i].op, Op::MatMul(_)) && plan.upcoming(i).is_some())
            .collect();
        assert!(!grad_products.is_empty());
        for i in grad_products {
            let k = plan.upcoming(i).unwrap();
            assert!(matches!(g.nodes[k].op, Op::GruCellGrad(_)), "node {k}: {:?}", g.nodes[k].op);
        }
    }

    #[test]
    fn a_product_fetches_what_the_cell_reads_that_is_made() {
        let (mut g, products, cells, grads) = gru(3);
        g.set_small_graph_limit(0);
        g.replay_keeping(&grads).unwrap();
        let plan = LeanPlan::new(&g.nodes, &grads, 4);
        // The first step's cell reads its slice of the projection and the initial
        // state, both made before the product; its projected state is made after.
        let (p, c) = (products[0].index(), cells[0].index());
        g.replay().unwrap(); // every value made
        let up = g.upcoming_of(p, c, &plan);
        let xp = g.nodes[c].inputs[0].index();
        let h0 = g.nodes[c].inputs[2].index();
        let mut want = Upcoming::default();
        for j in [xp, h0] {
            let s = g.values[j].float_slice().unwrap();
            want.push(s.as_ptr() as usize, std::mem::size_of_val(s));
        }
        assert_eq!(up, want);
    }

    #[test]
    fn a_lean_replay_leaves_nothing_for_a_later_product() {
        let (mut g, _, _, grads) = gru(3);
        g.set_small_graph_limit(0);
        let eager: Vec<ArrayD<f32>> = {
            g.replay().unwrap();
            grads.iter().map(|&k| g.value(k).unwrap().to_owned()).collect()
        };
        for _ in 0..2 {
            g.replay_keeping(&grads).unwrap();
            for (&k, e) in grads.iter().zip(&eager) {
                assert_eq!(&g.value(k).unwrap().to_owned(), e);
            }
            assert!(crate::gemm::take_upcoming().is_empty());
        }
    }
}
