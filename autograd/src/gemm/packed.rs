//! Weights packed for the skinny kernel, and the per-graph cache that keeps them
//! while the weight's value does not change.

use std::collections::hash_map::Entry;

use crate::fxhash::FxMap;

use ndarray::ArrayView2;

use super::skinny::NR;
use crate::float::Float;

/// `b` (`[k, n]`) packed in panels of [`NR`] columns: panel `p` holds columns
/// `p·NR..p·NR + NR` row after row (`k` rows of `NR` values, the last panel padded
/// with zeros).
#[derive(Clone)]
pub struct Packed {
    pub(super) data: Vec<f32>,
    pub(super) k: usize,
    n: usize,
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed[{}, {}]", self.k, self.n)
    }
}

impl Packed {
    /// Packs `b` (any strides; its values are `f32`, converted exactly).
    pub(crate) fn new<T: Float>(b: &ArrayView2<'_, T>) -> Self {
        let (k, n) = b.dim();
        let panels = n.div_ceil(NR);
        let mut data = vec![0.0f32; panels * k * NR];
        for (j, col) in b.columns().into_iter().enumerate() {
            let (p, jj) = (j / NR, j % NR);
            let panel = &mut data[p * k * NR..(p + 1) * k * NR];
            for (kk, &v) in col.iter().enumerate() {
                panel[kk * NR + jj] = v.f64() as f32;
            }
        }
        Packed { data, k, n }
    }

    /// The packed matrix's `[k, n]`.
    pub(crate) fn dim(&self) -> (usize, usize) {
        (self.k, self.n)
    }
}

/// Packed copies of leaf values, keyed by node index and transposition: made by
/// the first product that reads the leaf transposed, reused by every later one
/// (each step of a replay), and forgotten when the leaf's value is set again.
#[derive(Clone, Debug, Default)]
pub(crate) struct PackCache {
    packs: FxMap<(usize, bool), Packed>,
}

impl PackCache {
    /// The packed copy of `b`, the value of leaf `node` read with transposition
    /// `trans`, packing it on first use (`None` unless the element type is `f32`).
    pub(crate) fn get<T: Float>(&mut self, node: usize, trans: bool, b: &ArrayView2<'_, T>) -> Option<&Packed> {
        let slot = self.packs.entry((node, trans));
        let p = match slot {
            Entry::Occupied(o) if o.get().dim() == b.dim() => o.into_mut(),
            Entry::Occupied(mut o) => {
                o.insert(super::pack(b)?);
                o.into_mut()
            }
            Entry::Vacant(v) => v.insert(super::pack(b)?),
        };
        Some(p)
    }

    /// Drops the packed copies of leaf `node` (its value is about to change).
    pub(crate) fn forget(&mut self, node: usize) {
        if !self.packs.is_empty() {
            self.packs.retain(|&(i, _), _| i != node);
        }
    }
}
