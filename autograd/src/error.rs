//! The typed error every builder returns.

use crate::node::DType;

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when a graph is built, evaluated or differentiated.
///
/// Every variant that concerns a node names the op (`op`), the scope path the node
/// is (or would have been) recorded under (`scope`, `<root>` at the top level) and
/// the shapes involved, so a message reads like
/// `shape mismatch in matmul at lstm/l0/t3/gates: lhs [2, 3], rhs [4, 5]`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two operands whose shapes do not fit together.
    #[error("shape mismatch in {op} at {scope}: lhs {lhs:?}, rhs {rhs:?}")]
    ShapeMismatch {
        /// The op being recorded.
        op: &'static str,
        /// The scope path of the node.
        scope: String,
        /// The left (first) operand's shape.
        lhs: Vec<usize>,
        /// The right (second) operand's shape.
        rhs: Vec<usize>,
    },
    /// An operand or argument that the op cannot take (wrong rank, axis out of range, …).
    #[error("invalid input to {op} at {scope}: {reason}; input shapes {shapes:?}")]
    InvalidInput {
        /// The op being recorded.
        op: &'static str,
        /// The scope path of the node.
        scope: String,
        /// What is wrong.
        reason: String,
        /// The shapes of all inputs.
        shapes: Vec<Vec<usize>>,
    },
    /// An integer index (a token id, a class label) outside its range.
    #[error("index out of range in {op} at {scope}: index {index} is not in 0..{bound}; input shapes {shapes:?}")]
    IndexOutOfRange {
        /// The op being recorded.
        op: &'static str,
        /// The scope path of the node.
        scope: String,
        /// The offending index.
        index: i64,
        /// The exclusive upper bound.
        bound: usize,
        /// The shapes of all inputs.
        shapes: Vec<Vec<usize>>,
    },
    /// An input of the wrong element type (a float where indices are needed, or the reverse).
    #[error("wrong dtype in {op} at {scope}: input {input} is {got}, expected {expected}")]
    DTypeMismatch {
        /// The op being recorded.
        op: &'static str,
        /// The scope path of the node.
        scope: String,
        /// Position of the input.
        input: usize,
        /// The dtype the op needs there.
        expected: DType,
        /// The dtype it was given.
        got: DType,
    },
    /// A node id that does not belong to this graph.
    #[error("node %{node} given to {op} at {scope} does not belong to this graph")]
    ForeignNode {
        /// The op or method the id was given to.
        op: &'static str,
        /// The current scope path.
        scope: String,
        /// The id's index.
        node: usize,
    },
    /// A node whose value is not there: recorded in deferred mode and not run yet,
    /// or released by [`Graph::replay_keeping`](crate::Graph::replay_keeping).
    #[error(
        "node %{node} given to {op} at {scope} has no value: it was recorded deferred and not run yet, \
         or a lean replay released it (keep it with replay_keeping, or call replay)"
    )]
    NotComputed {
        /// The op or method that needed the value.
        op: &'static str,
        /// The current scope path.
        scope: String,
        /// The node's index.
        node: usize,
    },
    /// Reverse mode from a non-scalar output without a seed gradient.
    #[error("{op} at {scope} needs a scalar output or an explicit seed; node %{node} has shape {shape:?}")]
    NotScalar {
        /// `grad`.
        op: &'static str,
        /// The output node's scope path.
        scope: String,
        /// The output node.
        node: usize,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A parameter name the store does not hold.
    #[error("unknown parameter `{name}` in {op}")]
    UnknownParam {
        /// The method that looked it up.
        op: &'static str,
        /// The name.
        name: String,
    },
    /// A gradient check found analytic and numeric derivatives that disagree.
    #[error("{0}")]
    GradcheckFailed(Box<crate::check::GradcheckReport>),
    /// A file that could not be read or written.
    #[error("{op} {path}: {reason}")]
    Io {
        /// What was being done (`save`, `load`).
        op: &'static str,
        /// The file.
        path: String,
        /// The operating system's reason.
        reason: String,
    },
    /// An external program the call needs is not installed (Graphviz's `dot`).
    #[error("{op}: the program `{program}` was not found; {hint}")]
    ToolMissing {
        /// What was being done (`render_dot`).
        op: &'static str,
        /// The program looked for.
        program: String,
        /// How to install it.
        hint: String,
    },
    /// An external program ran and failed.
    #[error("{op}: `{program}` failed: {reason}")]
    ToolFailed {
        /// What was being done (`render_dot`).
        op: &'static str,
        /// The program.
        program: String,
        /// Its exit status and error output.
        reason: String,
    },
    /// Text that could not be parsed as what it should be (a serialized graph, …).
    #[error("cannot parse {what}: {reason}")]
    Parse {
        /// What was being parsed.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
}
