//! The conformance suite: every reference case under `tests/fixtures/`, subdirectories
//! included (or under the directory named by `UNROLLED_FIXTURES`), computed by PyTorch and JAX in float64.
//!
//! It dispatches on each file's `case` field and reads every size from the file,
//! so it passes on any file of a known case. It prints one line per file and fails
//! on any mismatch (relative error above 1e-9, or the tolerance a case's config
//! states), on any unknown case, and on a case that compares nothing.

mod common;
mod conformance_cases;

use std::path::PathBuf;
use std::process::ExitCode;

use common::fixture::{Compare, Fixture};

/// The tolerance of every float64 comparison: |a - e| <= TOL * max(1, |e|).
pub const TOL: f64 = 1e-9;

/// What running one case gave.
pub enum Outcome {
    /// Compared; the comparison holds its errors.
    Ran(Compare),
}

fn fixture_dir() -> PathBuf {
    match std::env::var_os("UNROLLED_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures"),
    }
}

/// Every `*.json` under `dir`, subdirectories included.
fn collect_json(dir: &std::path::Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_json(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let dir = fixture_dir();
    let mut files = Vec::new();
    if let Err(e) = collect_json(&dir, &mut files) {
        eprintln!("cannot read fixture directory {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    files.sort();
    let (mut passed, mut failed) = (0, 0);
    for path in &files {
        let file = path.strip_prefix(&dir).unwrap_or(path).display().to_string();
        let result = Fixture::load(path).and_then(|f| conformance_cases::run(&f));
        match result {
            Ok(Outcome::Ran(c)) if c.failures.is_empty() && c.checked > 0 => {
                passed += 1;
                println!("case {file}: ok, max rel err {:.3e} ({} values)", c.max_rel, c.checked);
            }
            Ok(Outcome::Ran(c)) => {
                failed += 1;
                println!("case {file}: FAILED, max rel err {:.3e}", c.max_rel);
                if c.checked == 0 {
                    println!("    nothing was compared");
                }
                for f in c.failures.iter().take(12) {
                    println!("    {f}");
                }
            }
            Err(e) => {
                failed += 1;
                println!("case {file}: FAILED: {e}");
            }
        }
    }
    println!("conformance: {passed} passed, {failed} failed");
    if files.is_empty() {
        eprintln!("no fixtures found in {}", dir.display());
        return ExitCode::FAILURE;
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
