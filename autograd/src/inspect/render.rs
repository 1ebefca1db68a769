//! Rendering DOT to SVG or PNG with Graphviz's `dot`, when it is installed.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// An image format `dot` can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    /// Scalable vector graphics.
    Svg,
    /// A PNG bitmap.
    Png,
}

impl ImageFormat {
    /// The format from a file's extension (`svg`, `png`), if it is one.
    pub fn from_path(path: &Path) -> Option<ImageFormat> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "svg" => Some(ImageFormat::Svg),
            "png" => Some(ImageFormat::Png),
            _ => None,
        }
    }
    fn flag(self) -> &'static str {
        match self {
            ImageFormat::Svg => "-Tsvg",
            ImageFormat::Png => "-Tpng",
        }
    }
}

/// The program [`render_dot`] runs: `$UNROLLED_DOT` when set, else `dot` on the `PATH`.
pub fn dot_program() -> String {
    std::env::var("UNROLLED_DOT").unwrap_or_else(|_| "dot".to_string())
}

/// Whether Graphviz's `dot` can be run.
pub fn dot_available() -> bool {
    Command::new(dot_program()).arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// Renders DOT text (from [`Graph::to_dot`](crate::Graph::to_dot) or
/// [`Graph::to_dot_collapsed`](crate::Graph::to_dot_collapsed)) to an SVG or PNG
/// file, by the extension of `path`, with Graphviz's `dot`.
///
/// ```no_run
/// use unrolled_autograd::{inspect::render_dot, Graph};
/// # fn main() -> unrolled_autograd::Result<()> {
/// let mut g = Graph::<f64>::new();
/// let x = g.scalar(1.0);
/// g.tanh(x)?;
/// render_dot(&g.to_dot(), "graph.svg")?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::ToolMissing`] when `dot` is not installed (the message says how to
/// install it); [`Error::InvalidInput`] for an extension other than `.svg`/`.png`;
/// [`Error::ToolFailed`] when `dot` rejects the input; [`Error::Io`] when the file
/// cannot be written.
pub fn render_dot(dot: &str, path: impl AsRef<Path>) -> Result<()> {
    render_dot_with(&dot_program(), dot, path)
}

/// [`render_dot`] with the Graphviz program named explicitly (`dot`, `neato`, a path).
///
/// # Errors
/// As [`render_dot`].
pub fn render_dot_with(program: &str, dot: &str, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let format = ImageFormat::from_path(path).ok_or_else(|| Error::InvalidInput {
        op: "render_dot",
        scope: String::new(),
        reason: format!("{} should end in .svg or .png", path.display()),
        shapes: vec![],
    })?;
    let program = program.to_string();
    let mut child = Command::new(&program)
        .arg(format.flag())
        .arg("-o")
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::ToolMissing {
                op: "render_dot",
                program: program.clone(),
                hint: "install Graphviz (`apt-get install graphviz`, `brew install graphviz`) to render \
                       pictures; the .dot file can be opened by any Graphviz viewer"
                    .into(),
            },
            _ => Error::ToolFailed { op: "render_dot", program: program.clone(), reason: e.to_string() },
        })?;
    // Write the input from another thread, so that dot's error output cannot fill
    // its pipe and stall both sides.
    let writer = child.stdin.take().map(|mut stdin| {
        let text = dot.to_owned();
        std::thread::spawn(move || stdin.write_all(text.as_bytes()))
    });
    let out = child.wait_with_output().map_err(|e| Error::ToolFailed {
        op: "render_dot",
        program: program.clone(),
        reason: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(Error::ToolFailed {
            op: "render_dot",
            program,
            reason: format!("{}: {}", out.status, first_lines(&String::from_utf8_lossy(&out.stderr), 4)),
        });
    }
    if let Some(Ok(Err(e))) = writer.map(std::thread::JoinHandle::join) {
        return Err(Error::ToolFailed { op: "render_dot", program, reason: e.to_string() });
    }
    if !path.exists() {
        return Err(Error::Io { op: "render_dot", path: path.display().to_string(), reason: "no file written".into() });
    }
    Ok(())
}

/// The first `n` lines of a program's error output, and how many more there were.
fn first_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.trim().lines().collect();
    let mut out = lines.iter().take(n).copied().collect::<Vec<_>>().join("; ");
    if lines.len() > n {
        out.push_str(&format!(" (and {} more lines)", lines.len() - n));
    }
    out
}
