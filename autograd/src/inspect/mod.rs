//! Looking at a recorded graph: the text form, DOT, a petgraph view, summary
//! statistics, and a serde form of the structure.

mod def;
mod dot;
mod pet;
mod summary;
mod text;

pub use def::{GraphDef, NodeDef};
pub use pet::NodeLabel;
pub use summary::Summary;
