//! A self-contained HTML page colouring each character by an activation.

use std::fmt::Write;

fn escape(c: char, out: &mut String) {
    match c {
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '&' => out.push_str("&amp;"),
        '"' => out.push_str("&quot;"),
        _ => out.push(c),
    }
}

fn escape_str(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        escape(c, &mut out);
    }
    out
}

/// An HTML page (no external files) with one section per `(caption, values)`:
/// the text, each character's background coloured by its value (blue below zero,
/// red above; the intensity is `|v|` over the section's largest `|v|`, so `tanh`
/// outputs and unbounded cell states both read well), and the value as a tooltip.
/// `values` has one entry per character of `text`; a shorter series leaves the
/// remaining characters uncoloured.
///
/// ```
/// let page = unrolled_layers::interpret::activation_html("cell 3", "a<b", &[("h[3]", vec![-1.0, 0.0, 0.5])]);
/// assert!(page.contains("a</span>") && page.contains("&lt;"));
/// assert!(page.contains("rgba(40,90,220,1.000)"));
/// ```
pub fn activation_html(title: &str, text: &str, sections: &[(&str, Vec<f64>)]) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\n\
         body {{ font-family: sans-serif; margin: 2em; }}\n\
         pre {{ font-family: monospace; font-size: 13px; line-height: 1.45; white-space: pre-wrap; }}\n\
         span {{ border-radius: 2px; }}\n</style></head><body>\n<h1>{}</h1>\n\
         <p>Blue: negative, red: positive; hover a character for its value.</p>\n",
        escape_str(title),
        escape_str(title)
    );
    for (caption, values) in sections {
        let scale = values.iter().filter(|v| v.is_finite()).fold(0.0f64, |m, v| m.max(v.abs()));
        let scale = if scale > 0.0 { scale } else { 1.0 };
        let _ = write!(out, "<h2>{}</h2>\n<pre>", escape_str(caption));
        for (i, c) in text.chars().enumerate() {
            match values.get(i).filter(|v| v.is_finite()) {
                Some(&v) => {
                    let a = (v.abs() / scale).min(1.0);
                    let rgb = if v < 0.0 { "40,90,220" } else { "220,50,40" };
                    let _ = write!(out, "<span style=\"background:rgba({rgb},{a:.3})\" title=\"{v:.4}\">");
                    if c == '\n' {
                        out.push_str("\u{21b5}</span>\n");
                        continue;
                    }
                    escape(c, &mut out);
                    out.push_str("</span>");
                }
                None => escape(c, &mut out),
            }
        }
        out.push_str("</pre>\n");
    }
    out.push_str("</body></html>\n");
    out
}
