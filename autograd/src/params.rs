//! Parameters: named arrays that outlive graphs.

use std::collections::BTreeMap;

use ndarray::ArrayD;

use crate::error::{Error, Result};
use crate::float::Float;

/// A store of named parameter arrays, sorted by name.
///
/// Names are paths joined by `.` as in a PyTorch `state_dict`
/// (`lstm.weight_ih_l0`, `fc.bias`), so weights carry across by name. A graph
/// reads a parameter with [`Graph::param`](crate::Graph::param); layers get a
/// scoped handle with [`ParamStore::scope`].
///
/// ```
/// use ndarray::ArrayD;
/// use unrolled_autograd::ParamStore;
/// let mut store = ParamStore::<f32>::new();
/// let mut lstm = store.scope("lstm");
/// lstm.insert("weight_hh_l0", ArrayD::zeros(vec![8, 2]));
/// assert!(store.get("lstm.weight_hh_l0").is_some());
/// ```
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ParamStore<T> {
    map: BTreeMap<String, ArrayD<T>>,
}

impl<T: Float> ParamStore<T> {
    /// An empty store.
    pub fn new() -> Self {
        ParamStore { map: BTreeMap::new() }
    }

    /// Inserts or replaces `name`.
    pub fn insert(&mut self, name: impl Into<String>, value: ArrayD<T>) {
        self.map.insert(name.into(), value);
    }

    /// The array named `name`.
    pub fn get(&self, name: &str) -> Option<&ArrayD<T>> {
        self.map.get(name)
    }

    /// The array named `name`, mutably (for an optimizer step).
    pub fn get_mut(&mut self, name: &str) -> Option<&mut ArrayD<T>> {
        self.map.get_mut(name)
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// Removes `name`, returning its array.
    pub fn remove(&mut self, name: &str) -> Option<ArrayD<T>> {
        self.map.remove(name)
    }

    /// The names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// Every (name, array) pair, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ArrayD<T>)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Every (name, array) pair, mutably, sorted by name.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut ArrayD<T>)> {
        self.map.iter_mut().map(|(k, v)| (k.as_str(), v))
    }

    /// The number of parameters.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The total number of scalar parameters.
    pub fn numel(&self) -> usize {
        self.map.values().map(|a| a.len()).sum()
    }

    /// A handle whose names are prefixed with `prefix.`.
    pub fn scope(&mut self, prefix: &str) -> ParamScope<'_, T> {
        ParamScope { store: self, prefix: prefix.to_owned() }
    }

    /// Converts every array to another element type (`f64` weights into an `f32` model).
    pub fn cast<U: Float>(&self) -> ParamStore<U> {
        ParamStore { map: self.map.iter().map(|(k, v)| (k.clone(), v.mapv(|x| U::of(x.f64())))).collect() }
    }

    /// Fails unless `name` is present with exactly `shape`.
    ///
    /// # Errors
    /// [`Error::UnknownParam`] or [`Error::ShapeMismatch`] (lhs expected, rhs found).
    pub fn expect_shape(&self, name: &str, shape: &[usize]) -> Result<()> {
        let v = self.get(name).ok_or_else(|| Error::UnknownParam { op: "expect_shape", name: name.to_owned() })?;
        if v.shape() != shape {
            return Err(Error::ShapeMismatch {
                op: "expect_shape",
                scope: name.to_owned(),
                lhs: shape.to_vec(),
                rhs: v.shape().to_vec(),
            });
        }
        Ok(())
    }
}

/// A path-scoped handle on a [`ParamStore`]: names are prefixed `prefix.`.
pub struct ParamScope<'s, T> {
    store: &'s mut ParamStore<T>,
    prefix: String,
}

impl<T: Float> ParamScope<'_, T> {
    /// The full name of `name` in this scope.
    pub fn name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{}", self.prefix, name)
        }
    }

    /// A nested scope.
    pub fn scope(&mut self, prefix: &str) -> ParamScope<'_, T> {
        let prefix = self.name(prefix);
        ParamScope { store: self.store, prefix }
    }

    /// Inserts or replaces `name` in this scope.
    pub fn insert(&mut self, name: &str, value: ArrayD<T>) {
        let n = self.name(name);
        self.store.insert(n, value);
    }

    /// The array `name` of this scope, created by `init` if it is missing.
    pub fn get_or_init(&mut self, name: &str, init: impl FnOnce() -> ArrayD<T>) -> &ArrayD<T> {
        let n = self.name(name);
        self.store.map.entry(n).or_insert_with(init)
    }
}
