//! Graphviz DOT export, one cluster per layer (and direction) and per time step.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::float::Float;
use crate::graph::Graph;
use crate::scope::Direction;

use super::text::{attrs, shape_text};

type Group = (Option<u32>, Option<Direction>);

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

impl<T: Float> Graph<T> {
    /// The graph in Graphviz DOT: nodes labelled with op, shape and scope, edges
    /// from each input to its consumer (labelled with the input's position when an
    /// op has several), a cluster per layer/direction holding a cluster per time
    /// step, and gradient nodes dashed. Render with `dot -Tsvg`.
    pub fn to_dot(&self) -> String {
        let mut groups: BTreeMap<Group, BTreeMap<Option<u32>, Vec<usize>>> = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let s = self.scope_info(n.scope);
            groups.entry((s.layer, s.direction)).or_default().entry(s.step).or_default().push(i);
        }
        let mut out = String::from(
            "digraph unrolled {\n  rankdir=TB;\n  newrank=true;\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n",
        );
        for ((layer, dir), steps) in &groups {
            let outer = layer.is_some() || dir.is_some();
            if outer {
                let name = format!(
                    "{}{}",
                    layer.map_or(String::new(), |l| format!("l{l}")),
                    dir.map_or(String::new(), |d| format!("_{}", d.segment()))
                );
                let _ = writeln!(out, "  subgraph cluster_{name} {{\n    label=\"{}\";", name.trim_start_matches('_'));
            }
            for (step, nodes) in steps {
                if let Some(t) = step {
                    let prefix = layer.map_or(String::new(), |l| format!("l{l}_"));
                    let d = dir.map_or(String::new(), |d| format!("{}_", d.segment()));
                    let _ = writeln!(out, "  subgraph cluster_{prefix}{d}t{t} {{\n    label=\"t{t}\"; style=rounded;");
                }
                for &i in nodes {
                    self.dot_node(&mut out, i);
                }
                if step.is_some() {
                    out.push_str("  }\n");
                }
            }
            if outer {
                out.push_str("  }\n");
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            for (k, j) in n.inputs.iter().enumerate() {
                if n.inputs.len() > 1 {
                    let _ = writeln!(out, "  n{} -> n{i} [label=\"{k}\"];", j.index());
                } else {
                    let _ = writeln!(out, "  n{} -> n{i};", j.index());
                }
            }
        }
        out.push_str("}\n");
        out
    }

    fn dot_node(&self, out: &mut String, i: usize) {
        let n = &self.nodes[i];
        let s = self.scope_info(n.scope);
        let a = attrs(&n.op);
        let mut label = format!("%{i} {}", n.op.name());
        if !a.is_empty() {
            label.push_str(&format!("\\n{a}"));
        }
        label.push_str(&format!("\\n{}", shape_text(n)));
        if !s.name.is_empty() {
            label.push_str(&format!("\\n{}", s.name));
        }
        let style = if s.gradient {
            ", style=dashed, color=gray40"
        } else if n.op.is_leaf() {
            ", style=filled, fillcolor=lightyellow"
        } else {
            ""
        };
        let _ = writeln!(out, "    n{i} [label=\"{}\"{style}];", escape(&label).replace("\\\\n", "\\n"));
    }
}
