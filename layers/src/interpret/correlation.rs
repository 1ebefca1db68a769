//! Ranking cells by how well they follow a property of the text.

use ndarray::Array2;
use serde::{Deserialize, Serialize};
use unrolled_autograd::{Error, Result};

use super::properties::TextProperty;

/// Pearson's correlation of two equally long series; 0 when either is constant or
/// holds a non-finite value (a diverged cell correlates with nothing), or when the
/// lengths differ or are 0.
pub fn correlation(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        let (dx, dy) = (x - ma, y - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    let r = sab / (saa * sbb).sqrt();
    if saa > 0.0 && sbb > 0.0 && r.is_finite() {
        r.clamp(-1.0, 1.0)
    } else {
        0.0
    }
}

/// A cell and its correlation with a property.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellScore {
    /// The cell (column of the activations).
    pub cell: usize,
    /// Pearson's correlation (its sign says whether the cell rises or falls).
    pub correlation: f64,
}

/// The `top` cells of `activations` `[T, H]` (one row per character) by absolute
/// correlation with `property` (one value per character); ties by cell index.
///
/// # Errors
/// [`Error::ShapeMismatch`] when `property` does not have one value per row.
pub fn rank_cells(activations: &Array2<f64>, property: &[f64], top: usize) -> Result<Vec<CellScore>> {
    if property.len() != activations.nrows() {
        return Err(Error::ShapeMismatch {
            op: "rank_cells",
            scope: String::new(),
            lhs: activations.shape().to_vec(),
            rhs: vec![property.len()],
        });
    }
    let mut scores: Vec<CellScore> = (0..activations.ncols())
        .map(|k| {
            let col: Vec<f64> = activations.column(k).to_vec();
            CellScore { cell: k, correlation: correlation(&col, property) }
        })
        .collect();
    scores.sort_by(|a, b| b.correlation.abs().total_cmp(&a.correlation.abs()).then(a.cell.cmp(&b.cell)));
    scores.truncate(top);
    Ok(scores)
}

/// The top cells for one property.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PropertyReport {
    /// The property's name.
    pub property: String,
    /// Which activations (`h` or `c`, and the layer).
    pub activations: String,
    /// The best cells, best first.
    pub top: Vec<CellScore>,
}

/// [`rank_cells`] for every property, on activations named `name` (`"l0 c"`).
///
/// # Errors
/// As [`rank_cells`].
pub fn report(
    name: &str,
    activations: &Array2<f64>,
    properties: &[TextProperty],
    top: usize,
) -> Result<Vec<PropertyReport>> {
    properties
        .iter()
        .map(|p| {
            Ok(PropertyReport {
                property: p.name.clone(),
                activations: name.to_string(),
                top: rank_cells(activations, &p.values, top)?,
            })
        })
        .collect()
}
