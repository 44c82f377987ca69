//! `errors-only`: keeps JSON events whose top-level `level` is the string
//! `"error"` and whose top-level `status` is a number ≥ 500, and emits a
//! compact object with only `ts`, `service` and `msg`, in that order, values
//! unchanged (a missing key is left out). Lines that are not one valid JSON
//! object — truncated ones included — are dropped.

use kinesthetic_filter::json::{self, Kind, Value};
use kinesthetic_filter::{Emit, Filter, Line, Params, export_filter};

pub struct ErrorsOnly;

impl Filter for ErrorsOnly {
    fn init(_: &Params) -> Result<Self, String> {
        Ok(ErrorsOnly)
    }

    fn line(&mut self, line: &Line<'_>, emit: &mut Emit<'_>) {
        let mut kept = false;
        // Write the reduced object straight into the batch's output buffer.
        emit.replace_with(|out| kept = errors_only_line(line.bytes(), out));
        if !kept {
            emit.drop_line();
        }
    }
}

export_filter!(ErrorsOnly);

/// The filter's logic, callable natively: if the line is kept, appends the
/// reduced object to `out` and returns `true`; otherwise writes nothing.
pub fn errors_only_line(line: &[u8], out: &mut Vec<u8>) -> bool {
    let (mut ts, mut service, mut msg): (Option<Value<'_>>, Option<Value<'_>>, Option<Value<'_>>) =
        (None, None, None);
    let (mut level_ok, mut status_ok) = (false, false);
    for m in json::members(line) {
        let Ok((k, v)) = m else { return false };
        match k.raw() {
            b"level" => {
                if !v.str_eq("error") {
                    return false;
                }
                level_ok = true;
            }
            b"status" => {
                if !(v.kind() == Kind::Number && v.as_f64().is_some_and(|s| s >= 500.0)) {
                    return false;
                }
                status_ok = true;
            }
            b"ts" => ts = Some(v),
            b"service" => service = Some(v),
            b"msg" => msg = Some(v),
            // Escaped keys are rare: compare them decoded.
            raw if raw.contains(&b'\\') => {
                if k.eq_str("level") {
                    if !v.str_eq("error") {
                        return false;
                    }
                    level_ok = true;
                } else if k.eq_str("status") {
                    if !(v.kind() == Kind::Number && v.as_f64().is_some_and(|s| s >= 500.0)) {
                        return false;
                    }
                    status_ok = true;
                } else if k.eq_str("ts") {
                    ts = Some(v);
                } else if k.eq_str("service") {
                    service = Some(v);
                } else if k.eq_str("msg") {
                    msg = Some(v);
                }
            }
            _ => {}
        }
    }
    if !(level_ok && status_ok) {
        return false;
    }
    out.push(b'{');
    let mut first = true;
    for (name, v) in [("ts", ts), ("service", service), ("msg", msg)] {
        if let Some(v) = v {
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            json::write_compact(v.raw(), out);
        }
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
        assert_eq!(got, expected);
    }

    #[test]
    fn keeps_server_errors_reduced() {
        check(
            r#"{"ts":"t","level":"error","status":503,"service":"api","msg":"boom","x":{"y":1}}"#,
            r#"{"ts":"t","service":"api","msg":"boom"}"#,
        );
        check(
            r#"{"msg":"m","status":500.0,"level":"error"}"#,
            r#"{"msg":"m"}"#,
        );
        check(r#"{"level":"error","status":5e2}"#, r#"{}"#);
    }

    #[test]
    fn drops_everything_else() {
        for line in [
            r#"{"level":"error","status":499}"#,
            r#"{"level":"error","status":"503"}"#,
            r#"{"level":"ERROR","status":503}"#,
            r#"{"level":"warn","status":503}"#,
            r#"{"status":503}"#,
            r#"{"level":"error","status":503,"ts":"cut"#,
            r#"{"level":"error","status":503} trailing"#,
            r#"[{"level":"error","status":503}]"#,
            "plain text",
            "",
        ] {
            check(line, "");
        }
    }

    #[test]
    fn escaped_keys_and_nested_values() {
        check(
            r#"{"le\u0076el":"error","st\u0061tus":503,"service":{ "a" : [1, 2] }}"#,
            r#"{"service":{"a":[1,2]}}"#,
        );
        check(
            r#"{"level":"error","status":503,"nested":{"level":"info"},"msg":"x"}"#,
            r#"{"msg":"x"}"#,
        );
    }
}
