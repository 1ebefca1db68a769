//! Node ids, dtypes, shapes and the node record itself.

use std::fmt;

use ndarray::{ArcArray, ArrayD, ArrayViewD, IxDyn};
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

/// A float tensor whose buffer several values share: a view (a reshape of a
/// row-major value, or a slice of it, row-major along its first axis and strided
/// along a later one) and the value it views.
pub type Tensor<T> = ArcArray<T, IxDyn>;

/// A node's value: floats of the graph's element type, or integer indices.
///
/// Most float values own their buffer ([`Value::Float`]); a reshape or a slice of a
/// large row-major value is the same memory, not a copy (a slice along a later axis
/// keeps the value's row stride), and that value and its views then hold the buffer
/// together ([`Value::Shared`]). Read either with
/// [`Graph::value`](crate::Graph::value), which gives a view of the elements.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<T> {
    /// A float tensor.
    Float(ArrayD<T>),
    /// An integer tensor (token ids, class labels).
    Index(ArrayD<i64>),
    /// A float tensor sharing its buffer with other values.
    Shared(Tensor<T>),
}

impl<T> Value<T> {
    /// The float tensor; an internal invariant (dtypes are checked when a node is built).
    #[inline]
    pub(crate) fn float(&self) -> ArrayViewD<'_, T> {
        match self {
            Value::Float(a) => a.view(),
            Value::Shared(a) => a.view(),
            Value::Index(_) => unreachable!("dtype checked when the node was built"),
        }
    }
    /// The index tensor; an internal invariant as for [`Value::float`].
    pub(crate) fn index(&self) -> &ArrayD<i64> {
        match self {
            Value::Index(a) => a,
            Value::Float(_) | Value::Shared(_) => unreachable!("dtype checked when the node was built"),
        }
    }
    /// A row-major copy of the float tensor in a buffer of its own (a plain clone of
    /// an owned row-major buffer: the cheapest copy for small values).
    pub(crate) fn float_copy(&self) -> ArrayD<T>
    where
        T: Clone,
    {
        match self {
            Value::Float(a) if a.is_standard_layout() => a.clone(),
            Value::Float(a) => a.as_standard_layout().into_owned(),
            Value::Shared(a) => a.as_standard_layout().into_owned(),
            Value::Index(_) => unreachable!("dtype checked when the node was built"),
        }
    }

    /// The float elements in row-major order, when they are laid out so.
    pub(crate) fn float_slice(&self) -> Option<&[T]> {
        match self {
            Value::Float(a) => a.as_slice(),
            Value::Shared(a) => a.as_slice(),
            Value::Index(_) => unreachable!("dtype checked when the node was built"),
        }
    }
    pub(crate) fn shape(&self) -> &[usize] {
        match self {
            Value::Float(a) => a.shape(),
            Value::Shared(a) => a.shape(),
            Value::Index(a) => a.shape(),
        }
    }
}

/// `$body` with `$a` bound to the float array of `$v` (owned or shared) without
/// making a view of it: for hot paths generic over the array's storage.
macro_rules! with_float {
    ($v:expr, |$a:ident| $body:expr) => {
        match $v {
            $crate::node::Value::Float($a) => $body,
            $crate::node::Value::Shared($a) => $body,
            $crate::node::Value::Index(_) => unreachable!("dtype checked when the node was built"),
        }
    };
}
pub(crate) use with_float;

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
