//! Scopes: where in a model a node was recorded (`lstm/l1/bwd/t7/forget_gate`).
//!
//! A scope is an interned path plus structured annotations (time step, layer,
//! direction, and whether the node belongs to a gradient computation). Entering a
//! scope costs one hash lookup; recording a node in it costs nothing more than
//! copying a `u32`, so no string is formatted per node.

use std::collections::HashMap;
use std::fmt;
use std::ops::{Deref, DerefMut};

use serde::{Deserialize, Serialize};

use crate::float::Float;
use crate::fxhash::FxMap;
use crate::graph::Graph;

/// An interned scope of one graph. `ScopeId::ROOT` is the empty path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ScopeId(pub(crate) u32);

impl ScopeId {
    /// The root scope (empty path).
    pub const ROOT: ScopeId = ScopeId(0);
    /// Position in the graph's scope table.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The direction of a recurrent pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Time runs forward (`fwd`).
    Forward,
    /// Time runs backward (`bwd`), as in the reverse half of a bidirectional layer.
    Backward,
}

impl Direction {
    /// The path segment: `fwd` or `bwd`.
    pub fn segment(self) -> &'static str {
        match self {
            Direction::Forward => "fwd",
            Direction::Backward => "bwd",
        }
    }
}

/// One path segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Segment {
    /// A free name (`lstm`, `gates`, `forget_gate`), by its index in the name table.
    Name(u32),
    /// A time step `t{n}`.
    Step(u32),
    /// A layer `l{n}`.
    Layer(u32),
    /// A direction `fwd`/`bwd`.
    Direction(Direction),
    /// The gradient twin `grad` of its parent: nodes the reverse sweep records for it.
    Grad,
}

/// What a scope says about the nodes recorded in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScopeInfo {
    /// The full path, segments joined by `/` (empty for the root).
    pub path: String,
    /// The parent scope (`None` for the root).
    pub parent: Option<ScopeId>,
    /// The innermost time step on the path.
    pub step: Option<u32>,
    /// The innermost layer on the path.
    pub layer: Option<u32>,
    /// The innermost direction on the path.
    pub direction: Option<Direction>,
    /// Whether the path passes through a gradient twin (the node is part of a backward pass).
    pub gradient: bool,
    /// The last segment, as written in the path (empty for the root).
    pub name: String,
}

/// The interned scope table of one graph.
///
/// A scope is stored as its parent, its last segment and its annotations; the path
/// text is built only when asked for ([`Scopes::info`]), so entering a new scope at
/// every time step formats and allocates nothing.
#[derive(Clone, Debug)]
pub(crate) struct Scopes {
    recs: Vec<Rec>,
    children: FxMap<(u32, Segment), u32>,
    names: HashMap<String, u32>,
    /// The free names, by their index in `Segment::Name`.
    name_texts: Vec<String>,
}

/// One scope as the table keeps it.
#[derive(Clone, Copy, Debug)]
struct Rec {
    parent: Option<ScopeId>,
    seg: Option<Segment>,
    step: Option<u32>,
    layer: Option<u32>,
    direction: Option<Direction>,
    gradient: bool,
}

impl Default for Scopes {
    fn default() -> Self {
        let root = Rec { parent: None, seg: None, step: None, layer: None, direction: None, gradient: false };
        Scopes { recs: vec![root], children: HashMap::default(), names: HashMap::new(), name_texts: Vec::new() }
    }
}

impl Scopes {
    /// How many scopes the table holds (the root included).
    pub(crate) fn len(&self) -> usize {
        self.recs.len()
    }

    /// Scope `id` with its path and name written out.
    pub(crate) fn info(&self, id: ScopeId) -> ScopeInfo {
        let mut segs: Vec<Segment> = Vec::new();
        let mut at = id;
        while let (Some(seg), Some(parent)) = (self.recs[at.index()].seg, self.recs[at.index()].parent) {
            segs.push(seg);
            at = parent;
        }
        // A separator only after a non-empty path (a scope named "" adds nothing to its
        // children's paths).
        let mut path = String::new();
        for seg in segs.iter().rev() {
            if !path.is_empty() {
                path.push('/');
            }
            self.write_segment(&mut path, *seg);
        }
        let mut name = String::new();
        if let Some(&seg) = segs.first() {
            self.write_segment(&mut name, seg);
        }
        let r = &self.recs[id.index()];
        ScopeInfo {
            path,
            parent: r.parent,
            step: r.step,
            layer: r.layer,
            direction: r.direction,
            gradient: r.gradient,
            name,
        }
    }

    /// Every scope with its path and name written out, in id order.
    pub(crate) fn all(&self) -> Vec<ScopeInfo> {
        (0..self.recs.len()).map(|i| self.info(ScopeId(i as u32))).collect()
    }

    fn write_segment(&self, out: &mut String, seg: Segment) {
        use std::fmt::Write;
        // Writing into a `String` cannot fail.
        let _ = match seg {
            Segment::Name(i) => {
                out.push_str(&self.name_texts[i as usize]);
                Ok(())
            }
            Segment::Step(t) => write!(out, "t{t}"),
            Segment::Layer(l) => write!(out, "l{l}"),
            Segment::Direction(d) => {
                out.push_str(d.segment());
                Ok(())
            }
            Segment::Grad => {
                out.push_str("grad");
                Ok(())
            }
        };
    }

    pub(crate) fn name_segment(&mut self, name: &str) -> Segment {
        if let Some(&i) = self.names.get(name) {
            return Segment::Name(i);
        }
        let i = self.name_texts.len() as u32;
        self.names.insert(name.to_owned(), i);
        self.name_texts.push(name.to_owned());
        Segment::Name(i)
    }

    /// The child of `parent` along `seg`, interned.
    pub(crate) fn child(&mut self, parent: ScopeId, seg: Segment) -> ScopeId {
        if let Some(&c) = self.children.get(&(parent.0, seg)) {
            return ScopeId(c);
        }
        let mut rec = self.recs[parent.index()];
        rec.parent = Some(parent);
        rec.seg = Some(seg);
        match seg {
            Segment::Step(t) => rec.step = Some(t),
            Segment::Layer(l) => rec.layer = Some(l),
            Segment::Direction(d) => rec.direction = Some(d),
            Segment::Grad => rec.gradient = true,
            Segment::Name(_) => {}
        }
        let id = self.recs.len() as u32;
        self.recs.push(rec);
        self.children.insert((parent.0, seg), id);
        ScopeId(id)
    }

    /// The gradient twin of `s`: `<path>/grad`, with the same annotations and `gradient` set.
    pub(crate) fn grad_twin(&mut self, s: ScopeId) -> ScopeId {
        self.child(s, Segment::Grad)
    }
}

/// Formats a scope path for messages: the path, or `<root>`.
pub(crate) struct ScopePath<'a>(pub &'a str);

impl fmt::Display for ScopePath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("<root>")
        } else {
            f.write_str(self.0)
        }
    }
}

/// A graph inside a scope: derefs to the [`Graph`] and leaves the scope when dropped.
///
/// ```
/// use unrolled_autograd::Graph;
/// let mut g = Graph::<f64>::new();
/// {
///     let mut g = g.scope("lstm");
///     let mut g = g.layer(0);
///     let mut g = g.step(3);
///     let x = g.scalar(1.0);
///     let y = g.tanh(x).unwrap();
///     assert_eq!(g.scope_info(g.node(y).unwrap().scope()).path, "lstm/l0/t3");
/// }
/// assert_eq!(g.scope_info(g.current_scope()).path, "");
/// ```
pub struct ScopeGuard<'g, T: Float> {
    graph: &'g mut Graph<T>,
    saved: ScopeId,
}

impl<'g, T: Float> ScopeGuard<'g, T> {
    pub(crate) fn new(graph: &'g mut Graph<T>, inner: ScopeId) -> Self {
        let saved = graph.current_scope();
        graph.set_current_scope(inner);
        ScopeGuard { graph, saved }
    }
}

impl<T: Float> Deref for ScopeGuard<'_, T> {
    type Target = Graph<T>;
    fn deref(&self) -> &Graph<T> {
        self.graph
    }
}

impl<T: Float> DerefMut for ScopeGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut Graph<T> {
        self.graph
    }
}

impl<T: Float> Drop for ScopeGuard<'_, T> {
    fn drop(&mut self) {
        self.graph.set_current_scope(self.saved);
    }
}
