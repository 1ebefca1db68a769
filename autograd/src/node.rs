//! Node ids, dtypes, shapes and the node record itself.

use std::fmt;

use ndarray::ArrayD;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::ops::Op;
use crate::scope::ScopeId;

/// A shape: the size of every axis, outermost first.
pub type Shape = SmallVec<[usize; 4]>;

/// The id of a node: a plain `Copy` handle into one graph's arena.
///
/// Ids are dense per graph (`%0`, `%1`, …) in recording order, which is a
/// topological order. An id also carries a tag of the graph that made it, so
/// handing it to another graph is an error ([`Error::ForeignNode`](crate::Error::ForeignNode)),
/// not a silent mix-up; the tag never appears in any output.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub(crate) index: u32,
    pub(crate) graph: u32,
}

impl NodeId {
    /// The node's position in its graph (dense, from 0).
    pub fn index(self) -> usize {
        self.index as usize
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.index)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.index)
    }
}

/// The element type of a node's value, named as PyTorch names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    /// 32-bit float.
    #[serde(rename = "float32")]
    F32,
    /// 64-bit float.
    #[serde(rename = "float64")]
    F64,
    /// 64-bit signed integer (token ids, class labels).
    #[serde(rename = "int64")]
    I64,
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::I64 => "int64",
        })
    }
}

/// A node's value: floats of the graph's element type, or integer indices.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<T> {
    /// A float tensor.
    Float(ArrayD<T>),
    /// An integer tensor (token ids, class labels).
    Index(ArrayD<i64>),
}

impl<T> Value<T> {
    /// The float tensor; an internal invariant (dtypes are checked when a node is built).
    pub(crate) fn float(&self) -> &ArrayD<T> {
        match self {
            Value::Float(a) => a,
            Value::Index(_) => unreachable!("dtype checked when the node was built"),
        }
    }
    /// The index tensor; an internal invariant as for [`Value::float`].
    pub(crate) fn index(&self) -> &ArrayD<i64> {
        match self {
            Value::Index(a) => a,
            Value::Float(_) => unreachable!("dtype checked when the node was built"),
        }
    }
    pub(crate) fn shape(&self) -> &[usize] {
        match self {
            Value::Float(a) => a.shape(),
            Value::Index(a) => a.shape(),
        }
    }
}

/// One recorded operation: what it is, what it reads, what it makes, and where.
#[derive(Clone, Debug)]
pub struct Node {
    pub(crate) op: Op,
    pub(crate) inputs: SmallVec<[NodeId; 3]>,
    pub(crate) shape: Shape,
    pub(crate) dtype: DType,
    pub(crate) scope: ScopeId,
}

impl Node {
    /// The op.
    pub fn op(&self) -> &Op {
        &self.op
    }
    /// The input node ids, in argument order.
    pub fn inputs(&self) -> &[NodeId] {
        &self.inputs
    }
    /// The output shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// The output dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// The scope the node was recorded under.
    pub fn scope(&self) -> ScopeId {
        self.scope
    }
}
