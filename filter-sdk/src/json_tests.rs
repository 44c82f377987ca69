//! Property tests: the JSON helpers agree with `serde_json` on generated
//! object lines (random nesting, numbers, unicode, escapes and whitespace),
//! on damaged lines (truncated, bytes changed, inserted or removed), and on
//! real system logs.

use proptest::prelude::*;
use serde_json::{Map, Value};

use crate::json;

/// A generated JSON document. Numbers are kept as text so that every
/// spelling (`5e2`, `-0.50E+01`, 30-digit integers) is produced; object
/// keys are unique.
#[derive(Debug, Clone)]
enum J {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<i64>().prop_map(|i| i.to_string()),
        1 => any::<u64>().prop_map(|i| i.to_string()),
        3 => any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| Value::from(f).to_string()),
        3 => "-?(0|[1-9][0-9]{0,6})(\\.[0-9]{1,8})?([eE][+-]?[0-9]{1,2})?",
        1 => "-?(0|[1-9][0-9]{15,40})(\\.[0-9]{10,30})?([eE][+-]?(0|30[0-9]|32[0-9]))?",
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,12}",
        "[a-z\"\\\\/\u{e9}\u{7f}\u{2028}\u{ffff}\u{1F600}\t\n\r\u{1}\u{8}\u{c}]{0,10}",
        "[ -~]{16,80}",
        "[a-z \u{e9}\u{4e2d}]{10,60}",
    ]
}

fn leaf() -> impl Strategy<Value = J> {
    prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        number().prop_map(J::Num),
        text().prop_map(J::Str),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{1,8}",
        "\\PC{0,5}",
        "[a\"\\\\\n\u{e9}\u{1F600}]{1,4}"
    ]
}

fn object_of(inner: impl Strategy<Value = J> + Clone) -> impl Strategy<Value = J> {
    prop::collection::btree_map(key(), inner, 0..8).prop_map(|m| J::Obj(m.into_iter().collect()))
}

fn doc() -> impl Strategy<Value = (J, u64)> {
    let value = leaf().prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(J::Arr),
            object_of(inner),
        ]
    });
    (object_of(value), any::<u64>())
}

/// The random choices of one serialisation.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }

    fn ws(&mut self, out: &mut String) {
        if self.one_in(2) {
            out.push_str([" ", "  ", "\t", "\n ", "\r\n", " \t "][(self.next() % 6) as usize]);
        }
    }
}

/// A JSON string literal for `s`, escaping some characters at random.
fn encode_str(s: &str, rng: &mut Rng, out: &mut String) {
    out.push('"');
    let mode = rng.next() % 3; // 0: minimal, 1: some escapes, 2: escape all
    for c in s.chars() {
        let escape = mode == 2 || (mode == 1 && rng.one_in(3));
        let hex = |u: u32, rng: &mut Rng| {
            if rng.one_in(2) {
                format!("\\u{u:04x}")
            } else {
                format!("\\u{u:04X}")
            }
        };
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' if !escape || rng.one_in(2) => out.push_str("\\n"),
            '\t' if !escape || rng.one_in(2) => out.push_str("\\t"),
            '\r' if !escape || rng.one_in(2) => out.push_str("\\r"),
            '\u{8}' if !escape || rng.one_in(2) => out.push_str("\\b"),
            '\u{c}' if !escape || rng.one_in(2) => out.push_str("\\f"),
            '/' if escape && rng.one_in(2) => out.push_str("\\/"),
            c if (c as u32) < 0x20 || escape => {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    out.push_str(&hex(u32::from(*u), rng));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Serialises `j` with random insignificant whitespace and escapes.
fn encode(j: &J, rng: &mut Rng, out: &mut String) {
    match j {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Num(n) => out.push_str(n),
        J::Str(s) => encode_str(s, rng, out),
        J::Arr(a) => {
            out.push('[');
            rng.ws(out);
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                    rng.ws(out);
                }
                encode(x, rng, out);
                rng.ws(out);
            }
            out.push(']');
        }
        J::Obj(m) => {
            out.push('{');
            rng.ws(out);
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                    rng.ws(out);
                }
                encode_str(k, rng, out);
                rng.ws(out);
                out.push(':');
                rng.ws(out);
                encode(x, rng, out);
                rng.ws(out);
            }
            out.push('}');
        }
    }
}

fn line_of((doc, seed): &(J, u64)) -> String {
    let mut rng = Rng(*seed);
    let mut line = String::new();
    rng.ws(&mut line);
    encode(doc, &mut rng, &mut line);
    rng.ws(&mut line);
    line
}

/// The oracle: `serde_json`'s reading of `line` as an object.
fn serde_object(line: &[u8]) -> Option<Map<String, Value>> {
    serde_json::from_slice::<Map<String, Value>>(line).ok()
}

fn parse_raw(raw: &[u8]) -> Result<Value, TestCaseError> {
    serde_json::from_slice(raw).map_err(|e| {
        TestCaseError::fail(format!(
            "raw value {:?} is not JSON: {e}",
            String::from_utf8_lossy(raw)
        ))
    })
}

/// Checks one value against `serde_json`'s.
fn check_value(v: json::Value<'_>, want: &Value) -> Result<(), TestCaseError> {
    prop_assert_eq!(&parse_raw(v.raw())?, want);
    let kind = match want {
        Value::Null => json::Kind::Null,
        Value::Bool(_) => json::Kind::Bool,
        Value::Number(_) => json::Kind::Number,
        Value::String(_) => json::Kind::String,
        Value::Array(_) => json::Kind::Array,
        Value::Object(_) => json::Kind::Object,
    };
    prop_assert_eq!(v.kind(), kind);
    prop_assert_eq!(v.as_f64(), want.as_f64());
    prop_assert_eq!(v.as_bool(), want.as_bool());
    if let Some(i) = want.as_i64() {
        prop_assert_eq!(v.as_i64(), Some(i));
    }
    if let Some(i) = v.as_i64() {
        prop_assert_eq!(want.as_f64(), Some(i as f64));
    }
    match want {
        Value::String(s) => {
            prop_assert!(v.str_eq(s));
            let decoded = v.as_str();
            prop_assert_eq!(decoded.as_deref(), Some(s.as_str()));
            let mut longer = s.clone();
            longer.push('x');
            prop_assert!(!v.str_eq(&longer));
            if let Some((shorter, _)) = s.char_indices().last().map(|(i, _)| s.split_at(i)) {
                prop_assert!(!v.str_eq(shorter));
            }
        }
        Value::Object(m) => {
            let mut n = 0;
            for member in v.members() {
                let (k, x) = member.map_err(|e| TestCaseError::fail(e.to_string()))?;
                let Some(w) = m.get(k.as_str().as_ref()) else {
                    return Err(TestCaseError::fail(format!("unexpected key {k:?}")));
                };
                check_value(x, w)?;
                n += 1;
            }
            prop_assert_eq!(n, m.len());
        }
        _ => prop_assert!(!v.str_eq("")),
    }
    Ok(())
}

/// `is_valid_object` and `members` agree with `serde_json` on `line`.
fn check_validity(line: &[u8]) -> Result<(), TestCaseError> {
    let want = serde_object(line).is_some();
    prop_assert_eq!(
        json::is_valid_object(line),
        want,
        "{:?}",
        String::from_utf8_lossy(line)
    );
    let errors = json::members(line).filter(Result::is_err).count();
    prop_assert_eq!(errors, usize::from(!want));
    let _ = json::field(line, "a");
    // The same text as the elements of an array (twice, so the separator
    // is walked too): `elements` agrees with `serde_json` as well.
    let mut array = b"[".to_vec();
    array.extend_from_slice(line);
    array.push(b',');
    array.extend_from_slice(line);
    array.push(b']');
    let want = serde_json::from_slice::<Vec<serde_json::Value>>(&array).ok();
    let got: Result<Vec<json::Value<'_>>, json::Error> = json::elements(&array).collect();
    prop_assert_eq!(
        got.is_ok(),
        want.is_some(),
        "{:?}",
        String::from_utf8_lossy(&array)
    );
    if let (Ok(got), Some(want)) = (got, want) {
        prop_assert_eq!(got.len(), want.len());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// `members`, `field`, `Value`'s accessors and `write_compact` agree
    /// with `serde_json` on generated lines.
    #[test]
    fn members_and_field_agree_with_serde(d in doc()) {
        let line = line_of(&d);
        let bytes = line.as_bytes();
        let Some(want) = serde_object(bytes) else {
            // A number out of `f64` range: both must reject the line.
            prop_assert!(!json::is_valid_object(bytes), "{}", line);
            prop_assert!(line.contains('e') || line.contains('E'), "{}", line);
            return Ok(());
        };
        prop_assert!(json::is_valid_object(bytes), "{}", line);
        let mut n = 0;
        for m in json::members(bytes) {
            let (k, v) = m.map_err(|e| TestCaseError::fail(format!("{e} in {line}")))?;
            let key = k.as_str();
            prop_assert!(k.eq_str(&key));
            let Some(w) = want.get(key.as_ref()) else {
                return Err(TestCaseError::fail(format!("unexpected key {key:?} in {line}")));
            };
            check_value(v, w)?;
            n += 1;
        }
        prop_assert_eq!(n, want.len());
        for (k, w) in &want {
            let v = json::field(bytes, k);
            prop_assert!(v.is_some(), "no field {:?} in {}", k, line);
            if let Some(v) = v {
                check_value(v, w)?;
            }
            let mut other = k.clone();
            other.push('\u{1}');
            prop_assert!(json::field(bytes, &other).is_none());
        }
        prop_assert_eq!(json::field(bytes, "\u{1}absent"), None);
        let mut compact = Vec::new();
        json::write_compact(bytes, &mut compact);
        let reparsed = serde_object(&compact);
        prop_assert_eq!(reparsed.as_ref(), Some(&want));
        let mut again = Vec::new();
        json::write_compact(&compact, &mut again);
        prop_assert_eq!(&again, &compact);
        prop_assert!(!compact.starts_with(b" ") && !compact.ends_with(b" "));
    }

    /// On truncated and damaged lines, validity agrees with `serde_json`.
    #[test]
    fn validity_agrees_with_serde_on_damaged_lines(
        d in doc(),
        cut in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        byte in prop_oneof![
            any::<u8>(),
            prop::sample::select(&b"{}[]\",:\\ 0-.eE+tfnu\x7f\x80\xc3\xe9"[..]),
        ],
    ) {
        let bytes = line_of(&d).into_bytes();
        check_validity(&bytes[..cut.index(bytes.len() + 1)])?;
        let i = at.index(bytes.len() + 1);
        let mut inserted = bytes.clone();
        inserted.insert(i, byte);
        check_validity(&inserted)?;
        if i < bytes.len() {
            let mut changed = bytes.clone();
            changed[i] = byte;
            check_validity(&changed)?;
            let mut removed = bytes.clone();
            removed.remove(i);
            check_validity(&removed)?;
        }
    }

    /// Arbitrary bytes: no panic, same verdict.
    #[test]
    fn random_bytes_agree(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        check_validity(&bytes)?;
        let mut framed = b"{\"a\":".to_vec();
        framed.extend_from_slice(&bytes);
        framed.push(b'}');
        check_validity(&framed)?;
    }

    /// Numbers: `num::parse_f64` and the validator agree with `serde_json`.
    #[test]
    fn numbers_agree_with_serde(n in number()) {
        let want = serde_json::from_str::<Value>(&n).ok();
        let line = format!("{{\"n\":{n}}}");
        prop_assert_eq!(json::is_valid_object(line.as_bytes()), want.is_some(), "{}", n);
        if let Some(want) = want {
            prop_assert_eq!(crate::num::parse_f64(n.as_bytes()), want.as_f64(), "{}", n);
            if let Some(i) = want.as_i64() {
                prop_assert_eq!(crate::num::parse_i64(n.as_bytes()), Some(i));
            }
        }
    }
}

/// The Loghub samples kept in the repository (`tests/data/loghub`).
fn loghub_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../tests/data/loghub")
}

/// Real system logs (<https://github.com/logpai/loghub>): no line is a JSON
/// object, and wrapped in JSON objects every line round-trips.
#[test]
fn real_logs() {
    let dir = loghub_dir();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|x| x == "log"));
    files.sort();
    assert!(!files.is_empty(), "no .log files in {}", dir.display());
    let mut n = 0;
    for path in files {
        let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            assert!(
                !json::is_valid_object(line),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(line)
            );
            let msg = String::from_utf8_lossy(line);
            let obj = serde_json::json!({
                "ts": n, "level": "info", "nested": {"msg": "inner", "list": [1, {"msg": 2}]},
                "msg": msg, "after": [msg, -1.5e-3],
            });
            for wrapped in [obj.to_string(), format!("{obj:#}")] {
                let w = wrapped.as_bytes();
                assert!(json::is_valid_object(w));
                let got = json::field(w, "msg");
                assert!(got.is_some_and(|v| v.str_eq(&msg)), "{wrapped}");
                assert_eq!(got.and_then(|v| v.as_str()).as_deref(), Some(msg.as_ref()));
                assert_eq!(json::field(w, "ts").and_then(|v| v.as_i64()), Some(n));
            }
            n += 1;
        }
    }
    assert!(n >= 8000, "read only {n} lines");
}
