//! Per-character properties of a text that a cell might track.

use serde::{Deserialize, Serialize};

/// One value per character of a text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextProperty {
    /// What it measures.
    pub name: String,
    /// One value per character (`chars()`), in order.
    pub values: Vec<f64>,
}

/// The properties [`rank_cells`](super::rank_cells) is usually asked about, per character:
/// - `inside quotes`: 1 strictly between a `"` and the next unescaped `"` (outside
///   comments; a character literal `'"'` opens no string);
/// - `inside a comment`: 1 from a `//` to the end of its line, or from `/*` to `*/`
///   (both included), outside quotes;
/// - `position in line`: characters since the last newline (0 for the first);
/// - `nesting depth`: open `(`, `[` and `{` outside quotes and comments (a closing
///   bracket counts at the depth it closes to).
pub fn text_properties(text: &str) -> Vec<TextProperty> {
    let chars: Vec<char> = text.chars().collect();
    let n = chars.len();
    let (mut quotes, mut comment, mut column, mut depth) = (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let (mut in_q, mut escaped, mut line_c, mut block_c) = (false, false, false, false);
    let (mut col, mut d) = (0usize, 0usize);
    let mut i = 0;
    while i < n {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        column[i] = col as f64;
        if in_q {
            if c == '"' && !escaped {
                in_q = false;
            } else {
                quotes[i] = 1.0;
            }
            escaped = c == '\\' && !escaped;
        } else if line_c {
            if c == '\n' {
                line_c = false;
            } else {
                comment[i] = 1.0;
            }
        } else if block_c {
            comment[i] = 1.0;
            if c == '*' && next == Some('/') {
                comment[i + 1] = 1.0;
                column[i + 1] = (col + 1) as f64;
                depth[i + 1] = d as f64;
                depth[i] = d as f64;
                block_c = false;
                i += 2;
                col += 2;
                continue;
            }
        } else {
            // A character literal holding a quote (`'"'`, `'\"'`) opens no string.
            let literal = match (c, next, chars.get(i + 2).copied(), chars.get(i + 3).copied()) {
                ('\'', Some('"'), Some('\''), _) => 3,
                ('\'', Some('\\'), Some('"'), Some('\'')) => 4,
                _ => 0,
            };
            // `/*` opens a block comment; both characters are consumed, so `/*/` does not close it.
            let opener = if (c, next) == ('/', Some('*')) { 2 } else { 0 };
            if literal + opener > 0 {
                let n = literal + opener;
                for k in i..i + n {
                    column[k] = (col + k - i) as f64;
                    depth[k] = d as f64;
                    comment[k] = if opener > 0 { 1.0 } else { 0.0 };
                }
                block_c |= opener > 0;
                i += n;
                col += n;
                continue;
            }
            match (c, next) {
                ('"', _) => {
                    in_q = true;
                    escaped = false;
                }
                ('/', Some('/')) => {
                    line_c = true;
                    comment[i] = 1.0;
                }
                ('(' | '[' | '{', _) => d += 1,
                (')' | ']' | '}', _) => d = d.saturating_sub(1),
                _ => {}
            }
        }
        depth[i] = d as f64;
        if c == '\n' {
            col = 0;
        } else {
            col += 1;
        }
        i += 1;
    }
    [("inside quotes", quotes), ("inside a comment", comment), ("position in line", column), ("nesting depth", depth)]
        .into_iter()
        .map(|(name, values)| TextProperty { name: name.to_string(), values })
        .collect()
}
