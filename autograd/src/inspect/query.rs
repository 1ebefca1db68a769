//! Queries over a recorded graph: nodes by time step, layer, direction and gate;
//! ancestors, descendants and the paths between two nodes; op counts per step;
//! where truncated BPTT cut the graph. Every walk is a loop over the arena
//! (insertion order is topological), never a recursion.

use std::collections::BTreeMap;

use crate::float::Float;
use crate::graph::Graph;
use crate::node::NodeId;
use crate::ops::Op;
use crate::scope::Direction;

/// A filter over a graph's nodes; every condition set must hold.
///
/// ```
/// use unrolled_autograd::Graph;
/// # fn main() -> unrolled_autograd::Result<()> {
/// let mut g = Graph::<f64>::new();
/// let x = g.scalar(0.5);
/// for t in 0..3 {
///     let mut g = g.step(t);
///     let mut g = g.scope("forget_gate");
///     g.sigmoid(x)?;
/// }
/// assert_eq!(g.query().step(1).gate("forget_gate").nodes().len(), 1);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Query<'g, T: Float> {
    g: &'g Graph<T>,
    step: Option<u32>,
    layer: Option<u32>,
    direction: Option<Direction>,
    gate: Option<String>,
    op: Option<String>,
    gradient: Option<bool>,
}

impl<'g, T: Float> Query<'g, T> {
    /// Only nodes recorded in time step `t`.
    pub fn step(mut self, t: usize) -> Self {
        self.step = Some(t as u32);
        self
    }
    /// Only nodes of layer `l`.
    pub fn layer(mut self, l: usize) -> Self {
        self.layer = Some(l as u32);
        self
    }
    /// Only nodes of one direction.
    pub fn direction(mut self, d: Direction) -> Self {
        self.direction = Some(d);
        self
    }
    /// Only nodes under a scope segment named `name` (`forget_gate`, `gates`, `h`).
    pub fn gate(mut self, name: &str) -> Self {
        self.gate = Some(name.to_owned());
        self
    }
    /// Only nodes of op `name` (`matmul`, `sigmoid`).
    pub fn op(mut self, name: &str) -> Self {
        self.op = Some(name.to_owned());
        self
    }
    /// Only forward nodes (`false`) or only gradient nodes (`true`).
    pub fn gradient(mut self, yes: bool) -> Self {
        self.gradient = Some(yes);
        self
    }

    /// The matching nodes, in recording order.
    pub fn nodes(&self) -> Vec<NodeId> {
        self.g
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                let s = self.g.scope_info(n.scope);
                self.step.is_none_or(|t| s.step == Some(t))
                    && self.layer.is_none_or(|l| s.layer == Some(l))
                    && self.direction.is_none_or(|d| s.direction == Some(d))
                    && self.gradient.is_none_or(|gr| s.gradient == gr)
                    && self.op.as_deref().is_none_or(|o| n.op.name() == o)
                    && self.gate.as_deref().is_none_or(|gname| s.path.split('/').any(|seg| seg == gname))
            })
            .map(|(i, _)| self.g.mk_id(i))
            .collect()
    }
}

impl<T: Float> Graph<T> {
    /// A query over this graph's nodes.
    pub fn query(&self) -> Query<'_, T> {
        Query { g: self, step: None, layer: None, direction: None, gate: None, op: None, gradient: None }
    }

    /// Every node `id` depends on (its inputs, their inputs, …), in recording order.
    /// An id of another graph has none.
    pub fn ancestors(&self, id: NodeId) -> Vec<NodeId> {
        if self.check(id, "ancestors").is_err() {
            return Vec::new();
        }
        let mut mark = vec![false; id.index() + 1];
        for j in &self.nodes[id.index()].inputs {
            mark[j.index()] = true;
        }
        for i in (0..id.index()).rev() {
            if mark[i] {
                for j in &self.nodes[i].inputs {
                    mark[j.index()] = true;
                }
            }
        }
        (0..id.index()).filter(|&i| mark[i]).map(|i| self.mk_id(i)).collect()
    }

    /// Every node that depends on `id`, in recording order.
    pub fn descendants(&self, id: NodeId) -> Vec<NodeId> {
        if self.check(id, "descendants").is_err() {
            return Vec::new();
        }
        let n = self.nodes.len();
        let mut mark = vec![false; n];
        mark[id.index()] = true;
        for i in id.index() + 1..n {
            mark[i] = self.nodes[i].inputs.iter().any(|j| mark[j.index()]);
        }
        (id.index() + 1..n).filter(|&i| mark[i]).map(|i| self.mk_id(i)).collect()
    }

    /// The nodes on some path from `from` to `to` (both included), in recording
    /// order; empty when `to` does not depend on `from`. For a parameter and a
    /// loss: every node through which the parameter influences the loss.
    pub fn paths_between(&self, from: NodeId, to: NodeId) -> Vec<NodeId> {
        if self.check(from, "paths_between").is_err() || self.check(to, "paths_between").is_err() || from > to {
            return Vec::new();
        }
        let anc = self.ancestors(to);
        let mut on = vec![false; self.nodes.len()];
        for a in &anc {
            on[a.index()] = true;
        }
        on[to.index()] = true;
        if !on[from.index()] {
            return Vec::new();
        }
        let mut reach = vec![false; self.nodes.len()];
        reach[from.index()] = true;
        for i in from.index() + 1..=to.index() {
            reach[i] = on[i] && self.nodes[i].inputs.iter().any(|j| reach[j.index()]);
        }
        (from.index()..=to.index()).filter(|&i| reach[i]).map(|i| self.mk_id(i)).collect()
    }

    /// Forward nodes per time step and op name.
    pub fn ops_per_step(&self) -> BTreeMap<u32, BTreeMap<&'static str, usize>> {
        let mut out: BTreeMap<u32, BTreeMap<&'static str, usize>> = BTreeMap::new();
        for n in &self.nodes {
            let s = self.scope_info(n.scope);
            if let (Some(t), false) = (s.step, s.gradient) {
                *out.entry(t).or_default().entry(n.op.name()).or_default() += 1;
            }
        }
        out
    }

    /// Where truncated BPTT cut the graph: the nodes recorded under a `tbptt_cut`
    /// scope (the `detach` of a state, or the leaf a carried state enters through).
    pub fn cuts(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                let s = self.scope_info(n.scope);
                !s.gradient && s.path.split('/').any(|seg| seg == "tbptt_cut")
            })
            .map(|(i, _)| self.mk_id(i))
            .collect()
    }

    /// Every `detach` node (a point through which no gradient flows).
    pub fn detached(&self) -> Vec<NodeId> {
        self.ids().filter(|id| matches!(self.nodes[id.index()].op, Op::Detach(_))).collect()
    }

    /// The text form of a subset of nodes (one SSA line each, as [`Graph`]'s `Display`),
    /// for instance one time step or one layer.
    pub fn subgraph_text(&self, nodes: &[NodeId]) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        for &id in nodes {
            if self.check(id, "subgraph_text").is_ok() {
                let n = &self.nodes[id.index()];
                let _ = write!(
                    s,
                    "%{} = {} : {}",
                    id.index(),
                    super::text::call(self, id.index()),
                    super::text::shape_text(n)
                );
                let path = &self.scope_info(n.scope).path;
                if !path.is_empty() {
                    let _ = write!(s, "  # {path}");
                }
                s.push('\n');
            }
        }
        s
    }
}
