//! The deterministic text form: one SSA line per node.

use std::fmt::{self, Write};

use crate::float::Float;
use crate::graph::Graph;
use crate::node::{DType, Node, Value};
use crate::ops::Op;
use crate::snapshot::format_number;

/// The attributes of an op as `k=v` pairs in key order (from its serde form).
pub(crate) fn attrs(op: &Op) -> String {
    let Ok(serde_json::Value::Object(map)) = serde_json::to_value(op) else {
        return String::new();
    };
    let mut s = String::new();
    for (k, v) in map.iter().filter(|(k, v)| k.as_str() != "op" && !v.is_null()) {
        if !s.is_empty() {
            s.push_str(", ");
        }
        let _ = write!(s, "{k}={v}");
    }
    s
}

/// `op(%a, %b; k=v)` for a node, with the value of one-element constants.
pub(crate) fn call<T: Float>(g: &Graph<T>, i: usize) -> String {
    let node: &Node = &g.nodes[i];
    let mut extra = attrs(&node.op);
    if let (Op::Constant(_), Value::Float(_) | Value::Shared(_)) = (&node.op, &g.values[i]) {
        let v = g.values[i].float();
        if v.len() == 1 {
            extra = format_number(v.iter().next().map_or(0.0, |x| x.f64()), 6);
        }
    }
    let inputs: Vec<String> = node.inputs.iter().map(|j| j.to_string()).collect();
    let inputs = inputs.join(", ");
    match (inputs.is_empty(), extra.is_empty()) {
        (true, true) => node.op.name().to_string(),
        (true, false) => format!("{}({extra})", node.op.name()),
        (false, true) => format!("{}({inputs})", node.op.name()),
        (false, false) => format!("{}({inputs}; {extra})", node.op.name()),
    }
}

/// `[2, 4]`, or `int64[2, 4]` for index nodes.
pub(crate) fn shape_text(node: &Node) -> String {
    let s = format!("{:?}", &node.shape[..]);
    if node.dtype == DType::I64 {
        format!("int64{s}")
    } else {
        s
    }
}

/// One line per node: `%7 = matmul(%3, %5) : [2, 4]  # lstm/l0/t1/gates`.
/// Ids are dense per graph and nothing depends on hash order, so the text is
/// stable across runs and fit for snapshot tests.
impl<T: Float> fmt::Display for Graph<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, node) in self.nodes.iter().enumerate() {
            write!(f, "%{i} = {} : {}", call(self, i), shape_text(node))?;
            let path = &self.scope_info(node.scope).path;
            if !path.is_empty() {
                write!(f, "  # {path}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
