//! Products of one shape computed together: a weight's gradients over a sequence.
//!
//! The reverse sweep records the gradients of a recurrent layer's two weights as two
//! products over every step at once, `Gᵀ·X` and `Gᵀ·H` (`G` the steps' stacked gate
//! gradients, `X` the inputs, `H` the previous hidden states): `[4H, T·B]·[T·B, I]`
//! and `[4H, T·B]·[T·B, H]`, with `H`'s `concat` between them. Split over the threads
//! one after the other, each thread packs half of `G` twice and waits for the other
//! twice; computed together, each thread computes one whole product
//! ([`crate::gemm::gemm_pair`]), a few percent faster (see there).
//!
//! A lean replay computes the first product at the second's turn, when it is a few
//! nodes before it, they share an operand (`G`: read by both threads at once, it comes
//! from memory once), nothing between them reads it, and what it reads lives until then
//! (read again by a later node, or pinned, or a large copy of part of a leaf, which is
//! made again for it). Both nodes keep their own values, the same as computed one at
//! a time.

use smallvec::SmallVec;

use super::{Graph, LeanPlan};
use crate::error::Result;
use crate::float::Float;
use crate::node::{Node, Value};
use crate::ops::{linalg, Op};

/// How far after a product its partner is looked for.
const REACH: usize = 4;

/// A node's part in a pair of products, in a lean replay's plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Joint {
    /// Computed at its turn.
    Alone,
    /// Computed later, at the turn of the product given.
    Later(u32),
    /// Computes the earlier product given with its own.
    With(u32),
}

/// Every node's part in a pair of products (empty when no node has one). `last` is
/// the plan's last reader of each node, `copies` its large copies of leaves (made again
/// for each reader).
pub(super) fn joints(nodes: &[Node], needed: &[bool], last: &[u32], copies: &[bool], pinned: &[bool]) -> Vec<Joint> {
    let mut joints: Vec<Joint> = Vec::new();
    let free = |joints: &[Joint], i: usize| joints.get(i).is_none_or(|&j| j == Joint::Alone);
    for (i, node) in nodes.iter().enumerate() {
        if !needed[i] || !is_large_product(nodes, node) || !free(&joints, i) {
            continue;
        }
        let reads = |k: usize| nodes[k].inputs.iter().any(|j| j.index() == i);
        let mut partner = None;
        for k in i + 1..nodes.len().min(i + 1 + REACH) {
            if needed[k]
                && nodes[k].op == node.op
                && nodes[k].shape == node.shape
                && same_operands(nodes, node, &nodes[k])
            {
                partner = Some(k);
                break;
            }
            if reads(k) {
                break;
            }
        }
        let Some(k) = partner.filter(|&k| free(&joints, k)) else { continue };
        // What the first reads must still be there at the second's turn.
        let lives = node.inputs.iter().map(|j| j.index()).all(|j| {
            pinned[j] || copies[j] || last[j] == i as u32 || (last[j] != LeanPlan::NONE && last[j] as usize >= k)
        });
        if !lives || reads(k) {
            continue;
        }
        if joints.is_empty() {
            joints = vec![Joint::Alone; nodes.len()];
        }
        joints[i] = Joint::Later(k as u32);
        joints[k] = Joint::With(i as u32);
    }
    joints
}

/// Whether `node` is a product of two matrices with a large output (one that
/// [`linalg::forward_pair`] computes together).
fn is_large_product(nodes: &[Node], node: &Node) -> bool {
    matches!(node.op, Op::MatMul(_))
        && node.shape.len() == 2
        && node.shape.iter().product::<usize>() > linalg::SMALL_OUTPUT
        && node.inputs.iter().all(|j| nodes[j.index()].shape.len() == 2)
}

/// Whether two products read operands of the same shapes, one of them the same node:
/// read by both threads at once, it comes from memory once (two products that share
/// nothing, a GRU's weight gradients, were no faster computed together).
fn same_operands(nodes: &[Node], a: &Node, b: &Node) -> bool {
    let pairs = || a.inputs.iter().zip(&b.inputs);
    a.inputs.len() == b.inputs.len()
        && pairs().all(|(x, y)| nodes[x.index()].shape == nodes[y.index()].shape)
        && pairs().any(|(x, y)| x == y)
}

impl LeanPlan {
    /// Whether node `i` is computed later, with another product.
    pub(super) fn later(&self, i: usize) -> bool {
        matches!(self.joints.get(i), Some(Joint::Later(_)))
    }

    /// The earlier product node `i` computes with its own, if any.
    pub(super) fn with(&self, i: usize) -> Option<usize> {
        match self.joints.get(i) {
            Some(&Joint::With(e)) => Some(e as usize),
            _ => None,
        }
    }
}

impl<T: Float> Graph<T> {
    /// Computes the product `e` (put off until now) with node `i`, each into its own
    /// value. `live` gains `e`'s bytes (and those of the copies made again for it);
    /// `i`'s are the replay's to count, as for any node it computes.
    pub(super) fn compute_products(&mut self, e: usize, i: usize, copies: &[bool], live: &mut usize) -> Result<()> {
        for k in 0..self.nodes[e].inputs.len() {
            let j = self.nodes[e].inputs[k].index();
            if copies[j] && !self.computed(j) {
                self.recopy(j, live)?;
            }
        }
        self.check_inputs(e)?;
        self.check_inputs(i)?;
        if self.has[e] {
            *live -= self.freed_bytes(e);
            self.release(e);
        }
        if self.has[i] {
            self.release(i);
        }
        let made = match (&self.nodes[e].op, &self.nodes[i].op) {
            (Op::MatMul(first), Op::MatMul(second)) => {
                let of = |n: usize| -> SmallVec<[&Value<T>; 2]> {
                    self.nodes[n].inputs.iter().map(|j| &self.values[j.index()]).collect()
                };
                let (x1, x2) = (of(e), of(i));
                linalg::forward_pair((first, &x1), (second, &x2), &self.nodes[i].shape)
            }
            _ => None,
        };
        match made {
            Some((first, second)) => {
                for (n, v) in [(e, first), (i, second)] {
                    self.values.set(n, Value::Float(v));
                    self.has[n] = true;
                }
            }
            None => {
                self.compute(e)?;
                self.compute(i)?;
            }
        }
        *live += self.bytes(e);
        Ok(())
    }

    /// Releases what the product `e`, computed with a later node, read for the last
    /// time (or a copy of part of a leaf made again for it).
    pub(super) fn release_after_products(&mut self, e: usize, plan: &LeanPlan, live: &mut usize) {
        for k in 0..self.nodes[e].inputs.len() {
            let j = self.nodes[e].inputs[k].index();
            if (plan.last[j] == e as u32 || plan.copies[j]) && !plan.pinned[j] && self.has[j] {
                *live -= self.freed_bytes(j);
                self.release(j);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::NodeId;
    use ndarray::{ArrayD, Dimension};

    fn filled(shape: &[usize], seed: usize) -> ArrayD<f64> {
        ArrayD::from_shape_fn(shape, |d| ((d.as_array_view().sum() * 7 + seed) % 13) as f64 * 0.1 - 0.6)
    }

    /// `gᵀ·x` and `gᵀ·tanh(h)` (`[256, 72]` each), with what `between` records
    /// between them given the first and its operand `x2 = tanh(x)`; the plan's joints.
    fn plan(between: impl Fn(&mut Graph<f64>, NodeId, NodeId) -> Vec<NodeId>) -> (Vec<Joint>, NodeId, NodeId) {
        plan_of(between, true)
    }

    /// [`plan`], the second product reading another `g` of the same shape unless `shared`.
    fn plan_of(
        between: impl Fn(&mut Graph<f64>, NodeId, NodeId) -> Vec<NodeId>,
        shared: bool,
    ) -> (Vec<Joint>, NodeId, NodeId) {
        let mut g = Graph::<f64>::new();
        g.set_deferred(true);
        let gr = g.input(filled(&[300, 256], 1));
        let other = g.input(filled(&[300, 256], 4));
        let x = g.input(filled(&[300, 72], 2));
        let h = g.input(filled(&[300, 72], 3));
        let x2 = g.tanh(x).unwrap();
        let first = g.matmul_t(gr, x2, true, false).unwrap();
        let mut keep = between(&mut g, first, x2);
        let h2 = g.tanh(h).unwrap();
        let second = g.matmul_t(if shared { gr } else { other }, h2, true, false).unwrap();
        keep.extend([first, second]);
        let plan = LeanPlan::new(&g.nodes, &keep, 8);
        (plan.joints, first, second)
    }

    #[test]
    fn a_weights_gradients_are_computed_together() {
        let (joints, first, second) = plan(|_, _, _| Vec::new());
        assert_eq!(joints[first.index()], Joint::Later(second.index() as u32));
        assert_eq!(joints[second.index()], Joint::With(first.index() as u32));
    }

    #[test]
    fn products_that_share_no_operand_are_computed_at_their_turns() {
        let (joints, ..) = plan_of(|_, _, _| Vec::new(), false);
        assert!(joints.is_empty());
    }

    #[test]
    fn a_product_read_before_the_other_is_computed_at_its_turn() {
        let (joints, ..) = plan(|g, first, _| vec![g.tanh(first).unwrap()]);
        assert!(joints.is_empty());
    }

    #[test]
    fn a_product_whose_operand_dies_before_the_other_is_computed_at_its_turn() {
        let (joints, ..) = plan(|g, _, x2| vec![g.sum_all(x2).unwrap()]);
        assert!(joints.is_empty());
        // Kept, the operand lives on.
        let (joints, first, _) = plan(|g, _, x2| vec![g.sum_all(x2).unwrap(), x2]);
        assert!(matches!(joints[first.index()], Joint::Later(_)));
    }
}
