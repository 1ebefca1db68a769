//! A petgraph view of the recorded graph.

use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;

use crate::float::Float;
use crate::graph::Graph;
use crate::scope::Direction;

/// What a petgraph node carries: the op and where it was recorded.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeLabel {
    /// The node's index (equal to its petgraph `NodeIndex`).
    pub index: usize,
    /// The op's name.
    pub op: &'static str,
    /// The output shape.
    pub shape: Vec<usize>,
    /// The scope path.
    pub scope: String,
    /// The time step, if recorded in one.
    pub step: Option<u32>,
    /// The layer, if recorded in one.
    pub layer: Option<u32>,
    /// The direction, if recorded in one.
    pub direction: Option<Direction>,
    /// Whether the node belongs to a gradient computation.
    pub gradient: bool,
}

impl<T: Float> Graph<T> {
    /// The graph as a `petgraph` `DiGraph`: node `i` is `NodeIndex::new(i)`, and an
    /// edge runs from each input to its consumer, weighted by the input's position.
    /// Use petgraph's algorithms on it (reachability, paths, dominators, …).
    pub fn to_petgraph(&self) -> DiGraph<NodeLabel, usize> {
        let mut pg = DiGraph::with_capacity(self.nodes.len(), self.nodes.len() * 2);
        for (i, n) in self.nodes.iter().enumerate() {
            let s = self.scope_info(n.scope);
            pg.add_node(NodeLabel {
                index: i,
                op: n.op.name(),
                shape: n.shape.to_vec(),
                scope: s.path.clone(),
                step: s.step,
                layer: s.layer,
                direction: s.direction,
                gradient: s.gradient,
            });
        }
        for (i, n) in self.nodes.iter().enumerate() {
            for (k, j) in n.inputs.iter().enumerate() {
                pg.add_edge(NodeIndex::new(j.index()), NodeIndex::new(i), k);
            }
        }
        pg
    }
}
