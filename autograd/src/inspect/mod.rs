//! Looking at a recorded graph: the text form, DOT, a petgraph view, summary
//! statistics, and a serde form of the structure.

mod collapsed;
mod def;
mod dot;
mod pet;
mod query;
mod summary;
mod text;

pub use collapsed::Collapse;
pub use def::{GraphDef, NodeDef};
pub use pet::NodeLabel;
pub use query::Query;
pub use summary::Summary;
