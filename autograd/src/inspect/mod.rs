//! Looking at a recorded graph: the text form, DOT, a petgraph view, summary
//! statistics, a serde form of the structure, and pictures rendered with
//! Graphviz.

mod collapsed;
mod def;
mod dot;
mod pet;
mod query;
mod render;
mod summary;
mod text;

pub use collapsed::Collapse;
pub use def::{GraphDef, NodeDef};
pub use pet::NodeLabel;
pub use query::Query;
pub use render::{dot_available, dot_program, render_dot, render_dot_with, ImageFormat};
pub use summary::Summary;
