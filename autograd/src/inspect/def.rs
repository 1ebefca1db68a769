//! The serde form of a graph's structure: ops, shapes, scopes, edges, and the
//! values of constants. It round-trips through JSON and can be instantiated into a
//! graph again, to be fed new inputs and replayed.

use ndarray::{ArrayD, IxDyn};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::error::{Error, Result};
use crate::float::Float;
use crate::graph::Graph;
use crate::node::{DType, NodeId, Shape, Value};
use crate::ops::Op;
use crate::params::ParamStore;
use crate::scope::{ScopeId, ScopeInfo, Segment};

/// One node of a [`GraphDef`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeDef {
    /// The op and its attributes.
    pub op: Op,
    /// Indices of the input nodes.
    pub inputs: Vec<usize>,
    /// The output shape.
    pub shape: Vec<usize>,
    /// The output dtype.
    pub dtype: DType,
    /// Index into [`GraphDef::scopes`].
    pub scope: usize,
    /// The value of a constant (row-major), `None` for every other node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Vec<f64>>,
}

/// A graph's structure as data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphDef {
    /// The element type the graph was recorded with.
    pub dtype: DType,
    /// The scope table (index 0 is the root).
    pub scopes: Vec<ScopeInfo>,
    /// The nodes in recording order.
    pub nodes: Vec<NodeDef>,
}

impl GraphDef {
    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a GraphDef always serializes")
    }

    /// Parses JSON written by [`GraphDef::to_json`].
    ///
    /// # Errors
    /// [`Error::Parse`] for malformed JSON.
    pub fn from_json(s: &str) -> Result<GraphDef> {
        serde_json::from_str(s).map_err(|e| Error::Parse { what: "graph JSON", reason: e.to_string() })
    }
}

fn bad(reason: String) -> Error {
    Error::Parse { what: "graph definition", reason }
}

impl<T: Float> Graph<T> {
    /// The structure of the graph as serde data.
    pub fn to_def(&self) -> GraphDef {
        let nodes = self
            .nodes
            .iter()
            .zip(self.values.iter())
            .map(|(n, v)| NodeDef {
                op: n.op.clone(),
                inputs: n.inputs.iter().map(|j| j.index()).collect(),
                shape: n.shape.to_vec(),
                dtype: n.dtype,
                scope: n.scope.index(),
                value: match (&n.op, v) {
                    (Op::Constant(_), Value::Float(_) | Value::Shared(_)) => {
                        Some(v.float().iter().map(|x| x.f64()).collect())
                    }
                    _ => None,
                },
            })
            .collect();
        GraphDef { dtype: T::DTYPE, scopes: self.scope_infos().to_vec(), nodes }
    }

    /// Rebuilds a graph from its structure. Parameters are read from `store`,
    /// constants from the definition; inputs start as zeros: set them with
    /// [`Graph::set_value`] and call [`Graph::replay`] (or [`Graph::replay_keeping`])
    /// to compute the other nodes, which have no value until then.
    ///
    /// # Errors
    /// [`Error::Parse`] for an inconsistent definition (an edge to a later node, a
    /// shape the op would not produce, an unknown scope); [`Error::UnknownParam`].
    pub fn from_def(def: &GraphDef, store: &ParamStore<T>) -> Result<Graph<T>> {
        let mut g = Graph::with_capacity(def.nodes.len());
        for (i, s) in def.scopes.iter().enumerate().skip(1) {
            let p =
                s.parent.filter(|p| p.index() < i).ok_or_else(|| bad(format!("scope {i} has no earlier parent")))?;
            let parent = &def.scopes[p.index()];
            let seg = if s.gradient && (!parent.gradient || s.name == "grad") {
                Segment::Grad
            } else if s.step != parent.step {
                Segment::Step(s.step.unwrap_or_default())
            } else if s.layer != parent.layer {
                Segment::Layer(s.layer.unwrap_or_default())
            } else if let (Some(d), true) = (s.direction, s.direction != parent.direction) {
                Segment::Direction(d)
            } else {
                g.scopes.name_segment(&s.name)
            };
            let id = g.scopes.child(p, seg);
            if id.index() != i || g.scopes.info(id) != *s {
                return Err(bad(format!("scope {i} ({}) is not consistent with its parent", s.path)));
            }
        }
        if def.dtype == DType::I64 {
            return Err(bad("a graph's element type is float32 or float64".into()));
        }
        let mut seen_params = std::collections::BTreeSet::new();
        for (i, n) in def.nodes.iter().enumerate() {
            let index_ok = matches!(n.op, Op::Input(_));
            if n.dtype == DType::I64 && !index_ok {
                return Err(bad(format!("node {i} ({}) cannot be int64", n.op.name())));
            }
            if n.op.is_leaf() && !n.inputs.is_empty() {
                return Err(bad(format!("leaf node {i} ({}) has inputs", n.op.name())));
            }
            if let Op::Param(p) = &n.op {
                if !seen_params.insert(p.name.as_str()) {
                    return Err(bad(format!("parameter {} appears twice", p.name)));
                }
            }
            if n.scope >= def.scopes.len() {
                return Err(bad(format!("node {i} names scope {} of {}", n.scope, def.scopes.len())));
            }
            if let Some(&j) = n.inputs.iter().find(|&&j| j >= i) {
                return Err(bad(format!("node {i} reads node {j}, which is not earlier")));
            }
            let shape: Shape = n.shape.iter().copied().collect();
            let inputs: SmallVec<[NodeId; 3]> = n.inputs.iter().map(|&j| g.mk_id(j)).collect();
            let float = if n.dtype == DType::I64 { None } else { Some(T::DTYPE) };
            let value = match &n.op {
                Op::Param(p) => {
                    let v = store
                        .get(&p.name)
                        .ok_or_else(|| Error::UnknownParam { op: "from_def", name: p.name.clone() })?;
                    if v.shape() != &shape[..] {
                        return Err(bad(format!(
                            "parameter {} has shape {:?}, the graph {:?}",
                            p.name,
                            v.shape(),
                            n.shape
                        )));
                    }
                    Some(Value::Float(v.clone()))
                }
                Op::Constant(_) => {
                    let data = n.value.clone().ok_or_else(|| bad(format!("constant {i} has no value")))?;
                    let a = ArrayD::from_shape_vec(IxDyn(&n.shape), data.into_iter().map(T::of).collect())
                        .map_err(|e| bad(format!("constant {i}: {e}")))?;
                    Some(Value::Float(a))
                }
                Op::Input(_) if float.is_none() => Some(Value::Index(ArrayD::zeros(IxDyn(&n.shape)))),
                Op::Input(_) => Some(Value::Float(ArrayD::zeros(IxDyn(&n.shape)))),
                op => {
                    let rule = op.rule::<T>();
                    let idx = rule.index_inputs();
                    for (k, &j) in n.inputs.iter().enumerate() {
                        let want = if idx.contains(&k) { DType::I64 } else { T::DTYPE };
                        if (def.nodes[j].dtype == DType::I64) != (want == DType::I64) {
                            return Err(bad(format!("node {i} ({}) input {k} has the wrong dtype", op.name())));
                        }
                    }
                    let shapes: Vec<&[usize]> = n.inputs.iter().map(|&j| &def.nodes[j].shape[..]).collect();
                    match rule.infer(&shapes) {
                        Ok(s) if s == shape => {}
                        _ => return Err(bad(format!("node {i} ({}) does not produce shape {:?}", op.name(), n.shape))),
                    }
                    None
                }
            };
            let dtype = if matches!(value, Some(Value::Index(_))) { DType::I64 } else { T::DTYPE };
            g.set_current_scope(ScopeId(n.scope as u32));
            let id = g.append(n.op.clone(), &inputs, shape, dtype, value);
            if let Op::Param(p) = &n.op {
                g.register_param(&p.name, id);
            }
        }
        g.set_current_scope(ScopeId::ROOT);
        Ok(g)
    }
}
