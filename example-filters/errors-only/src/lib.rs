//! `errors-only`: keeps JSON events whose top-level `level` is the string
//! `"error"` and whose top-level `status` is a number ≥ 500, reduced to a
//! compact object with only `ts`, `service` and `msg`, in that order, values
//! unchanged (a missing key is left out):
//!
//! ```text
//! {"ts":"2024-05-01T12:00:00Z","level":"error","status":503,"service":"api","msg":"boom","user":{"id":7}}
//! → {"ts":"2024-05-01T12:00:00Z","service":"api","msg":"boom"}
//! ```
//!
//! Lines that are not exactly one valid JSON object (truncated ones
//! included) are dropped. The line is read once, front to back, and dropped
//! as soon as `level` or `status` rules it out; only the lines that are kept
//! are validated to the end. The verdict is the one full validation would
//! give. (With a duplicated key, every `level` and `status` must pass, and
//! the last `ts`, `service`, `msg` are kept.)

use kinesthetic_filter::json::{self, Value};
use kinesthetic_filter::{Emit, Filter, Line, Params, export_filter};

pub struct ErrorsOnly;

impl Filter for ErrorsOnly {
    fn init(_: &Params) -> Result<Self, String> {
        Ok(ErrorsOnly)
    }

    fn line(&mut self, line: &Line<'_>, emit: &mut Emit<'_>) {
        // Write the reduced object straight into the batch's output buffer.
        let mut kept = false;
        emit.replace_with(|out| kept = errors_only_line(line.bytes(), out));
        if !kept {
            emit.drop_line();
        }
    }
}

export_filter!(ErrorsOnly);

/// The keys kept, in output order.
const KEPT: [&str; 3] = ["ts", "service", "msg"];

/// The filter's logic, callable natively (the host's benchmark does): if
/// `line` is kept, appends the reduced object to `out` and returns `true`;
/// otherwise returns `false` and leaves `out` alone.
pub fn errors_only_line(line: &[u8], out: &mut Vec<u8>) -> bool {
    let mut kept: [Option<Value<'_>>; 3] = [None; 3];
    let (mut level, mut status) = (false, false);
    for member in json::members(line) {
        let Ok((key, value)) = member else {
            return false; // not a valid JSON object
        };
        if key.eq_str("level") {
            if !value.str_eq("error") {
                return false;
            }
            level = true;
        } else if key.eq_str("status") {
            if !value.as_f64().is_some_and(|s| s >= 500.0) {
                return false;
            }
            status = true;
        } else if let Some(i) = KEPT.iter().position(|k| key.eq_str(k)) {
            kept[i] = Some(value);
        }
    }
    if !(level && status) {
        return false;
    }
    out.push(b'{');
    for (name, value) in KEPT.iter().zip(kept) {
        let Some(value) = value else { continue };
        if out.last() != Some(&b'{') {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        json::write_compact(value.raw(), out);
    }
    out.push(b'}');
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinesthetic_filter::testing;

    #[track_caller]
    fn check(input: &str, expected: &str) {
        let got = testing::run_str::<ErrorsOnly>(&[], input).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got, expected, "input: {input}");
        // The native entry point answers the same.
        let mut out = Vec::new();
        let kept = errors_only_line(input.as_bytes(), &mut out);
        assert_eq!(kept, !expected.is_empty());
        assert_eq!(String::from_utf8_lossy(&out), expected);
    }

    #[test]
    fn keeps_server_errors_reduced() {
        check(
            r#"{"ts":"2024-05-01T12:00:00Z","level":"error","status":503,"service":"api","msg":"boom","user":{"id":7}}"#,
            r#"{"ts":"2024-05-01T12:00:00Z","service":"api","msg":"boom"}"#,
        );
        // Any order in, fixed order out; the threshold is inclusive.
        check(
            r#"{"msg":"m","service":"s","status":500,"level":"error","ts":1}"#,
            r#"{"ts":1,"service":"s","msg":"m"}"#,
        );
    }

    #[test]
    fn status_must_be_a_number_of_at_least_500() {
        check(
            r#"{"level":"error","status":500.0,"msg":"a"}"#,
            r#"{"msg":"a"}"#,
        );
        check(
            r#"{"level":"error","status":5e2,"msg":"b"}"#,
            r#"{"msg":"b"}"#,
        );
        check(r#"{"level":"error","status":599.5}"#, "{}");
        for status in [r#""500""#, "499", "499.99", "-503", "null", "true", "[503]"] {
            check(&format!(r#"{{"level":"error","status":{status}}}"#), "");
        }
    }

    #[test]
    fn level_must_be_the_string_error() {
        for level in [
            r#""ERROR""#,
            r#""warn""#,
            r#""error ""#,
            "null",
            r#"["error"]"#,
        ] {
            check(&format!(r#"{{"level":{level},"status":503}}"#), "");
        }
        check(r#"{"status":503}"#, "");
        check(r#"{"level":"error"}"#, "");
    }

    #[test]
    fn missing_keys_are_left_out() {
        check(r#"{"level":"error","status":503}"#, "{}");
        check(
            r#"{"level":"error","status":503,"service":"api"}"#,
            r#"{"service":"api"}"#,
        );
        check(
            r#"{"level":"error","status":503,"msg":"x","ts":"t"}"#,
            r#"{"ts":"t","msg":"x"}"#,
        );
    }

    #[test]
    fn invalid_and_truncated_lines_are_dropped() {
        let good = r#"{"ts":"t","level":"error","status":503,"msg":"boom"}"#;
        for cut in 0..good.len() {
            check(&good[..cut], "");
        }
        for line in [
            r#"{"level":"error","status":503} trailing"#,
            r#"{"level":"error","status":503,}"#,
            r#"[{"level":"error","status":503}]"#,
            r#"{"level":"error","status":503,"msg":"bad \x escape"}"#,
            r#"{"level":"error","status":503,"n":01}"#,
            r#"{"level":"error","status":503,"x":{"y":[1,2}}"#,
            "plain text",
            "",
        ] {
            check(line, "");
        }
    }

    #[test]
    fn escaped_keys_and_values_compare_decoded() {
        check(
            r#"{"le\u0076el":"\u0065rror","st\u0061tus":503,"m\u0073g":"caf\u00e9"}"#,
            r#"{"msg":"caf\u00e9"}"#,
        );
    }

    #[test]
    fn nested_values_are_compacted_and_nested_keys_ignored() {
        check(
            r#"{ "level" : "error" , "status" : 503 , "service" : { "name" : "api" , "v" : [ 1 , 2 ] } }"#,
            r#"{"service":{"name":"api","v":[1,2]}}"#,
        );
        check(
            r#"{"nested":{"level":"error","status":503},"level":"info","status":503}"#,
            "",
        );
        check(
            r#"{"level":"error","status":503,"msg":"a \"quoted\"  msg","x":{"level":"info"}}"#,
            r#"{"msg":"a \"quoted\"  msg"}"#,
        );
    }

    #[test]
    fn every_line_of_a_batch_is_judged_on_its_own() {
        let out = testing::run::<ErrorsOnly>(
            &[],
            &[
                br#"{"level":"error","status":500,"ts":1}"#,
                b"{",
                br#"{"level":"info","status":500,"ts":2}"#,
                br#"{"level":"error","status":502,"ts":3}"#,
            ],
        )
        .unwrap_or_default();
        let got: Vec<(u32, &[u8])> = out.iter().map(|o| (o.index, &o.bytes[..])).collect();
        assert_eq!(got, [(0, &br#"{"ts":1}"#[..]), (3, br#"{"ts":3}"#)]);
    }
}
