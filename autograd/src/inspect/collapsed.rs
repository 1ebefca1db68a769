//! A collapsed drawing of a graph: one box per time step, per layer, or per cell,
//! with the number of nodes inside and of edges between boxes, so an unroll of
//! thousands of steps stays readable.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::float::Float;
use crate::graph::Graph;

/// How nodes are grouped into boxes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Collapse {
    /// One box per (layer, direction, time step): the unrolled cells.
    Cell,
    /// One box per time step (all layers together).
    Step,
    /// One box per (layer, direction) (all time steps together).
    Layer,
    /// One box per block of this many consecutive time steps (all layers
    /// together): a 10 000-step unroll in blocks of 500 is 20 boxes.
    Steps(u32),
}

type Key = (Option<u32>, Option<u32>, Option<u8>);

impl<T: Float> Graph<T> {
    /// The forward graph collapsed into boxes, in DOT. Gradient nodes and leaves
    /// (parameters, inputs, constants) are left out, so a box's edges are the
    /// recurrence and the data flow between layers. Computed nodes outside any step
    /// or layer (the loss) form one box, `outside`. Boxes and edges come in a fixed
    /// order.
    pub fn to_dot_collapsed(&self, by: Collapse) -> String {
        let key = |i: usize| -> Option<Key> {
            let s = self.scope_info(self.nodes[i].scope);
            if s.gradient || self.nodes[i].op.is_leaf() {
                return None;
            }
            let d = s.direction.map(|d| d as u8);
            Some(match by {
                Collapse::Cell => (s.layer, s.step, d),
                Collapse::Step => (None, s.step, None),
                Collapse::Steps(n) => (None, s.step.map(|t| t / n.max(1)), None),
                Collapse::Layer => (s.layer, None, d),
            })
        };
        let mut boxes: BTreeMap<Key, (usize, BTreeMap<&'static str, usize>)> = BTreeMap::new();
        let mut edges: BTreeMap<(Key, Key), usize> = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(k) = key(i) else { continue };
            let b = boxes.entry(k).or_default();
            b.0 += 1;
            *b.1.entry(n.op.name()).or_default() += 1;
            for j in &n.inputs {
                if let Some(kj) = key(j.index()) {
                    if kj != k {
                        *edges.entry((kj, k)).or_default() += 1;
                    }
                }
            }
        }
        let name = |k: &Key| -> String {
            let mut parts = Vec::new();
            if let Some(l) = k.0 {
                parts.push(format!("l{l}"));
            }
            if let Some(d) = k.2 {
                parts.push(if d == 0 { "fwd".into() } else { "bwd".into() });
            }
            if let Some(t) = k.1 {
                parts.push(match by {
                    Collapse::Steps(n) if n > 1 => format!("t{}_{}", t * n, t * n + n - 1),
                    _ => format!("t{t}"),
                });
            }
            if parts.is_empty() {
                "outside".into()
            } else {
                parts.join("_")
            }
        };
        let mut out = String::from(
            "digraph collapsed {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n",
        );
        for (k, (count, ops)) in &boxes {
            let mut top: Vec<(&&str, &usize)> = ops.iter().collect();
            top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let summary: Vec<String> = top.iter().take(3).map(|(o, c)| format!("{o} {c}")).collect();
            let _ = writeln!(out, "  {} [label=\"{}\\n{count} nodes\\n{}\"];", name(k), name(k), summary.join(", "));
        }
        for ((a, b), c) in &edges {
            let _ = writeln!(out, "  {} -> {} [label=\"{c}\"];", name(a), name(b));
        }
        out.push_str("}\n");
        out
    }
}
