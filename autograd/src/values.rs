//! The graph's value slots: one per node, boxed when it holds a value.
//!
//! Most nodes of a long deferred or lean-replayed graph hold no value at a given
//! moment (not computed yet, or released after their last reader). A slot without
//! a value costs one pointer here, where an empty `ArrayD` in place would cost 112
//! bytes per node: at W5's T = 10000 (150,000 nodes) that is 17 MB of bookkeeping.

use std::ops::{Index, IndexMut};

use ndarray::{ArrayD, IxDyn};

use crate::float::Float;
use crate::node::Value;

/// One slot per node; a slot without a value reads as an empty float array.
#[derive(Clone, Debug)]
pub(crate) struct Values<T> {
    slots: Vec<Option<Box<Value<T>>>>,
    empty: Value<T>,
    /// Boxes of emptied slots, reused by the next slots that get a value (a lean
    /// replay empties and fills slots all along: no allocation per node for them).
    /// The boxes themselves are what is kept, so they stay boxed here.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<Value<T>>>,
}

/// The most spare boxes kept (a few hundred kilobytes).
const SPARE: usize = 4096;

impl<T: Float> Values<T> {
    pub(crate) fn new() -> Self {
        let empty = ArrayD::from_shape_vec(IxDyn(&[0]), Vec::new()).expect("an empty array has shape [0]");
        Values { slots: Vec::new(), empty: Value::Float(empty), spare: Vec::new() }
    }

    pub(crate) fn reserve(&mut self, n: usize) {
        self.slots.reserve(n);
    }

    /// Appends a slot for a new node.
    pub(crate) fn push(&mut self, v: Option<Value<T>>) {
        self.slots.push(v.map(Box::new));
    }

    /// Moves slot `i`'s value out, leaving it empty (an empty float array if it had none).
    pub(crate) fn take(&mut self, i: usize) -> Value<T> {
        match self.slots[i].take() {
            Some(mut b) => {
                let v = std::mem::replace(&mut *b, self.empty.clone());
                if self.spare.len() < SPARE {
                    self.spare.push(b);
                }
                v
            }
            None => self.empty.clone(),
        }
    }

    /// Every slot's value in node order (empty arrays for slots without one).
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Value<T>> {
        self.slots.iter().map(|s| s.as_deref().unwrap_or(&self.empty))
    }
}

impl<T> Index<usize> for Values<T> {
    type Output = Value<T>;
    fn index(&self, i: usize) -> &Value<T> {
        self.slots[i].as_deref().unwrap_or(&self.empty)
    }
}

/// Writing to a slot without a value boxes one first (an assignment then replaces it).
impl<T: Clone> IndexMut<usize> for Values<T> {
    fn index_mut(&mut self, i: usize) -> &mut Value<T> {
        let (empty, spare) = (&self.empty, &mut self.spare);
        self.slots[i].get_or_insert_with(|| spare.pop().unwrap_or_else(|| Box::new(empty.clone())))
    }
}
