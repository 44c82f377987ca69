//! `kinesthetic filter test`: a filter's output over an input file compared
//! with the expected output, as a line diff.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::RunOpts;
use super::open_input;
use super::run::run_stream;
use crate::event::split_lines;

pub(super) fn test(
    filter: &Path,
    input: &Path,
    expect: &Path,
    opts: &RunOpts,
) -> anyhow::Result<ExitCode> {
    let runtime = opts.runtime()?;
    let f = runtime.load_file(filter)?;
    let reader = open_input(Some(input))?;
    let mut got: Vec<Vec<u8>> = Vec::new();
    let summary = run_stream(&f, reader, opts, &mut |line| {
        got.push(line.bytes.to_vec());
        Ok(())
    })?;
    let expected = std::fs::read(expect)
        .with_context(|| format!("cannot read expected output {}", expect.display()))?;
    // One line per output line, LF or CRLF (the filter's own output
    // never ends in the CR of its input: the input is split first).
    let want: Vec<&[u8]> = split_lines(&expected)
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .collect();
    let got_refs: Vec<&[u8]> = got.iter().map(Vec::as_slice).collect();
    let diff = line_diff(&want, &got_refs);
    if diff.is_empty() && summary.failures == 0 {
        eprintln!(
            "ok: {} lines in, {} lines out, as expected",
            summary.lines_in, summary.lines_out
        );
        return Ok(ExitCode::SUCCESS);
    }
    if !diff.is_empty() {
        eprintln!(
            "FAILED: output differs from {} (- expected, + actual):",
            expect.display()
        );
        eprint!("{diff}");
    }
    if summary.failures > 0 {
        eprintln!("FAILED: {} line(s) or batch(es) failed", summary.failures);
    }
    Ok(ExitCode::FAILURE)
}

/// A readable line diff (`-` expected only, `+` actual only), by the
/// `similar` crate's Patience diff (with a deadline, so a huge input
/// cannot hang the test: then the diff is coarser, never wrong).
fn line_diff(want: &[&[u8]], got: &[&[u8]]) -> String {
    use similar::{Algorithm, DiffOp, capture_diff_slices_deadline};
    use std::fmt::Write as _;
    let mut out = String::new();
    if want == got {
        return out;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let ops = capture_diff_slices_deadline(Algorithm::Patience, want, got, Some(deadline));
    for op in ops {
        let (old, new) = match op {
            DiffOp::Equal { .. } => continue,
            DiffOp::Delete {
                old_index, old_len, ..
            } => (old_index..old_index + old_len, 0..0),
            DiffOp::Insert {
                new_index, new_len, ..
            } => (0..0, new_index..new_index + new_len),
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => (
                old_index..old_index + old_len,
                new_index..new_index + new_len,
            ),
        };
        for i in old {
            let _ = writeln!(out, "-{} (expected line {})", shown(want[i]), i + 1);
        }
        for j in new {
            let _ = writeln!(out, "+{} (actual line {})", shown(got[j]), j + 1);
        }
    }
    out
}

/// A line as the diff shows it: UTF-8 text as is; invalid bytes and
/// control characters (a `\r` would hide the line) escaped.
fn shown(line: &[u8]) -> String {
    match std::str::from_utf8(line) {
        Ok(t) if !t.chars().any(char::is_control) => t.to_owned(),
        _ => line.escape_ascii().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::line_diff;

    #[test]
    fn diff_shows_bytes_that_would_not_show() {
        // A carriage return, and two invalid bytes that would both print as
        // U+FFFD: escaped, so the two sides differ visibly.
        let d = line_diff(&[b"a\r", b"\xff"], &[b"a", b"\xfe"]);
        assert!(d.contains("-a\\r (expected line 1)"), "{d}");
        assert!(
            d.contains("-\\xff (expected line 2)") && d.contains("+\\xfe (actual line 2)"),
            "{d}"
        );
        let d = line_diff(&[b"\xd0\xba\xd0\xbb"], &[b"x"]);
        assert!(
            d.contains("-кл (expected line 1)"),
            "UTF-8 text stays readable: {d}"
        );
    }

    #[test]
    fn diff_shows_missing_and_extra_lines() {
        let d = line_diff(&[b"a", b"b", b"c"], &[b"a", b"x", b"c"]);
        assert!(d.contains("-b (expected line 2)"), "{d}");
        assert!(d.contains("+x (actual line 2)"), "{d}");
        assert!(line_diff(&[b"a"], &[b"a"]).is_empty());
    }
}
