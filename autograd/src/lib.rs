//! # unrolled-autograd
//!
//! Tape-based reverse-mode automatic differentiation over `ndarray` tensors
//! (`f32` and `f64`), whose recorded graph is data.
//!
//! Every operation is a node of an explicit graph: an append-only arena indexed by
//! [`NodeId`]s, each node with its op, inputs, shape and scope (a path such as
//! `lstm/l0/t3/gates` with structured time-step, layer and direction annotations).
//! A recurrent network run over T steps *is* a T-step graph whose parameter nodes
//! fan out to every step, and backpropagation through time is the ordinary reverse
//! sweep. The reverse sweep records gradients as nodes of the same graph, so they
//! can be differentiated again (second order, Hessian-vector products), inspected,
//! drawn and snapshot-tested like the forward graph.
//!
//! Build, evaluate, differentiate, differentiate again:
//!
//! ```
//! use ndarray::arr2;
//! use unrolled_autograd::{Graph, ParamStore};
//!
//! # fn main() -> unrolled_autograd::Result<()> {
//! let mut store = ParamStore::<f64>::new();
//! store.insert("w", arr2(&[[0.5, -0.3], [0.2, 0.8]]).into_dyn());
//!
//! let mut g = Graph::new();
//! let w = g.param(&store, "w")?;
//! let mut h = g.input_named("h0", arr2(&[[1.0, -1.0]]).into_dyn());
//! for t in 0..3 {
//!     let mut g = g.step(t);                 // nodes of this step are annotated t0, t1, t2
//!     let a = g.matmul(h, w)?;
//!     h = g.tanh(a)?;
//! }
//! let loss = g.sum_all(h)?;
//! println!("loss = {}", g.scalar_value(loss)?); // values exist as soon as nodes do
//!
//! let dw = g.grad(loss, &[w])?[0];           // BPTT: the ordinary reverse sweep
//! assert_eq!(g.value(dw)?.shape(), &[2, 2]);
//!
//! let s = g.square(dw)?;                     // differentiate the gradient again
//! let s = g.sum_all(s)?;
//! let d2 = g.grad(s, &[w])?[0];              // ∂‖∂L/∂W‖² / ∂W
//! assert!(g.value(d2)?.iter().all(|v| v.is_finite()));
//!
//! println!("{g}");                           // one SSA line per node
//! println!("{}", g.summary());               // nodes per op and per step, fan-out
//! # Ok(()) }
//! ```
//!
//! Shapes are checked when a node is built: every builder returns a [`Result`]
//! whose [`Error`] names the op, the scope and the shapes.

#![warn(missing_docs)]

mod allocator;
pub mod backward;
pub mod check;
mod error;
mod float;
mod fxhash;
pub mod gemm;
mod graph;
pub mod inspect;
mod node;
pub mod ops;
mod params;
mod rng;
mod scope;
mod simd;
pub mod snapshot;
mod spares;
mod values;

pub use check::{gradcheck, gradgradcheck, CheckOptions, ElementCheck, GradcheckReport};
pub use error::{Error, Result};
pub use float::Float;
pub use graph::{Graph, OpTime};
pub use inspect::{Collapse, GraphDef, NodeDef, NodeLabel, Query, Summary};
pub use node::{DType, Node, NodeId, Shape, Tensor, Value};
pub use ops::{ActivationKind, Cmp, Op, Reduction};
pub use params::{ParamScope, ParamStore};
pub use rng::Rng;
pub use scope::{Direction, ScopeGuard, ScopeId, ScopeInfo, Segment};

/// Re-export of `ndarray`, the tensor type of every value.
pub use ndarray;
