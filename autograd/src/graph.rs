//! The graph: an append-only arena of nodes and their values.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use ndarray::{ArrayD, ArrayViewD, IxDyn};
use smallvec::SmallVec;

use crate::error::{Error, Result};
use crate::float::Float;
use crate::fxhash::{FxMap, FxSet};
use crate::gemm::PackCache;
use crate::node::{with_float, DType, Node, NodeId, Shape, Tensor, Value};
use crate::ops::{Constant, Fail, Input, Op, Param, Rule};
use crate::params::ParamStore;
use crate::scope::{Direction, ScopeGuard, ScopeId, ScopeInfo, ScopePath, Scopes, Segment};
use crate::spares::{self, Spares, REUSED_BYTES};
use crate::values::Values;

mod folded;
mod paired;
mod placed;
mod products;
mod small;
mod summed;
mod upcoming;
use folded::Fold;
use placed::Place;
use products::Joint;

static NEXT_TAG: AtomicU32 = AtomicU32::new(1);

/// A recorded computation: an append-only arena of [`Node`]s and their values.
///
/// Define-by-run: every builder method computes its node's value at once, so any
/// value can be read right after the node is built. The arena's order is a
/// topological order, so the reverse sweep ([`Graph::grad`]) is a reverse loop.
/// The same graph can be evaluated again on new inputs and parameters without
/// being recorded again ([`Graph::replay`]). A clone is the same recording: ids
/// are valid in both, and refer to the same nodes as long as neither grows.
///
/// ```
/// use ndarray::{arr1, ArrayD};
/// use unrolled_autograd::Graph;
/// # fn main() -> unrolled_autograd::Result<()> {
/// let mut g = Graph::<f64>::new();
/// let x = g.input(arr1(&[0.5, -1.0]).into_dyn());
/// let y = g.tanh(x)?;
/// let loss = g.sum_all(y)?;
/// let [dx] = g.grad(loss, &[x])?[..] else { unreachable!() };
/// let expect = 1.0 - 0.5f64.tanh().powi(2);
/// assert!((g.value(dx)?[0] - expect).abs() < 1e-15);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Graph<T: Float> {
    tag: u32,
    pub(crate) nodes: Vec<Node>,
    pub(crate) values: Values<T>,
    /// Whether each node's value is there (not deferred, released or skipped).
    has: Vec<bool>,
    /// For each node holding a `Value::Shared`: the buffer it holds with others.
    shared: Holders,
    pub(crate) scopes: Scopes,
    current: ScopeId,
    params: BTreeMap<String, NodeId>,
    deferred: bool,
    /// The last lean replay's plan ([`Graph::replay_keeping`]).
    plan: Option<LeanPlan>,
    /// Weights packed for the skinny product kernel, while their values stay put.
    packs: PackCache,
    /// The most bytes of values held at once during the last lean replay.
    peak_bytes: usize,
    /// Large buffers of released values, for later outputs of their length.
    spares: Spares,
    /// The buffers of the joins whose parts a lean replay is computing in place,
    /// by join (see `placed`).
    placing: FxMap<usize, Tensor<T>>,
    /// The join slots (join, part) that fused steps have written their `h'` block
    /// into, until the join is reached (see `placed`).
    teed: FxSet<(usize, usize)>,
    /// A node a lean replay has computed ahead with its sibling, not yet reached
    /// (see `paired`).
    premade: Option<usize>,
    /// The block sums of the sums the fused gradient kernels add their rows into, by
    /// sum (see `summed`).
    summing: FxMap<usize, summed::Summing<T>>,
    /// The bytes of values up to which a graph is replayed lean as a small one (see
    /// `small`).
    small_limit: usize,
}

/// What a [`Value::Shared`] value holds: the bytes of the shared buffer, whether the
/// value is a view of another value's buffer (a view counts none of its own), and the
/// buffer's identity (its address when it became shared), the same for the value and
/// its views.
#[derive(Clone, Copy, Debug)]
struct Holder {
    bytes: usize,
    view: bool,
    buffer: usize,
}

/// The [`Holder`] of every node holding a [`Value::Shared`], by node index: looked
/// up for every node a replay computes, in node order, so a slot per node (read in
/// the order it is laid out) rather than a hash map: W6's lean replay 10–25% faster
/// for 24 bytes a node up to the last shared one (1.5 MB at W5's T = 10000, 150 B
/// of its 41.6 KB per step).
#[derive(Clone, Debug, Default)]
struct Holders(Vec<Option<Holder>>);

impl Holders {
    fn get(&self, i: &usize) -> Option<&Holder> {
        self.0.get(*i).and_then(Option::as_ref)
    }
    fn insert(&mut self, i: usize, h: Holder) {
        if i >= self.0.len() {
            self.0.resize(i + 1, None);
        }
        self.0[i] = Some(h);
    }
    fn remove(&mut self, i: &usize) {
        if let Some(slot) = self.0.get_mut(*i) {
            *slot = None;
        }
    }
}

/// Slices and reshapes of values of fewer elements than this are copied rather than
/// viewed: for them a copy costs less than sharing the buffer. (A fused LSTM step of
/// `B = 8`, `H = 128`, W5's, has 6,144.)
const VIEW_ELEMENTS: usize = 1 << 12;

/// Node's value as a view of its one input's buffer, when its op makes one
/// ([`Rule::forward_view`]) of a row-major input: the input's value then shares its
/// buffer (it becomes [`Value::Shared`], once).
fn view_of<T: Float>(
    rule: &dyn Rule<T>,
    inputs: &[NodeId],
    values: &mut Values<T>,
    shared: &mut Holders,
    shape: &[usize],
) -> Option<(Tensor<T>, Holder)> {
    let [j] = inputs else { return None };
    let j = j.index();
    let s = values[j].shape();
    if s.iter().product::<usize>() < VIEW_ELEMENTS || !rule.views(s) {
        return None;
    }
    let row_major = match &values[j] {
        Value::Float(a) => a.is_standard_layout(),
        Value::Shared(a) => a.is_standard_layout(),
        Value::Index(_) => false,
    };
    if !row_major {
        return None;
    }
    if let Value::Float(_) = &values[j] {
        let a = into_float(values.take(j));
        let buffer = a.as_ptr() as usize;
        shared.insert(j, Holder { bytes: a.len() * std::mem::size_of::<T>(), view: false, buffer });
        values.set(j, Value::Shared(a.into_shared()));
    }
    match &values[j] {
        Value::Shared(x) => {
            let (bytes, buffer) = shared.get(&j).map_or((0, x.as_ptr() as usize), |h| (h.bytes, h.buffer));
            Some((rule.forward_view(x, shape), Holder { bytes, view: true, buffer }))
        }
        _ => None,
    }
}

/// The float array of a value the caller has checked to be a float value.
fn into_float<T>(v: Value<T>) -> ArrayD<T> {
    match v {
        Value::Float(a) => a,
        Value::Shared(_) | Value::Index(_) => unreachable!("checked to own its float buffer by the caller"),
    }
}

type OpTimes = std::collections::BTreeMap<&'static str, OpTime>;

fn add_time(by_op: &mut OpTimes, name: &'static str, dt: std::time::Duration) {
    let e = by_op.entry(name).or_insert(OpTime { op: name, count: 0, time: std::time::Duration::ZERO });
    e.count += 1;
    e.time += dt;
}

fn sorted_times(by_op: OpTimes) -> Vec<OpTime> {
    let mut v: Vec<OpTime> = by_op.into_values().collect();
    v.sort_by_key(|o| std::cmp::Reverse(o.time));
    v
}

/// What a lean replay computes and when it releases each value.
#[derive(Clone, Debug)]
struct LeanPlan {
    /// The graph's length and the kept nodes the plan was made for.
    len: usize,
    keep: Vec<NodeId>,
    /// Whether a kept node depends on the node.
    needed: Vec<bool>,
    /// Kept nodes and leaves: never released.
    pinned: Vec<bool>,
    /// The last needed node that reads each node ([`LeanPlan::NONE`] if none); a
    /// folded sum's terms are read last by the sum's reader, which computes through it.
    last: Vec<u32>,
    /// The last readers as if no sum were folded (empty when none is): the small
    /// graph's loop makes every sum, and its terms die there.
    small_last: Vec<u32>,
    /// Large copies of part of a leaf (a reshape, narrow or select of a leaf or of
    /// such a copy, of at least [`RECOPY_ELEMENTS`] elements): released after every
    /// reader and copied again for the next, rather than held from a forward reader
    /// to a backward one (a sequence's input segment, read by its projection and
    /// again by the weight's gradient).
    copies: Vec<bool>,
    /// Joins whose parts are computed into the join's buffer, and those parts (empty
    /// when there are none; see `placed`).
    places: Vec<Place>,
    /// Fused steps that also write their `h'` block into joins, by step (see `placed`).
    tees: Vec<placed::Tee>,
    /// Gate-gradient nodes computed with their sibling, the sibling's index by node
    /// ([`LeanPlan::NONE`] for others; empty when there are none; see `paired`).
    pairs: Vec<u32>,
    /// Sums whose one reader computes through them, and those readers (empty when there
    /// are none; see `folded`).
    folds: Vec<Fold>,
    /// Bias gradients summed by the kernels that write their rows, and those kernels'
    /// nodes (empty when there are none; see `summed`).
    sums: Vec<summed::Summed>,
    /// Products computed two at a time (empty when there are none; see `products`).
    joints: Vec<Joint>,
    /// The kernel after each product whose memory the product fetches ahead (empty
    /// when there is none; see `upcoming`).
    after: Vec<u32>,
    /// The bytes of every computed node's value together (see `small`).
    bytes: usize,
}

/// The size from which a copy of part of a leaf is made again rather than kept
/// between its readers ([`Graph::replay_keeping`]).
const RECOPY_ELEMENTS: usize = 1 << 16;

impl LeanPlan {
    const NONE: u32 = u32::MAX;

    fn new(nodes: &[Node], keep: &[NodeId], elem: usize) -> Self {
        let n = nodes.len();
        let mut pinned = vec![false; n];
        for k in keep {
            pinned[k.index()] = true;
        }
        let mut needed = pinned.clone();
        for i in (0..n).rev() {
            if needed[i] {
                for j in &nodes[i].inputs {
                    needed[j.index()] = true;
                }
            }
        }
        let mut last = vec![Self::NONE; n];
        let mut copies = vec![false; n];
        for (i, node) in nodes.iter().enumerate() {
            pinned[i] |= node.op.is_leaf();
            if needed[i] {
                for j in &node.inputs {
                    last[j.index()] = i as u32;
                }
            }
            let copy_op = matches!(node.op, Op::Reshape(_) | Op::Narrow(_) | Op::Select(_));
            copies[i] = copy_op
                && !pinned[i]
                && node.shape.iter().product::<usize>() >= RECOPY_ELEMENTS
                && node.inputs.first().is_some_and(|j| nodes[j.index()].op.is_leaf() || copies[j.index()]);
        }
        let plain_last = last.clone();
        let mut folds = folded::folds(nodes, &needed, &pinned, &copies, &mut last);
        folded::slices(nodes, &needed, &pinned, &copies, &mut last, &mut folds);
        let small_last = if folds.is_empty() { Vec::new() } else { plain_last };
        let (places, tees) = placed::places(nodes, &needed, &pinned, elem);
        let pairs = paired::pairs(nodes, &needed, &pinned);
        let sums = summed::sums(nodes, &needed, &pairs, &places);
        let joints = products::joints(nodes, &needed, &last, &copies, &pinned);
        let after = upcoming::after_products(nodes, &needed, |k| matches!(folds.get(k), Some(Fold::Through(_))));
        let computed = nodes.iter().filter(|n| !n.op.is_leaf());
        let bytes = computed.map(|n| n.shape.iter().product::<usize>() * elem).sum();
        LeanPlan {
            len: n,
            keep: keep.to_vec(),
            needed,
            pinned,
            last,
            small_last,
            copies,
            places,
            tees,
            pairs,
            sums,
            folds,
            joints,
            after,
            bytes,
        }
    }
}

impl<T: Float> Default for Graph<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Float> Graph<T> {
    /// An empty graph.
    pub fn new() -> Self {
        crate::allocator::settle();
        Graph {
            tag: NEXT_TAG.fetch_add(1, Ordering::Relaxed),
            nodes: Vec::new(),
            values: Values::new(),
            has: Vec::new(),
            shared: Holders::default(),
            scopes: Scopes::default(),
            current: ScopeId::ROOT,
            params: BTreeMap::new(),
            deferred: false,
            plan: None,
            packs: PackCache::default(),
            peak_bytes: 0,
            spares: Spares::default(),
            placing: FxMap::default(),
            teed: Default::default(),
            premade: None,
            summing: FxMap::default(),
            small_limit: small::SMALL_GRAPH_BYTES,
        }
    }

    /// An empty graph with room for `n` nodes.
    pub fn with_capacity(n: usize) -> Self {
        let mut g = Self::new();
        g.nodes.reserve(n);
        g.values.reserve(n);
        g.has.reserve(n);
        g
    }

    /// The number of recorded nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether nothing is recorded yet.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// All nodes in recording (topological) order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The id of the node at `index`, if there is one.
    pub fn id(&self, index: usize) -> Option<NodeId> {
        (index < self.nodes.len()).then(|| self.mk_id(index))
    }

    /// The ids of all nodes, in order.
    pub fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        (0..self.nodes.len()).map(|i| self.mk_id(i))
    }

    pub(crate) fn mk_id(&self, index: usize) -> NodeId {
        NodeId { index: index as u32, graph: self.tag }
    }

    /// Checks that `id` belongs to this graph.
    pub fn check(&self, id: NodeId, op: &'static str) -> Result<()> {
        if id.graph != self.tag || id.index() >= self.nodes.len() {
            return Err(Error::ForeignNode { op, scope: self.scope_path(), node: id.index() });
        }
        Ok(())
    }

    /// The node record of `id`.
    ///
    /// # Errors
    /// [`Error::ForeignNode`] if `id` is not of this graph.
    pub fn node(&self, id: NodeId) -> Result<&Node> {
        self.check(id, "node")?;
        Ok(&self.nodes[id.index()])
    }

    /// The shape of `id`'s value.
    ///
    /// # Errors
    /// [`Error::ForeignNode`] if `id` is not of this graph.
    pub fn shape(&self, id: NodeId) -> Result<&[usize]> {
        self.check(id, "shape")?;
        Ok(&self.nodes[id.index()].shape)
    }

    pub(crate) fn shape_of(&self, id: NodeId) -> &[usize] {
        &self.nodes[id.index()].shape
    }

    /// Whether node `i`'s value is there (not deferred, not released).
    fn computed(&self, i: usize) -> bool {
        self.has[i]
    }

    /// An error naming node `i`'s op if one of its inputs has no value.
    fn check_inputs(&self, i: usize) -> Result<()> {
        let node = &self.nodes[i];
        match node.inputs.iter().find(|j| !self.computed(j.index())) {
            Some(j) => Err(self.not_computed(node.op.name(), j.index())),
            None => Ok(()),
        }
    }

    /// Drops node `i`'s value (a lean replay's release).
    fn release(&mut self, i: usize) {
        self.packs.forget(i);
        if self.holds_large_buffer(i) {
            self.recycle(i);
        } else {
            if let Value::Shared(_) = self.values[i] {
                self.shared.remove(&i);
            }
            drop(self.values.take(i));
        }
        self.has[i] = false;
    }

    /// Whether node `i`'s value holds a buffer large enough to be kept for reuse (a
    /// view's is the whole buffer it shares; see `spares`).
    fn holds_large_buffer(&self, i: usize) -> bool {
        let bytes = match &self.values[i] {
            Value::Float(a) => a.len() * std::mem::size_of::<T>(),
            Value::Shared(_) => self.shared.get(&i).map_or(0, |h| h.bytes),
            Value::Index(_) => 0,
        };
        bytes >= REUSED_BYTES
    }

    /// Empties node `i`'s slot; a large buffer that it alone held goes to the spares
    /// lent to this thread, if any (see `spares`).
    fn recycle(&mut self, i: usize) {
        self.shared.remove(&i);
        let owned = match self.values.take(i) {
            Value::Float(a) => a,
            Value::Shared(a) => match a.try_into_owned_nocopy() {
                Ok(a) => a,
                Err(_) => return, // still read by a view
            },
            Value::Index(_) => return,
        };
        // The whole buffer (a view's is more than its own elements); a small one is freed.
        spares::give(owned.into_raw_vec_and_offset().0);
    }

    fn not_computed(&self, op: &'static str, i: usize) -> Error {
        Error::NotComputed { op, scope: self.scope_path(), node: i }
    }

    /// Whether `id` has a value now: false for a node recorded in deferred mode
    /// before any run, or released by [`Graph::replay_keeping`].
    ///
    /// # Errors
    /// [`Error::ForeignNode`] for another graph's id.
    pub fn has_value(&self, id: NodeId) -> Result<bool> {
        self.check(id, "has_value")?;
        Ok(self.computed(id.index()))
    }

    /// The float value of `id`, as a view of the graph's buffer (`.to_owned()` copies
    /// it out). A reshape or slice of a large row-major value shares its input's
    /// buffer, so its view reads the same memory: a slice along the first axis is
    /// row-major, one along a later axis keeps the input's strides (a state block of a
    /// fused step's output: `[B, H]` rows `6H` apart).
    ///
    /// ```
    /// use ndarray::ArrayD;
    /// use unrolled_autograd::Graph;
    /// # fn main() -> unrolled_autograd::Result<()> {
    /// let mut g = Graph::<f32>::new();
    /// let x = g.input(ArrayD::ones(ndarray::IxDyn(&[64, 512])));
    /// let y = g.tanh(x)?;
    /// let row = g.select(y, 0, 5)?; // no copy: row 5 of y's buffer
    /// assert_eq!(g.value(row)?.as_ptr(), g.value(y)?.as_ptr().wrapping_add(5 * 512));
    /// let copy: ndarray::ArrayD<f32> = g.value(row)?.to_owned();
    /// assert_eq!(copy.shape(), &[512]);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::ForeignNode`] for another graph's id, [`Error::DTypeMismatch`] for an index node,
    /// [`Error::NotComputed`] for a node without a value (deferred, or released by a lean replay).
    pub fn value(&self, id: NodeId) -> Result<ArrayViewD<'_, T>> {
        self.check(id, "value")?;
        if !self.computed(id.index()) {
            return Err(self.not_computed("value", id.index()));
        }
        match &self.values[id.index()] {
            Value::Float(a) => Ok(a.view()),
            Value::Shared(a) => Ok(a.view()),
            Value::Index(_) => Err(self.dtype_err("value", 0, T::DTYPE, DType::I64)),
        }
    }

    /// The integer value of an index node.
    ///
    /// # Errors
    /// As [`Graph::value`], the other way round.
    pub fn index_value(&self, id: NodeId) -> Result<&ArrayD<i64>> {
        self.check(id, "index_value")?;
        if !self.computed(id.index()) {
            return Err(self.not_computed("index_value", id.index()));
        }
        match &self.values[id.index()] {
            Value::Index(a) => Ok(a),
            Value::Float(_) | Value::Shared(_) => Err(self.dtype_err("index_value", 0, DType::I64, T::DTYPE)),
        }
    }

    /// The value of a scalar (one-element) node as `f64`.
    ///
    /// # Errors
    /// As [`Graph::value`]; [`Error::NotScalar`] if the node has more than one element.
    pub fn scalar_value(&self, id: NodeId) -> Result<f64> {
        let v = self.value(id)?;
        if v.len() != 1 {
            return Err(Error::NotScalar {
                op: "scalar_value",
                scope: self.scope_path(),
                node: id.index(),
                shape: v.shape().to_vec(),
            });
        }
        Ok(v.iter().next().map(|x| x.f64()).unwrap_or_default())
    }

    fn dtype_err(&self, op: &'static str, input: usize, expected: DType, got: DType) -> Error {
        Error::DTypeMismatch { op, scope: self.scope_path(), input, expected, got }
    }

    // ----- leaves ---------------------------------------------------------------

    fn leaf(&mut self, op: Op, value: Value<T>) -> NodeId {
        let shape: Shape = value.shape().iter().copied().collect();
        let dtype = match value {
            Value::Float(_) | Value::Shared(_) => T::DTYPE,
            Value::Index(_) => DType::I64,
        };
        self.append(op, &[], shape, dtype, Some(value))
    }

    /// Records an input: a leaf whose value can be replaced for a replay
    /// ([`Graph::set_value`]) and differentiated against.
    pub fn input(&mut self, value: ArrayD<T>) -> NodeId {
        self.leaf(Op::Input(Input { name: None }), Value::Float(value))
    }

    /// Records a named input (the name shows in the text form and the DOT drawing).
    pub fn input_named(&mut self, name: &str, value: ArrayD<T>) -> NodeId {
        self.leaf(Op::Input(Input { name: Some(name.to_owned()) }), Value::Float(value))
    }

    /// Records an integer input (token ids, class labels): int64, never differentiated.
    pub fn index_input(&mut self, value: ArrayD<i64>) -> NodeId {
        self.leaf(Op::Input(Input { name: None }), Value::Index(value))
    }

    /// Records a constant: a leaf that is not expected to change between replays.
    pub fn constant(&mut self, value: ArrayD<T>) -> NodeId {
        self.leaf(Op::Constant(Constant), Value::Float(value))
    }

    /// Records a 0-d constant.
    pub fn scalar(&mut self, v: f64) -> NodeId {
        self.constant(ArrayD::from_elem(IxDyn(&[]), T::of(v)))
    }

    /// Records a constant of zeros.
    pub fn zeros(&mut self, shape: &[usize]) -> NodeId {
        self.constant(ArrayD::zeros(IxDyn(shape)))
    }

    /// Records a constant of ones.
    pub fn ones(&mut self, shape: &[usize]) -> NodeId {
        self.constant(ArrayD::from_elem(IxDyn(shape), T::one()))
    }

    /// The leaf of parameter `name`, read from `store`. Asking twice for the same
    /// name in one graph returns the same node: a parameter used at every time step
    /// shows as fan-out, and its gradient is the sum over the steps.
    ///
    /// # Errors
    /// [`Error::UnknownParam`] if the store has no such name.
    pub fn param(&mut self, store: &ParamStore<T>, name: &str) -> Result<NodeId> {
        if let Some(&id) = self.params.get(name) {
            return Ok(id);
        }
        let value = store.get(name).ok_or_else(|| Error::UnknownParam { op: "param", name: name.to_owned() })?.clone();
        let saved = self.current;
        self.current = ScopeId::ROOT;
        let id = self.leaf(Op::Param(Param { name: name.to_owned() }), Value::Float(value));
        self.current = saved;
        self.params.insert(name.to_owned(), id);
        Ok(id)
    }

    /// Uses the existing float node `id` as parameter `name` from now on: a later
    /// [`Graph::param`] for `name` returns `id` instead of reading the store. This
    /// ties weights, lets weights come from another computation (a hypernetwork),
    /// and lets [`gradcheck`](crate::gradcheck) treat parameters as inputs.
    ///
    /// # Errors
    /// [`Error::ForeignNode`]; [`Error::InvalidInput`] if `name` is already recorded
    /// or bound, or `id` is an index node.
    pub fn bind_param(&mut self, name: &str, id: NodeId) -> Result<()> {
        self.check(id, "bind_param")?;
        if self.params.contains_key(name) || self.nodes[id.index()].dtype == DType::I64 {
            return Err(Error::InvalidInput {
                op: "bind_param",
                scope: self.scope_path(),
                reason: format!(
                    "`{name}` is already a parameter of this graph, or %{} is not a float node",
                    id.index()
                ),
                shapes: vec![self.shape_of(id).to_vec()],
            });
        }
        self.params.insert(name.to_owned(), id);
        Ok(())
    }

    pub(crate) fn register_param(&mut self, name: &str, id: NodeId) {
        self.params.insert(name.to_owned(), id);
    }

    /// The parameter leaves recorded so far, by name (sorted).
    pub fn params(&self) -> &BTreeMap<String, NodeId> {
        &self.params
    }

    // ----- recording --------------------------------------------------------------

    /// Appends a node with its value, or with none (`value: None`, deferred or not yet run).
    pub(crate) fn append(
        &mut self,
        op: Op,
        inputs: &[NodeId],
        shape: Shape,
        dtype: DType,
        value: Option<Value<T>>,
    ) -> NodeId {
        let id = self.mk_id(self.nodes.len());
        self.nodes.push(Node { op, inputs: SmallVec::from_slice(inputs), shape, dtype, scope: self.current });
        self.has.push(value.is_some());
        self.values.push(value);
        id
    }

    /// Records `op` over `inputs`: checks ids, dtypes and shapes, computes the value.
    pub(crate) fn push(&mut self, op: Op, inputs: &[NodeId]) -> Result<NodeId> {
        let name = op.name();
        for &id in inputs {
            self.check(id, name)?;
        }
        let rule = op.rule::<T>();
        let index_inputs = rule.index_inputs();
        for (k, &id) in inputs.iter().enumerate() {
            let want = if index_inputs.contains(&k) { DType::I64 } else { T::DTYPE };
            let got = self.nodes[id.index()].dtype;
            if got != want {
                return Err(self.dtype_err(name, k, want, got));
            }
        }
        let shapes: SmallVec<[&[usize]; 4]> = inputs.iter().map(|i| &self.nodes[i.index()].shape[..]).collect();
        let shape = rule.infer(&shapes).and_then(crate::ops::addressable).map_err(|f| self.fail(name, f, inputs))?;
        drop(shapes);
        if self.deferred {
            return Ok(self.append(op, inputs, shape, T::DTYPE, None));
        }
        if let Some(j) = inputs.iter().find(|j| !self.computed(j.index())) {
            return Err(self.not_computed(name, j.index()));
        }
        if let Some((v, holder)) = view_of(rule, inputs, &mut self.values, &mut self.shared, &shape) {
            let id = self.append(op, inputs, shape, T::DTYPE, Some(Value::Shared(v)));
            self.shared.insert(id.index(), holder);
            return Ok(id);
        }
        let vals: SmallVec<[&Value<T>; 4]> = inputs.iter().map(|i| &self.values[i.index()]).collect();
        let out = rule.forward(&vals, &shape).map_err(|f| self.fail(name, f, inputs))?;
        drop(vals);
        debug_assert_eq!(out.shape(), &shape[..], "{name}: forward disagrees with infer");
        Ok(self.append(op, inputs, shape, T::DTYPE, Some(Value::Float(out))))
    }

    /// Turns an op's failure into a typed error with op, scope and shapes.
    pub(crate) fn fail(&self, op: &'static str, f: Fail, inputs: &[NodeId]) -> Error {
        let scope = self.scope_path();
        let shapes = || inputs.iter().map(|i| self.nodes[i.index()].shape.to_vec()).collect();
        match f {
            Fail::Mismatch(lhs, rhs) => Error::ShapeMismatch { op, scope, lhs: lhs.to_vec(), rhs: rhs.to_vec() },
            Fail::Invalid(reason) => Error::InvalidInput { op, scope, reason, shapes: shapes() },
            Fail::IndexRange { index, bound } => Error::IndexOutOfRange { op, scope, index, bound, shapes: shapes() },
        }
    }

    // ----- replay -------------------------------------------------------------------

    /// Replaces the value of an input or constant leaf for the next [`Graph::replay`].
    ///
    /// # Errors
    /// [`Error::ForeignNode`]; [`Error::InvalidInput`] if the node is not a float leaf;
    /// [`Error::ShapeMismatch`] if the shape differs from the recorded one.
    pub fn set_value(&mut self, id: NodeId, value: ArrayD<T>) -> Result<()> {
        self.set_leaf(id, Value::Float(value))
    }

    /// Replaces the value of an index input for the next [`Graph::replay`].
    ///
    /// # Errors
    /// As [`Graph::set_value`].
    pub fn set_index_value(&mut self, id: NodeId, value: ArrayD<i64>) -> Result<()> {
        self.set_leaf(id, Value::Index(value))
    }

    fn set_leaf(&mut self, id: NodeId, value: Value<T>) -> Result<()> {
        self.check(id, "set_value")?;
        let node = &self.nodes[id.index()];
        let kind_ok = matches!(node.op, Op::Input(_) | Op::Constant(_) | Op::Param(_));
        let dtype = match value {
            Value::Float(_) | Value::Shared(_) => T::DTYPE,
            Value::Index(_) => DType::I64,
        };
        if !kind_ok {
            return Err(Error::InvalidInput {
                op: "set_value",
                scope: self.path_of(node.scope),
                reason: format!("%{} is a computed {} node, not a leaf", id.index(), node.op.name()),
                shapes: vec![node.shape.to_vec()],
            });
        }
        if node.dtype != dtype {
            return Err(self.dtype_err("set_value", 0, node.dtype, dtype));
        }
        if node.shape[..] != *value.shape() {
            return Err(Error::ShapeMismatch {
                op: "set_value",
                scope: self.path_of(node.scope),
                lhs: node.shape.to_vec(),
                rhs: value.shape().to_vec(),
            });
        }
        self.packs.forget(id.index());
        self.values.set(id.index(), value);
        self.has[id.index()] = true;
        Ok(())
    }

    /// Reloads every parameter leaf from `store` (for a replay after an optimizer step).
    ///
    /// # Errors
    /// [`Error::UnknownParam`] if a recorded name is missing; [`Error::ShapeMismatch`] if a shape changed.
    pub fn load_params(&mut self, store: &ParamStore<T>) -> Result<()> {
        // Parameter leaves only (a bound parameter is computed, not loaded), all
        // checked before any is changed, so a failed load changes nothing.
        let leaves: Vec<(&String, NodeId)> = self
            .params
            .iter()
            .filter(|(_, id)| matches!(self.nodes[id.index()].op, Op::Param(_)))
            .map(|(k, v)| (k, *v))
            .collect();
        for &(name, id) in &leaves {
            let v = store.get(name).ok_or_else(|| Error::UnknownParam { op: "load_params", name: name.clone() })?;
            if v.shape() != self.shape_of(id) {
                return Err(Error::ShapeMismatch {
                    op: "load_params",
                    scope: name.clone(),
                    lhs: self.shape_of(id).to_vec(),
                    rhs: v.shape().to_vec(),
                });
            }
        }
        let updates: Vec<(usize, &ArrayD<T>)> =
            leaves.iter().filter_map(|&(n, id)| store.get(n).map(|v| (id.index(), v))).collect();
        for (i, v) in updates {
            self.packs.forget(i);
            match &mut self.values[i] {
                Value::Float(dst) => dst.assign(v),
                // Views of the old value keep it; the leaf gets a buffer of its own.
                shared @ Value::Shared(_) => *shared = Value::Float(v.clone()),
                Value::Index(_) => {}
            }
        }
        Ok(())
    }

    /// Evaluates every computed node again, in order, from the current leaf values.
    /// Gradient nodes recorded by [`Graph::grad`] are ordinary nodes, so they are
    /// recomputed too: after a replay they hold the gradients at the new values.
    ///
    /// # Errors
    /// An op's error for values it cannot take (an index out of range after
    /// [`Graph::set_index_value`]). The nodes before the failing one then hold new
    /// values and the rest old ones (the failing node itself none, if its old value
    /// was large enough to give its buffer to the new one): fix the input and replay
    /// again.
    pub fn replay(&mut self) -> Result<()> {
        self.replay_range(0, self.nodes.len())
    }

    /// Deferred recording: while on, builder methods check ids, dtypes and shapes
    /// and record nodes (forward and gradient alike) but compute nothing; the first
    /// [`Graph::replay`] or [`Graph::replay_keeping`] computes them. Recording then
    /// costs only bookkeeping, and a lean replay never holds every value at once.
    /// Errors that depend on values (an index out of range) surface at the run.
    ///
    /// ```
    /// use ndarray::arr1;
    /// use unrolled_autograd::{Error, Graph};
    /// # fn main() -> unrolled_autograd::Result<()> {
    /// let mut g = Graph::<f64>::new();
    /// g.set_deferred(true);
    /// let x = g.input(arr1(&[0.5, -1.0]).into_dyn());
    /// let y = g.tanh(x)?;
    /// let loss = g.sum_all(y)?;
    /// let dx = g.grad(loss, &[x])?[0];
    /// assert!(matches!(g.value(dx), Err(Error::NotComputed { .. })));
    /// g.replay_keeping(&[loss, dx])?;             // computes, keeping only what is asked for
    /// assert!((g.value(dx)?[0] - (1.0 - 0.5f64.tanh().powi(2))).abs() < 1e-15);
    /// assert!(!g.has_value(y)?);                  // released after its last use
    /// # Ok(()) }
    /// ```
    pub fn set_deferred(&mut self, on: bool) {
        self.deferred = on;
    }

    /// Whether builder methods defer computing ([`Graph::set_deferred`]).
    pub fn is_deferred(&self) -> bool {
        self.deferred
    }

    /// As [`Graph::replay`], but computes only what `keep` depends on and keeps only
    /// the values of `keep` and of the leaves: every other value is released as soon
    /// as the last node reading it has been computed, and nodes `keep` does not
    /// depend on (an unread tap, a slice nobody uses) are not computed at all. The
    /// peak memory is the largest set of values alive at one point of the run: for
    /// backpropagation through time, the activations the reverse sweep still needs,
    /// not every node of the graph. Released or skipped values read as
    /// [`Error::NotComputed`]; a plain [`Graph::replay`] computes them all again.
    ///
    /// # Errors
    /// [`Error::ForeignNode`] for a `keep` id of another graph; as [`Graph::replay`].
    pub fn replay_keeping(&mut self, keep: &[NodeId]) -> Result<()> {
        for &k in keep {
            self.check(k, "replay_keeping")?;
        }
        // The plan depends only on the graph and `keep`: made once, reused by later replays.
        let plan = match self.plan.take() {
            Some(p) if p.len == self.nodes.len() && p.keep == keep => p,
            _ => LeanPlan::new(&self.nodes, keep, std::mem::size_of::<T>()),
        };
        let result = self.run_plan(&plan, None);
        self.plan = Some(plan);
        result
    }

    /// As [`Graph::replay_keeping`], timing every computed node as
    /// [`Graph::replay_profile`] does: where a lean training step's time goes.
    ///
    /// # Errors
    /// As [`Graph::replay_keeping`].
    pub fn replay_keeping_profile(&mut self, keep: &[NodeId]) -> Result<Vec<OpTime>> {
        for &k in keep {
            self.check(k, "replay_keeping_profile")?;
        }
        let plan = LeanPlan::new(&self.nodes, keep, std::mem::size_of::<T>());
        let mut by_op = OpTimes::new();
        self.run_plan(&plan, Some(&mut by_op))?;
        Ok(sorted_times(by_op))
    }

    fn run_plan(&mut self, plan: &LeanPlan, timer: Option<&mut OpTimes>) -> Result<()> {
        self.placing.clear(); // a failed run's
        self.teed.clear();
        self.premade = None;
        self.clear_summing();
        let small = self.small_limit > 0 && plan.bytes <= self.small_limit;
        self.with_spares(|g| if small { g.run_plan_small(plan, timer) } else { g.run_plan_lent(plan, timer) })
    }

    /// Sets the size up to which [`Graph::replay_keeping`] replays this graph as a small
    /// one: when the values of all its computed nodes together take at most `bytes`
    /// (256 KiB unless set), a lean replay computes the same values, bit for bit, and
    /// releases each after its last reader, but without the passes that only pay for
    /// large values (a sum folded into its reader, which this loop makes instead,
    /// parts written into their join's rows, large leaf slices copied again): a
    /// shorter loop per node. `0` replays every graph with those passes.
    ///
    /// ```
    /// use ndarray::arr1;
    /// use unrolled_autograd::Graph;
    /// # fn main() -> unrolled_autograd::Result<()> {
    /// let mut g = Graph::<f64>::new();
    /// g.set_deferred(true);
    /// let x = g.input(arr1(&[0.5, -1.0]).into_dyn());
    /// let y = g.tanh(x)?;
    /// let loss = g.sum_all(y)?;
    /// let dx = g.grad(loss, &[x])?[0];
    /// g.replay_keeping(&[loss, dx])?;          // a small graph's loop
    /// let small = g.value(dx)?.to_owned();
    /// g.set_small_graph_limit(0);
    /// g.replay_keeping(&[loss, dx])?;          // every pass of a lean replay
    /// assert_eq!(g.value(dx)?, small);
    /// assert!(!g.has_value(y)?);               // released either way
    /// # Ok(()) }
    /// ```
    pub fn set_small_graph_limit(&mut self, bytes: usize) {
        self.small_limit = bytes;
    }

    fn run_plan_lent(&mut self, plan: &LeanPlan, mut timer: Option<&mut OpTimes>) -> Result<()> {
        let (last, pinned, copies) = (&plan.last, &plan.pinned, &plan.copies);
        let mut live = self.held_bytes();
        let mut peak = live;
        for i in 0..self.nodes.len() {
            if self.nodes[i].op.is_leaf() {
                continue;
            }
            if !plan.needed[i] || plan.folded(i) {
                if self.computed(i) {
                    live -= self.freed_bytes(i);
                    self.release(i);
                }
                continue;
            }
            // A product computed later, with another of its shape.
            if plan.later(i) {
                continue;
            }
            // A copy released after an earlier reader is made again for this one (not for
            // a node made ahead with another, which read its inputs then).
            for k in 0..self.nodes[i].inputs.len() {
                let j = self.nodes[i].inputs[k].index();
                if copies[j] && !self.computed(j) && self.premade != Some(i) {
                    self.recopy(j, &mut live)?;
                    peak = peak.max(live);
                }
            }
            // The sum the node computes through, whose terms it reads instead.
            let through = plan.through(i);
            // A select of a bias sum that is not made, or a fused step adding that sum's
            // bias: both read the sum's terms instead.
            let (sliced, biased) = (plan.slice_of(i), plan.biased(i));
            let sum_of = through.or(sliced).or(biased);
            // A term of the sum computed through that is a select of a bias sum (not
            // made): the node adds that sum's bias, and reads its terms too.
            let through_bias = through.and_then(|j| plan.biased_term(&self.nodes, j));
            let mut extra: SmallVec<[usize; 4]> = SmallVec::new();
            for s in sum_of.into_iter().chain(through_bias.map(|(_, bs)| bs)) {
                extra.extend(self.nodes[s].inputs.iter().map(|j| j.index()));
            }
            let dying = |j: usize| (last[j] == i as u32 || copies[j]) && !pinned[j];
            // The bytes of the node and of what it reads that may hand its buffer over
            // (only an input read for the last time is taken, to compute in place; the
            // others keep their values and their bytes). An input read twice counts
            // twice on both sides: computing in place takes only an input read once.
            let held = |g: &Self, own: usize| -> usize {
                let reads = g.nodes[i].inputs.iter().map(|j| j.index()).chain(extra.iter().copied());
                own + reads.filter(|&j| dying(j) && g.has[j]).map(|j| g.bytes(j)).sum::<usize>()
            };
            // The node's value from an earlier run frees only what no view still holds.
            let before = held(self, if self.has[i] { self.freed_bytes(i) } else { 0 });
            let mut t0 = timer.is_some().then(std::time::Instant::now);
            // One node at a time is made ahead of its turn.
            let pair =
                plan.pairs.get(i).filter(|&&k| k != LeanPlan::NONE && self.premade.is_none()).map(|&k| k as usize);
            let place_of = |j: usize| match plan.places.get(j) {
                Some(&Place::Part { join, index }) => Some((join as usize, index as usize)),
                _ => None,
            };
            let place = place_of(i);
            let folded = match (through, sum_of) {
                (None, Some(j)) => {
                    if sliced.is_some() {
                        self.compute_slice(i, j)?;
                    } else {
                        let tees = self.tee_slots(plan.tees_of(i), &mut live);
                        self.compute_step(i, Some(j), &tees)?;
                    }
                    true
                }
                (Some(j), _) => {
                    let done = self.compute_through((i, j), through_bias, place, dying, &mut live)?;
                    if !done {
                        if let Some((x, bs)) = through_bias {
                            self.add_bias_to_slice(x, bs)?; // the select as the bias sum's
                        }
                        self.compute(j)?; // the sum made after all, for the usual path
                        if let (Some(t), Some(tj)) = (timer.as_deref_mut(), t0) {
                            add_time(t, self.nodes[j].op.name(), tj.elapsed());
                            t0 = Some(std::time::Instant::now());
                        }
                    }
                    done
                }
                (None, None) => false,
            };
            let joint = plan.with(i);
            let ahead = plan.upcoming(i);
            if let Some(k) = ahead {
                crate::gemm::upcoming(self.upcoming_of(i, k, plan));
            }
            let done = if folded {
                true
            } else if let Some(e) = joint {
                self.compute_products(e, i, copies, &mut live)?;
                if let Some(t) = timer.as_deref_mut() {
                    add_time(t, self.nodes[e].op.name(), std::time::Duration::ZERO);
                }
                true
            } else if let Some(k) = pair {
                let feeds = if self.sums_in_blocks(i) { [plan.feeds(i), plan.feeds(k)] } else { [None; 2] };
                self.compute_pair((i, place), (k, place_of(k)), feeds, &mut live)?;
                true
            } else if self.premade == Some(i) {
                self.premade = None; // made with its sibling
                true
            } else if let Some((join, index)) = place {
                let feeds = plan.feeds(i).filter(|_| self.sums_in_blocks(i));
                self.compute_part(i, (join, index), feeds, &mut live)?
            } else if plan.is_summed(i) && self.sum_added(i) {
                true
            } else {
                matches!(plan.places.get(i), Some(Place::Join)) && self.take_join(i, &mut live)
            };
            let teed = plan.tees_of(i);
            if !done && !teed.is_empty() {
                let tees = self.tee_slots(teed, &mut live);
                self.compute_step(i, None, &tees)?;
            } else if !done && !self.reshape_in_place(i, dying) && !self.compute_in_place(i, dying) {
                self.compute(i)?;
            }
            if ahead.is_some() {
                crate::gemm::upcoming(crate::gemm::Upcoming::default()); // not taken by a skinny product
            }
            if let (Some(t), Some(t0)) = (timer.as_deref_mut(), t0) {
                add_time(t, self.nodes[i].op.name(), t0.elapsed());
            }
            live = live - before + held(self, if self.has[i] { self.bytes(i) } else { 0 });
            peak = peak.max(live);
            for k in 0..self.nodes[i].inputs.len() + extra.len() {
                let j = match k.checked_sub(self.nodes[i].inputs.len()) {
                    None => self.nodes[i].inputs[k].index(),
                    Some(t) => extra[t],
                };
                if (last[j] == i as u32 || copies[j]) && !pinned[j] && self.has[j] {
                    live -= self.freed_bytes(j);
                    self.release(j);
                }
            }
            if let Some(e) = joint {
                self.release_after_products(e, plan, &mut live);
            }
        }
        self.peak_bytes = peak;
        Ok(())
    }

    /// Computes the released copy `j` of part of a leaf again (and the copies it reads).
    fn recopy(&mut self, j: usize, live: &mut usize) -> Result<()> {
        let from = self.nodes[j].inputs[0].index();
        let from_copy = !self.computed(from);
        if from_copy {
            self.recopy(from, live)?;
        }
        self.compute(j)?;
        *live += self.bytes(j);
        if from_copy {
            *live -= self.freed_bytes(from);
            self.release(from);
        }
        Ok(())
    }

    /// The bytes of node `i`'s value (0 without one). A view of another value's
    /// buffer counts none of its own: the buffer is counted once, by the value it views.
    fn bytes(&self, i: usize) -> usize {
        match &self.values[i] {
            Value::Float(a) => a.len() * std::mem::size_of::<T>(),
            Value::Shared(_) => self.shared.get(&i).map_or(0, |h| if h.view { 0 } else { h.bytes }),
            Value::Index(a) => a.len() * std::mem::size_of::<i64>(),
        }
    }

    /// The bytes of every value held now, a shared buffer once (a view kept from an
    /// earlier run may be the last holder of its buffer).
    fn held_bytes(&self) -> usize {
        let mut buffers = std::collections::HashSet::new();
        let mut total = 0;
        for i in (0..self.nodes.len()).filter(|&i| self.has[i]) {
            total += match (&self.values[i], self.shared.get(&i)) {
                (Value::Shared(_), Some(h)) if buffers.insert(h.buffer) => h.bytes,
                (Value::Shared(_), _) => 0,
                _ => self.bytes(i),
            };
        }
        total
    }

    /// The bytes that releasing node `i`'s value frees: a shared buffer's when no
    /// other value holds it any more (the last of a value and its views), else none.
    fn freed_bytes(&self, i: usize) -> usize {
        match &self.values[i] {
            Value::Shared(a) if a.is_unique() => self.shared.get(&i).map_or(0, |h| h.bytes),
            Value::Shared(_) => 0,
            _ => self.bytes(i),
        }
    }

    /// The most bytes of values held at once during the last [`Graph::replay_keeping`]
    /// (leaves and kept values included): what a lean training step needs, as the
    /// engine counts it (the allocator's own overhead, the graph's bookkeeping and
    /// the released buffers of 32 MiB or more it keeps for reuse are not included).
    ///
    /// ```
    /// use ndarray::ArrayD;
    /// use unrolled_autograd::Graph;
    /// # fn main() -> unrolled_autograd::Result<()> {
    /// let mut g = Graph::<f32>::new();
    /// g.set_deferred(true);                                      // nothing computed yet
    /// let x = g.input(ArrayD::zeros(ndarray::IxDyn(&[1000])));  // 4,000 bytes
    /// let y = g.tanh(x)?;                                        // 4,000
    /// let s = g.sum_all(y)?;                                     // 4
    /// g.replay_keeping(&[s])?;
    /// assert_eq!(g.peak_bytes(), 8_004);                         // x, y and s at once
    /// assert!(!g.has_value(y)?);                                 // then y is released
    /// # Ok(()) }
    /// ```
    pub fn peak_bytes(&self) -> usize {
        self.peak_bytes
    }

    /// Replays only the first `len` nodes (for example the forward pass recorded before
    /// any gradient node), leaving the later nodes' values as they were.
    ///
    /// # Errors
    /// As [`Graph::replay`].
    pub fn replay_prefix(&mut self, len: usize) -> Result<()> {
        self.replay_range(0, len.min(self.nodes.len()))
    }

    fn replay_range(&mut self, from: usize, to: usize) -> Result<()> {
        self.with_spares(|g| {
            for i in from..to {
                if !g.nodes[i].op.is_leaf() {
                    g.compute(i)?;
                }
            }
            Ok(())
        })
    }

    /// Runs `f` with this graph's spare buffers lent to the thread (see `spares`).
    fn with_spares<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let mut spares = std::mem::take(&mut self.spares);
        let result = {
            let _lent = spares.lend();
            f(self)
        };
        self.spares = spares;
        result
    }

    /// A reshape whose input is read for the last time takes over the input's buffer
    /// instead of copying it (when the buffer is laid out row-major). Returns whether
    /// it did.
    fn reshape_in_place(&mut self, i: usize, dying: impl Fn(usize) -> bool) -> bool {
        let node = &self.nodes[i];
        let (Op::Reshape(_), [j]) = (&node.op, &node.inputs[..]) else { return false };
        let j = j.index();
        let movable = matches!(&self.values[j], Value::Float(a) if a.is_standard_layout());
        if !dying(j) || !self.computed(j) || !movable {
            return false;
        }
        let shape = IxDyn(&node.shape);
        let a = into_float(self.values.take(j));
        self.has[j] = false;
        // Row-major, and a reshape keeps the number of elements (checked when recorded).
        let b = a.into_shape_with_order(shape).expect("a row-major buffer reshapes to the same number of elements");
        self.values.set(i, Value::Float(b));
        self.has[i] = true;
        true
    }

    /// An elementwise op one of whose inputs is read for the last time and already has
    /// the output's shape computes into that input's buffer ([`Rule::forward_in_place`]):
    /// no new buffer, one pass. Returns whether it did.
    fn compute_in_place(&mut self, i: usize, dying: impl Fn(usize) -> bool) -> bool {
        let node = &self.nodes[i];
        let ins = &node.inputs;
        if ins.iter().any(|j| !self.computed(j.index())) {
            return false;
        }
        let fits = |k: usize| {
            let j = ins[k].index();
            // Cheap tests first: a join of many steps fails the shape test at once, before
            // the count of `j` among its inputs (quadratic in their number).
            dying(j)
                && matches!(&self.values[j], Value::Float(v) if v.shape() == &node.shape[..] && v.is_standard_layout())
                && ins.iter().filter(|x| x.index() == j).count() == 1
        };
        let Some(pos) = (0..ins.len()).find(|&k| fits(k)) else { return false };
        let j = ins[pos].index();
        let mut acc = into_float(self.values.take(j));
        let rule = node.op.rule::<T>();
        let vals: SmallVec<[&Value<T>; 4]> = ins.iter().map(|x| &self.values[x.index()]).collect();
        let done = rule.forward_in_place(&mut acc, pos, &vals);
        drop(vals);
        if !done {
            self.values.set(j, Value::Float(acc));
            return false;
        }
        self.has[j] = false;
        self.values.set(i, Value::Float(acc));
        self.has[i] = true;
        true
    }

    /// Computes node `i` from its inputs' values.
    fn compute(&mut self, i: usize) -> Result<()> {
        self.check_inputs(i)?;
        if self.has[i] && self.holds_large_buffer(i) {
            // The value of an earlier run, about to be replaced: its buffer may serve
            // the new one (if the op fails, the node is left without a value).
            self.recycle(i);
            self.has[i] = false;
        }
        if let Some(out) = self.matmul_packed(i) {
            self.values.set(i, Value::Float(out));
            self.has[i] = true;
            return Ok(());
        }
        let node = &self.nodes[i];
        let rule = node.op.rule::<T>();
        if let Some((v, holder)) = view_of(rule, &node.inputs, &mut self.values, &mut self.shared, &node.shape) {
            self.values.set(i, Value::Shared(v));
            self.has[i] = true;
            self.shared.insert(i, holder);
            return Ok(());
        }
        let vals: SmallVec<[&Value<T>; 4]> = node.inputs.iter().map(|j| &self.values[j.index()]).collect();
        let result = rule.forward(&vals, &node.shape);
        drop(vals);
        match result {
            Ok(out) => {
                self.values.set(i, Value::Float(out));
                self.has[i] = true;
                Ok(())
            }
            Err(f) => {
                let (name, inputs, scope) = (node.op.name(), node.inputs.clone(), node.scope);
                let saved = self.current;
                self.current = scope;
                let e = self.fail(name, f, &inputs);
                self.current = saved;
                Err(e)
            }
        }
    }

    /// A matrix product whose second operand is a leaf read transposed (a weight, as
    /// every step's `h @ W_hhᵀ` reads it), computed from a packed copy of the leaf
    /// kept in the graph (`MatMul::forward_packed`). `None` when it does not apply.
    fn matmul_packed(&mut self, i: usize) -> Option<ArrayD<T>> {
        let node = &self.nodes[i];
        let Op::MatMul(mm) = &node.op else { return None };
        let (a, b) = (node.inputs[0].index(), node.inputs[1].index());
        if !self.nodes[b].op.is_leaf() {
            return None;
        }
        if self.nodes[a].dtype == DType::I64 || self.nodes[b].dtype == DType::I64 {
            return None;
        }
        let packs = &mut self.packs;
        with_float!(&self.values[a], |av| with_float!(&self.values[b], |bv| mm.forward_packed(
            av,
            bv,
            &node.shape,
            |v| packs.get(b, mm.trans_b, v)
        )))
    }

    /// As [`Graph::replay`], timing every node: per op name, how many nodes ran and
    /// their total time, the most expensive first (what dominates a training step).
    ///
    /// ```
    /// use ndarray::arr1;
    /// use unrolled_autograd::Graph;
    /// # fn main() -> unrolled_autograd::Result<()> {
    /// let mut g = Graph::<f32>::new();
    /// let x = g.input(arr1(&[0.5, -1.0]).into_dyn());
    /// let y = g.tanh(x)?;
    /// let _ = g.sum_all(y)?;
    /// let profile = g.replay_profile()?;
    /// assert_eq!(profile.iter().map(|p| p.count).sum::<usize>(), 2);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Graph::replay`].
    pub fn replay_profile(&mut self) -> Result<Vec<OpTime>> {
        let mut by_op = OpTimes::new();
        for i in 0..self.nodes.len() {
            if self.nodes[i].op.is_leaf() {
                continue;
            }
            let t0 = std::time::Instant::now();
            self.replay_range(i, i + 1)?;
            add_time(&mut by_op, self.nodes[i].op.name(), t0.elapsed());
        }
        Ok(sorted_times(by_op))
    }

    // ----- scopes ---------------------------------------------------------------------

    /// The scope new nodes are recorded under.
    pub fn current_scope(&self) -> ScopeId {
        self.current
    }

    pub(crate) fn set_current_scope(&mut self, s: ScopeId) {
        self.current = s;
    }

    /// The path of the current scope, as error messages print it (`<root>` at the top).
    pub fn scope_path(&self) -> String {
        self.path_of(self.current)
    }

    /// The path of scope `s` as messages print it (`<root>` for the root).
    pub fn path_of(&self, s: ScopeId) -> String {
        ScopePath(&self.scopes.info(s).path).to_string()
    }

    /// What a scope records: its path and annotations.
    ///
    /// # Panics
    /// Only for a `ScopeId` from another graph that is out of this graph's range.
    pub fn scope_info(&self, s: ScopeId) -> ScopeInfo {
        self.scopes.info(s)
    }

    /// Every scope of the graph, indexed by [`ScopeId::index`].
    pub fn scope_infos(&self) -> Vec<ScopeInfo> {
        self.scopes.all()
    }

    /// Enters the child scope `name` until the guard is dropped.
    pub fn scope(&mut self, name: &str) -> ScopeGuard<'_, T> {
        let seg = self.scopes.name_segment(name);
        let s = self.scopes.child(self.current, seg);
        ScopeGuard::new(self, s)
    }

    /// Enters time step `t` (path segment `t{t}`, annotation `step`).
    pub fn step(&mut self, t: usize) -> ScopeGuard<'_, T> {
        let s = self.scopes.child(self.current, Segment::Step(t as u32));
        ScopeGuard::new(self, s)
    }

    /// Enters layer `l` (path segment `l{l}`, annotation `layer`).
    pub fn layer(&mut self, l: usize) -> ScopeGuard<'_, T> {
        let s = self.scopes.child(self.current, Segment::Layer(l as u32));
        ScopeGuard::new(self, s)
    }

    /// Enters a direction (path segment `fwd`/`bwd`, annotation `direction`).
    pub fn direction(&mut self, d: Direction) -> ScopeGuard<'_, T> {
        let s = self.scopes.child(self.current, Segment::Direction(d));
        ScopeGuard::new(self, s)
    }

    /// Re-enters a scope recorded earlier (for instance to add a node to a past time step).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a scope id this graph does not have.
    pub fn enter(&mut self, s: ScopeId) -> Result<ScopeGuard<'_, T>> {
        if s.index() >= self.scopes.len() {
            return Err(Error::InvalidInput {
                op: "enter",
                scope: self.scope_path(),
                reason: format!("scope {} does not exist in this graph", s.index()),
                shapes: Vec::new(),
            });
        }
        Ok(ScopeGuard::new(self, s))
    }

    /// Enters a scope id known to be of this graph.
    pub(crate) fn enter_known(&mut self, s: ScopeId) -> ScopeGuard<'_, T> {
        ScopeGuard::new(self, s)
    }

    /// Runs `f` inside the child scope `name`.
    pub fn with_scope<R>(&mut self, name: &str, f: impl FnOnce(&mut Graph<T>) -> R) -> R {
        let mut g = self.scope(name);
        f(&mut g)
    }

    pub(crate) fn grad_scope(&mut self, of: ScopeId) -> ScopeId {
        self.scopes.grad_twin(of)
    }
}

/// The time one kind of op took in [`Graph::replay_profile`].
#[derive(Clone, Debug, PartialEq)]
pub struct OpTime {
    /// The op's name.
    pub op: &'static str,
    /// How many nodes of it ran.
    pub count: usize,
    /// Their total time.
    pub time: std::time::Duration,
}
