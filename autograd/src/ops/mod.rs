//! Ops: one small struct per op, forward and backward side by side, grouped by family.
//!
//! Every op is a serde-serializable struct; [`Op`] is their enum, generated with its
//! names and its one dispatch `match` from the table at the bottom of this file.
//! Adding an op means writing its struct and `Rule` in its family file and adding
//! one line to the table.
//!
//! A backward rule returns the gradient of each input *as graph nodes*, built with
//! the same builder methods a user calls, so the gradient can be differentiated
//! again. Rules never reduce broadcast gradients and never accumulate fan-out: the
//! engine does both ([`crate::backward`]).

use ndarray::ArrayD;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::error::Result;
use crate::float::Float;
use crate::graph::Graph;
use crate::node::{NodeId, Shape, Tensor, Value};

pub mod activation;
pub mod conv;
pub mod elementwise;
pub(crate) mod fresh;
pub mod fused;
pub mod index;
pub mod linalg;
pub mod loss;
pub mod reduce;
mod rowmajor;
pub mod shape;

pub use activation::*;
pub use conv::*;
pub use elementwise::*;
pub use fused::*;
pub use index::*;
pub use linalg::*;
pub use loss::*;
pub use reduce::*;
pub use shape::*;

/// Why an op refused its inputs; the graph adds the op name, scope and shapes.
#[derive(Debug, Clone)]
pub(crate) enum Fail {
    Mismatch(Shape, Shape),
    Invalid(String),
    IndexRange { index: i64, bound: usize },
}

pub(crate) type FResult<T> = std::result::Result<T, Fail>;

/// The gradients a backward rule returns: one per input, `None` where there is none.
pub(crate) type Grads = SmallVec<[Option<NodeId>; 3]>;

/// What a backward rule is told about the node it differentiates.
pub(crate) struct Back<'a> {
    /// The node itself (its value is the op's output).
    pub out: NodeId,
    /// Its inputs.
    pub inputs: &'a [NodeId],
    /// The gradient of the loss with respect to the output (same shape).
    pub grad: NodeId,
    /// Which inputs need a gradient; a rule may skip the others.
    pub needs: &'a [bool],
}

/// An op's shape rule, forward computation and backward rule.
pub(crate) trait Rule<T: Float> {
    /// Positions of inputs that hold int64 indices.
    fn index_inputs(&self) -> &'static [usize] {
        &[]
    }
    /// Checks the input shapes and returns the output shape.
    fn infer(&self, shapes: &[&[usize]]) -> FResult<Shape>;
    /// Computes the output from input values of the shapes `infer` accepted.
    fn forward(&self, inputs: &[&Value<T>], shape: &[usize]) -> FResult<ArrayD<T>>;
    /// Records the input gradients, given the output gradient.
    fn backward(&self, g: &mut Graph<T>, b: &Back) -> Result<Grads>;
    /// Computes the output into `acc`, the buffer of input `pos` (row-major, of the
    /// output's shape, read for the last time: a lean replay hands it over). `inputs`
    /// are all the inputs; input `pos` must not be read from it (it is empty). Returns
    /// `false`, leaving `acc` untouched, when the op does not compute in place.
    fn forward_in_place(&self, _acc: &mut ArrayD<T>, _pos: usize, _inputs: &[&Value<T>]) -> bool {
        false
    }
    /// Computes the output into `out`, row-major, every element written: a part of a
    /// join that a lean replay lays out in the join's own buffer (see
    /// `graph/placed.rs`). Returns `false`, having written nothing, when the op does
    /// not (the default).
    fn forward_into(&self, _inputs: &[&Value<T>], _shape: &[usize], _out: &mut [T]) -> bool {
        false
    }
    /// Whether the output of a row-major input of shape `input` is a view of the
    /// input's buffer ([`Rule::forward_view`]): a reshape or a slice along the first
    /// axis (or after axes of length 1), both row-major, or a slice along a later axis
    /// whose rows keep enough contiguous elements, with the input's row stride.
    /// `false` (the default) for every op that computes its output.
    fn views(&self, _input: &[usize]) -> bool {
        false
    }
    /// The output as a view of `x`'s buffer, for the inputs [`Rule::views`] accepts.
    fn forward_view(&self, _x: &Tensor<T>, _shape: &[usize]) -> Tensor<T> {
        unreachable!("only called for ops that make views")
    }
    /// How many `[B, H]` state blocks (`H` the width of input 2) lead the output: a
    /// fused step's `h'` (and `c'`). 0 (the default) for every other op.
    fn state_blocks(&self) -> usize {
        0
    }
    /// The input gradients from the gradients of the state blocks alone, each block's
    /// gradient or zeros (`states[k] = None`), with the blocks after them (the gate
    /// taps) receiving none. Called by the reverse sweep instead of [`Rule::backward`]
    /// when that is all the output received, so no gradient of the whole output, zeros
    /// in the taps' blocks, is built. Only ops with [`Rule::state_blocks`] implement it.
    fn backward_from_states(&self, _g: &mut Graph<T>, _b: &Back, _states: &[NodeId]) -> Result<Grads> {
        unreachable!("only called for ops with state blocks")
    }
}

// ----- helpers shared by the family files ------------------------------------------

pub(crate) fn arity(shapes: &[&[usize]], n: usize) -> FResult<()> {
    if shapes.len() != n {
        return Err(Fail::Invalid(format!("takes {n} inputs, got {}", shapes.len())));
    }
    Ok(())
}

/// The element count of a shape, or an error if it overflows.
pub(crate) fn numel(s: &[usize]) -> FResult<usize> {
    s.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Fail::Invalid(format!("{s:?} has too many elements")))
}

/// `s` if an array of it can exist: the product of its non-zero extents fits in an
/// `isize` (ndarray's bound, which a zero extent does not lift).
pub(crate) fn addressable(s: Shape) -> FResult<Shape> {
    let n = s.iter().filter(|&&d| d != 0).try_fold(1usize, |a, &d| a.checked_mul(d));
    match n {
        Some(n) if n <= isize::MAX as usize => Ok(s),
        _ => Err(Fail::Invalid(format!("{s:?} has too many elements"))),
    }
}

pub(crate) fn shape_of(s: &[usize]) -> Shape {
    s.iter().copied().collect()
}

/// NumPy broadcasting of two shapes.
pub(crate) fn broadcast(a: &[usize], b: &[usize]) -> FResult<Shape> {
    let n = a.len().max(b.len());
    let mut out = Shape::with_capacity(n);
    for i in 0..n {
        let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        out.push(match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(Fail::Mismatch(shape_of(a), shape_of(b))),
        });
    }
    Ok(out)
}

pub(crate) fn grads(v: impl IntoIterator<Item = Option<NodeId>>) -> Result<Grads> {
    Ok(v.into_iter().collect())
}

/// The float input `k`.
#[inline]
pub(crate) fn fin<'a, T>(inputs: &[&'a Value<T>], k: usize) -> ndarray::ArrayViewD<'a, T> {
    inputs[k].float()
}

impl<T: Float> Graph<T> {
    /// Normalizes a possibly negative axis of `x` (`-1` is the last), as PyTorch does.
    pub(crate) fn axis(&self, op: &'static str, x: NodeId, axis: isize) -> Result<usize> {
        self.check(x, op)?;
        let nd = self.shape_of(x).len() as isize;
        let a = if axis < 0 { axis + nd } else { axis };
        if a < 0 || a >= nd {
            return Err(self.fail(op, Fail::Invalid(format!("axis {axis} out of range for rank {nd}")), &[x]));
        }
        Ok(a as usize)
    }
}

// ----- leaves ---------------------------------------------------------------------------

/// A leaf holding an input value (float or int64).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Input {
    /// An optional display name.
    pub name: Option<String>,
}

/// A leaf holding a constant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Constant;

/// A leaf holding a parameter read from a [`ParamStore`](crate::ParamStore).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Param {
    /// The parameter's name in the store.
    pub name: String,
}

macro_rules! leaf_rule {
    ($($t:ty),*) => {$(
        impl<T: Float> Rule<T> for $t {
            fn infer(&self, _: &[&[usize]]) -> FResult<Shape> {
                Err(Fail::Invalid("a leaf is not computed from inputs".into()))
            }
            fn forward(&self, _: &[&Value<T>], _: &[usize]) -> FResult<ArrayD<T>> {
                Err(Fail::Invalid("a leaf is not computed from inputs".into()))
            }
            fn backward(&self, _: &mut Graph<T>, _: &Back) -> Result<Grads> {
                Ok(Grads::new())
            }
        }
    )*};
}
leaf_rule!(Input, Constant, Param);

// ----- the table ----------------------------------------------------------------------------

macro_rules! op_table {
    ($($variant:ident = $name:literal),* $(,)?) => {
        /// Every op the engine records, as serde data (`{"op": "matmul", ...}`).
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "op")]
        #[allow(missing_docs)]
        pub enum Op {
            $(#[serde(rename = $name)] $variant($variant),)*
        }

        impl Op {
            /// The op's name as the text form, DOT and errors print it.
            pub fn name(&self) -> &'static str {
                match self { $(Op::$variant(_) => $name,)* }
            }

            /// The one dispatch from data to behaviour.
            pub(crate) fn rule<T: Float>(&self) -> &dyn Rule<T> {
                match self { $(Op::$variant(o) => o,)* }
            }
        }
    };
}

op_table! {
    Input = "input",
    Constant = "constant",
    Param = "param",
    // elementwise.rs
    Add = "add",
    AddN = "add_n",
    Sub = "sub",
    Mul = "mul",
    Div = "div",
    Affine = "affine",
    PowScalar = "pow",
    Exp = "exp",
    Log = "log",
    Sqrt = "sqrt",
    Abs = "abs",
    Sign = "sign",
    Compare = "compare",
    CompareScalar = "compare_scalar",
    Where = "where",
    Detach = "detach",
    Clamp = "clamp",
    // activation.rs
    Tanh = "tanh",
    Sigmoid = "sigmoid",
    Relu = "relu",
    Softmax = "softmax",
    LogSoftmax = "log_softmax",
    DropoutMask = "dropout_mask",
    // linalg.rs
    MatMul = "matmul",
    // shape.rs
    Reshape = "reshape",
    Permute = "permute",
    Concat = "concat",
    Narrow = "narrow",
    Select = "select",
    Stack = "stack",
    Pad = "pad",
    BroadcastTo = "broadcast_to",
    // reduce.rs
    Sum = "sum",
    Max = "max",
    MaxMask = "max_mask",
    SumTo = "sum_to",
    // index.rs
    IndexSelect = "index_select",
    IndexAdd = "index_add",
    Gather = "gather",
    ScatterAdd = "scatter_add",
    // loss.rs
    CrossEntropy = "cross_entropy",
    MseLoss = "mse_loss",
    OneHot = "one_hot",
    // conv.rs
    Conv2d = "conv2d",
    Conv2dInputGrad = "conv2d_input_grad",
    Conv2dWeightGrad = "conv2d_weight_grad",
    ChannelWindowSum = "channel_window_sum",
    // fused.rs
    LstmCell = "lstm_cell",
    LstmCellGrad = "lstm_cell_grad",
    GruCell = "gru_cell",
    GruCellGrad = "gru_cell_grad",
    ActivationGrad = "activation_grad",
}

impl Op {
    /// Whether the op is a leaf (input, constant or parameter).
    pub fn is_leaf(&self) -> bool {
        matches!(self, Op::Input(_) | Op::Constant(_) | Op::Param(_))
    }
}

/// The same values laid out column-major: an input that makes an op with a
/// row-major fast path take its general path.
#[cfg(test)]
pub(crate) fn column_major<T: Float>(x: &ArrayD<T>) -> ArrayD<T> {
    use ndarray::ShapeBuilder;
    let mut c = ArrayD::zeros(ndarray::IxDyn(x.shape()).f());
    c.assign(x);
    c
}
