//! Property tests: the JSON helpers agree with serde_json on generated
//! objects (with random whitespace and escaping), on mutated and truncated
//! lines, and on real system logs.

use proptest::prelude::*;
use serde_json::{Map, Value};

use crate::json;

/// A JSON string literal for `s`, escaping some characters at random.
fn encode_str(s: &str, escape_mask: u64, out: &mut String) {
    out.push('"');
    for (i, c) in s.chars().enumerate() {
        let escape = (escape_mask >> (i % 64)) & 1 == 1;
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if escape && (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04X}", c as u32)),
            c if escape => {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            '/' if escape => out.push_str("\\/"),
            c => out.push(c),
        }
    }
    out.push('"');
}

const WS: [&str; 5] = ["", " ", "  ", "\t", "\n "];

/// Serialises `v` with whitespace and escapes chosen by `seed`.
fn encode(v: &Value, seed: &mut u64, out: &mut String) {
    fn next(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed >> 33
    }
    let ws = |n: u64| WS[(n % 5) as usize];
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => encode_str(s, next(seed), out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(ws(next(seed)));
                encode(x, seed, out);
                out.push_str(ws(next(seed)));
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            out.push_str(ws(next(seed)));
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                    out.push_str(ws(next(seed)));
                }
                encode_str(k, next(seed), out);
                out.push_str(ws(next(seed)));
                out.push(':');
                out.push_str(ws(next(seed)));
                encode(x, seed, out);
                out.push_str(ws(next(seed)));
            }
            out.push('}');
        }
    }
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        (any::<f64>().prop_filter("finite", |f| f.is_finite())).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        "[a-z\"\\\\/\u{e9}\u{1F600}\t\n]{0,8}".prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}|\\PC{1,4}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn object() -> impl Strategy<Value = (Map<String, Value>, u64)> {
    (
        prop::collection::btree_map("[a-z_]{1,8}|\\PC{1,5}", value(), 0..8),
        any::<u64>(),
    )
        .prop_map(|(m, seed)| (m.into_iter().collect(), seed))
}

fn serde_object(line: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

fn raw_value(v: json::Value<'_>) -> Value {
    serde_json::from_slice(v.raw()).unwrap_or_else(|e| panic!("raw value is not JSON: {e}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn members_and_field_agree_with_serde((obj, seed) in object()) {
        let mut line = String::new();
        let mut s = seed;
        encode(&Value::Object(obj.clone()), &mut s, &mut line);
        let parsed = serde_object(line.as_bytes());
        prop_assert_eq!(parsed.as_ref(), Some(&obj), "generator produced {}", line);
        prop_assert!(json::is_valid_object(line.as_bytes()));
        let mut seen = Map::new();
        for m in json::members(line.as_bytes()) {
            let (k, v) = m.map_err(|e| TestCaseError::fail(format!("{e} in {line}")))?;
            seen.insert(k.as_str().into_owned(), raw_value(v));
            if let Value::String(s) = &obj[k.as_str().as_ref()] {
                prop_assert!(v.str_eq(s));
                let decoded = v.as_str();
                prop_assert_eq!(decoded.as_deref(), Some(s.as_str()));
            }
        }
        prop_assert_eq!(&seen, &obj);
        for (k, want) in &obj {
            let got = json::field(line.as_bytes(), k).map(raw_value);
            prop_assert_eq!(got.as_ref(), Some(want));
            if let Some(f) = want.as_f64() {
                let v = json::field(line.as_bytes(), k).and_then(|v| v.as_f64());
                prop_assert_eq!(v, Some(f));
            }
        }
        prop_assert_eq!(json::field(line.as_bytes(), "\u{1}absent"), None);
        let mut compact = Vec::new();
        json::write_compact(line.as_bytes(), &mut compact);
        let reparsed = serde_object(&compact);
        prop_assert_eq!(reparsed.as_ref(), Some(&obj));
        prop_assert!(!compact.iter().any(|&b| b == b'\n'));
    }

    #[test]
    fn validity_agrees_with_serde_on_damaged_lines(
        (obj, seed) in object(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut line = String::new();
        let mut s = seed;
        encode(&Value::Object(obj), &mut s, &mut line);
        let bytes = line.into_bytes();
        let truncated = &bytes[..cut.index(bytes.len() + 1)];
        prop_assert_eq!(json::is_valid_object(truncated), serde_object(truncated).is_some(),
            "truncated: {:?}", String::from_utf8_lossy(truncated));
        if !bytes.is_empty() {
            let mut mutated = bytes.clone();
            mutated[flip.index(bytes.len())] = byte;
            prop_assert_eq!(json::is_valid_object(&mutated), serde_object(&mutated).is_some(),
                "mutated: {:?}", String::from_utf8_lossy(&mutated));
        }
    }

    #[test]
    fn random_bytes_never_panic_and_agree(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        prop_assert_eq!(json::is_valid_object(&bytes), serde_object(&bytes).is_some());
        let _ = json::field(&bytes, "a");
    }
}

fn loghub_dir() -> Option<std::path::PathBuf> {
    let d = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/loghub");
    if d.is_dir() {
        return Some(d);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("loghub data missing at {} in CI", d.display());
    }
    eprintln!("skipping: loghub data not found at {}", d.display());
    None
}

/// Real system logs (https://github.com/logpai/loghub): not JSON, and
/// wrapped in JSON objects they round-trip.
#[test]
fn real_logs() {
    let Some(dir) = loghub_dir() else { return };
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().extension().is_none_or(|x| x != "log") {
            continue;
        }
        let text = std::fs::read(e.path()).unwrap_or_default();
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            assert!(!json::is_valid_object(line));
            let s = String::from_utf8_lossy(line);
            let wrapped =
                serde_json::json!({"level": "info", "msg": s, "n": n, "nested": {"msg": "x"}});
            let text = wrapped.to_string();
            let got = json::field(text.as_bytes(), "msg")
                .and_then(|v| v.as_str().map(|c| c.into_owned()));
            assert_eq!(got.as_deref(), Some(s.as_ref()));
            assert!(json::is_valid_object(text.as_bytes()));
            n += 1;
        }
    }
    assert!(n >= 8000, "read {n} lines");
}
