//! Summary statistics of a recorded graph.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::float::Float;
use crate::graph::Graph;

/// Counts over a graph: nodes per op, per time step, and how many consumers each
/// parameter has (its fan-out: in an unrolled network, the steps that use it).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// All nodes.
    pub nodes: usize,
    /// Nodes recorded by the reverse sweep (in gradient scopes).
    pub gradient_nodes: usize,
    /// Nodes per op name.
    pub by_op: BTreeMap<String, usize>,
    /// Forward nodes per time step.
    pub by_step: BTreeMap<u32, usize>,
    /// Forward nodes per layer.
    pub by_layer: BTreeMap<u32, usize>,
    /// Forward consumers of each parameter, by name.
    pub param_fanout: BTreeMap<String, usize>,
}

impl<T: Float> Graph<T> {
    /// Counts nodes per op, per time step and per layer, and parameter fan-out.
    pub fn summary(&self) -> Summary {
        let mut s = Summary { nodes: self.nodes.len(), ..Summary::default() };
        let mut consumers = vec![0usize; self.nodes.len()];
        for n in &self.nodes {
            *s.by_op.entry(n.op.name().to_string()).or_default() += 1;
            let info = self.scope_info(n.scope);
            if info.gradient {
                s.gradient_nodes += 1;
                continue;
            }
            if let Some(t) = info.step {
                *s.by_step.entry(t).or_default() += 1;
            }
            if let Some(l) = info.layer {
                *s.by_layer.entry(l).or_default() += 1;
            }
            for j in &n.inputs {
                consumers[j.index()] += 1;
            }
        }
        for (name, id) in self.params() {
            s.param_fanout.insert(name.clone(), consumers[id.index()]);
        }
        s
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} nodes ({} forward, {} gradient)",
            self.nodes,
            self.nodes - self.gradient_nodes,
            self.gradient_nodes
        )?;
        let ops: Vec<String> = self.by_op.iter().map(|(k, v)| format!("{k} {v}")).collect();
        writeln!(f, "ops: {}", ops.join(", "))?;
        if !self.by_step.is_empty() {
            let steps: Vec<String> = self.by_step.iter().map(|(k, v)| format!("t{k} {v}")).collect();
            writeln!(f, "forward nodes per step: {}", steps.join(", "))?;
        }
        if !self.by_layer.is_empty() {
            let layers: Vec<String> = self.by_layer.iter().map(|(k, v)| format!("l{k} {v}")).collect();
            writeln!(f, "forward nodes per layer: {}", layers.join(", "))?;
        }
        for (k, v) in &self.param_fanout {
            writeln!(f, "param {k}: used by {v} nodes")?;
        }
        Ok(())
    }
}
