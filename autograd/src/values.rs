//! The graph's value slots: one per node, boxed when it holds a value.
//!
//! Most nodes of a long deferred or lean-replayed graph hold no value at a given
//! moment (not computed yet, or released after their last reader). A slot without
//! a value costs one pointer here, where an empty `ArrayD` in place would cost 112
//! bytes per node: at W5's T = 10000 (150,000 nodes) that is 17 MB of bookkeeping.

use std::mem::MaybeUninit;
use std::ops::{Index, IndexMut};

use ndarray::{ArrayD, IxDyn};

use crate::float::Float;
use crate::node::Value;

/// One slot per node; a slot without a value reads as an empty float array.
#[derive(Debug)]
pub(crate) struct Values<T> {
    slots: Vec<Option<Box<Value<T>>>>,
    empty: Value<T>,
    /// Boxes of emptied slots, reused by the next slots that get a value (a lean
    /// replay empties and fills slots all along: no allocation per node for them).
    /// The boxes themselves are what is kept, so they stay boxed here; they hold no
    /// value (a value moved out leaves its box uninitialized, not refilled).
    #[allow(clippy::vec_box)]
    spare: Vec<Box<MaybeUninit<Value<T>>>>,
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
            Some(b) => {
                let raw = Box::into_raw(b);
                // SAFETY: `raw` comes from a `Box<Value<T>>`, so it points to an
                // initialized value, read (moved out) once here; the allocation is then
                // owned again as a `Box<MaybeUninit<_>>` of the same layout, which never
                // reads or drops what it holds.
                let (v, b) = unsafe { (raw.read(), Box::from_raw(raw.cast::<MaybeUninit<Value<T>>>())) };
                if self.spare.len() < SPARE {
                    self.spare.push(b);
                }
                v
            }
            None => self.empty.clone(),
        }
    }

    /// Gives slot `i` the value `v` (the value it held, if any, is dropped).
    pub(crate) fn set(&mut self, i: usize, v: Value<T>) {
        match &mut self.slots[i] {
            Some(b) => **b = v,
            slot @ None => {
                *slot = Some(match self.spare.pop() {
                    Some(b) => Box::write(b, v),
                    None => Box::new(v),
                })
            }
        }
    }

    /// Every slot's value in node order (empty arrays for slots without one).
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Value<T>> {
        self.slots.iter().map(|s| s.as_deref().unwrap_or(&self.empty))
    }
}

/// A clone has the same values and no spare boxes.
impl<T: Clone> Clone for Values<T> {
    fn clone(&self) -> Self {
        Values { slots: self.slots.clone(), empty: self.empty.clone(), spare: Vec::new() }
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
        self.slots[i].get_or_insert_with(|| match spare.pop() {
            Some(b) => Box::write(b, empty.clone()),
            None => Box::new(empty.clone()),
        })
    }
}
