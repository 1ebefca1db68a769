//! Interpretable cells (Karpathy, Johnson & Fei-Fei, 2016): record the hidden and
//! cell activations of a character model over a text, rank the cells by their
//! correlation with simple properties of the text (inside quotes, inside a
//! comment, position in the line, nesting depth), and write a self-contained
//! HTML page that colours each character by a cell's activation.
//!
//! ```
//! use ndarray::Array2;
//! use unrolled_layers::interpret::{rank_cells, text_properties};
//! let text = "a \"bc\" d";
//! let props = text_properties(text);
//! let quotes = props.iter().find(|p| p.name == "inside quotes").unwrap();
//! assert_eq!(quotes.values, vec![0., 0., 0., 1., 1., 0., 0., 0.]);
//! // Cell 1 is the quote detector, cell 0 noise.
//! let acts = Array2::from_shape_fn((8, 2), |(t, k)| if k == 1 { quotes.values[t] } else { (t % 3) as f64 });
//! let top = rank_cells(&acts, &quotes.values, 1)?;
//! assert_eq!(top[0].cell, 1);
//! assert!((top[0].correlation - 1.0).abs() < 1e-12);
//! # Ok::<(), unrolled_autograd::Error>(())
//! ```

mod activations;
mod correlation;
mod html;
mod properties;

pub use activations::{record_activations, Activations};
pub use correlation::{correlation, rank_cells, report, CellScore, PropertyReport};
pub use html::activation_html;
pub use properties::{text_properties, TextProperty};
