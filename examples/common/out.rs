//! `outln!`: `println!` for the examples' results, which ends the program quietly
//! when the reader of its standard output has gone (`bench | head -3`) instead of
//! panicking as `println!` does, and reports any other write error.

/// Writes a line to standard output; exits with status 0 when the pipe's reader has
/// gone, and with status 1 (after saying why on standard error) on another error.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("error: writing to standard output: {e}");
            std::process::exit(1);
        }
    }};
}
