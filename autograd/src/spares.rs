//! Large buffers kept for reuse: a graph's released values of at least
//! [`REUSED_BYTES`] are handed to the next output of the same length that a kernel
//! writes whole, instead of going back to the system.
//!
//! glibc serves allocations this large with a fresh mapping each time (its mmap
//! threshold stops adapting at 32 MiB), so every page of a new one faults and is
//! cleared by the kernel before the kernel computing it writes it again: W1-L's input
//! projection and its gate gradients' join, 52 MB each per step. A graph keeps at
//! most [`KEPT`] such buffers, its own: they go with it when it is dropped.
//!
//! The buffers reach the kernels through the thread running the graph: while a graph
//! runs (a replay, a lean replay), its spares are lent to that thread
//! ([`Spares::lend`]), and [`crate::ops::fresh`] takes one of the right length
//! before allocating.

use std::any::Any;
use std::cell::RefCell;

use crate::float::Float;

/// Released buffers of at least this many bytes are kept.
pub(crate) const REUSED_BYTES: usize = 32 << 20;
/// The most buffers a graph keeps.
const KEPT: usize = 2;

type Spare = Box<dyn Any + Send + Sync>;

thread_local! {
    /// The spares of the graph running on this thread, while it runs.
    static LENT: RefCell<Option<Vec<Spare>>> = const { RefCell::new(None) };
}

/// A graph's kept buffers (`Vec<T>` each). A clone of a graph starts without any.
#[derive(Default)]
pub(crate) struct Spares(Vec<Spare>);

impl Clone for Spares {
    fn clone(&self) -> Self {
        Spares(Vec::new())
    }
}

impl std::fmt::Debug for Spares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Spares({})", self.0.len())
    }
}

/// While alive, the spares are the running thread's (see [`Spares::lend`]).
pub(crate) struct Lent<'a> {
    home: &'a mut Spares,
    outer: Option<Vec<Spare>>,
}

impl Spares {
    /// Lends the spares to this thread until the guard is dropped: outputs take from
    /// them and released values give to them. Nested lends (a graph run inside
    /// another's op) each see their own.
    pub(crate) fn lend(&mut self) -> Lent<'_> {
        let mine = std::mem::take(&mut self.0);
        let outer = LENT.with(|l| l.replace(Some(mine)));
        Lent { home: self, outer }
    }

    /// How many buffers are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        let mine = LENT.with(|l| l.replace(self.outer.take()));
        self.home.0 = mine.unwrap_or_default();
    }
}

/// Keeps `v` for a later output of its length, if it is large and spares are lent to
/// this thread; otherwise it is freed. The oldest kept buffer makes room.
pub(crate) fn give<T: Float>(v: Vec<T>) {
    if v.len() * std::mem::size_of::<T>() < REUSED_BYTES {
        return;
    }
    LENT.with(|l| {
        if let Some(kept) = l.borrow_mut().as_mut() {
            if kept.len() == KEPT {
                kept.remove(0);
            }
            kept.push(Box::new(v));
        }
    });
}

/// A kept buffer of exactly `n` elements of `T` (its contents are old values), if
/// spares are lent to this thread and one fits.
pub(crate) fn take<T: Float>(n: usize) -> Option<Vec<T>> {
    if n * std::mem::size_of::<T>() < REUSED_BYTES {
        return None;
    }
    LENT.with(|l| {
        let mut l = l.borrow_mut();
        let kept = l.as_mut()?;
        let at = kept.iter().position(|s| s.downcast_ref::<Vec<T>>().is_some_and(|v| v.len() == n))?;
        kept.remove(at).downcast::<Vec<T>>().ok().map(|b| *b)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: usize = REUSED_BYTES / 4;

    #[test]
    fn a_lent_buffer_of_the_same_length_is_taken_once() {
        let mut spares = Spares::default();
        {
            let _lent = spares.lend();
            let v = vec![1.0f32; BIG];
            let at = v.as_ptr();
            give(v);
            assert!(take::<f32>(BIG + 1).is_none(), "another length");
            assert!(take::<f64>(BIG).is_none(), "another type");
            let back = take::<f32>(BIG).expect("kept");
            assert_eq!(back.as_ptr(), at);
            assert!(take::<f32>(BIG).is_none(), "taken once");
            give(back);
            give(vec![0.0f32; 16]); // small: freed
        }
        assert_eq!(spares.len(), 1, "the graph keeps what was given while lent");
        assert!(take::<f32>(BIG).is_none(), "nothing is lent after the guard");
        give(vec![0.0f32; BIG]); // not lent: freed
        let _lent = spares.lend();
        assert!(take::<f32>(BIG).is_some());
    }

    #[test]
    fn at_most_two_are_kept_and_nested_lends_see_their_own() {
        let (mut outer, mut inner) = (Spares::default(), Spares::default());
        let _a = outer.lend();
        for k in 0..3 {
            give(vec![k as f32; BIG]);
        }
        {
            let _b = inner.lend();
            assert!(take::<f32>(BIG).is_none(), "the inner graph has none");
        }
        let first = take::<f32>(BIG).expect("kept");
        let second = take::<f32>(BIG).expect("kept");
        assert_eq!((first[0], second[0]), (1.0, 2.0), "the oldest made room");
        assert!(take::<f32>(BIG).is_none());
    }
}
