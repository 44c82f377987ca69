//! Property tests of the intake's body decoders (100,000 cases): no input
//! makes them panic, errors point inside the input, and JSON arrays agree
//! with serde_json.

use bytes::Bytes;
use kinesthetic::intake::decode::{self, DecodeError, Encoding, Format};
use proptest::prelude::*;
use serde_json::Value;

const MAX: usize = 1 << 20;

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12)
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[ -~é\u{1F600}\"\\\\\n\t]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("[a-z\"\\\\ ]{0,6}", inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Serializes with whitespace from `ws` between every token.
fn spaced(v: &Value, ws: &mut impl FnMut() -> &'static str, out: &mut String) {
    out.push_str(ws());
    match v {
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(ws());
                    out.push(',');
                }
                spaced(x, ws, out);
            }
            out.push_str(ws());
            out.push(']');
        }
        Value::Object(o) => {
            out.push('{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(ws());
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(ws());
                out.push(':');
                spaced(x, ws, out);
            }
            out.push_str(ws());
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
    out.push_str(ws());
}

/// Whether `s` has whitespace outside strings.
fn has_loose_whitespace(s: &[u8]) -> bool {
    let (mut in_str, mut esc) = (false, false);
    for &c in s {
        if in_str {
            match (esc, c) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
        } else if c == b'"' {
            in_str = true;
        } else if matches!(c, b' ' | b'\n' | b'\t' | b'\r') {
            return true;
        }
    }
    false
}

fn check_error_position(e: &DecodeError, len: usize) {
    match e {
        DecodeError::BadJson {
            offset,
            line,
            column,
            ..
        } => {
            assert!(*offset <= len, "offset {offset} past {len}");
            assert!(*line >= 1 && *column >= 1);
        }
        DecodeError::Malformed { offset, .. } => assert!(*offset <= len),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 22_000, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn arrays_split_into_the_same_values_compacted(
        items in prop::collection::vec(value(), 1..6),
        seed in any::<u64>(),
    ) {
        let spaces = ["", " ", "\n", "\t", "\r\n  ", ""];
        let mut x = seed | 1;
        let mut ws = move || {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            spaces[(x % spaces.len() as u64) as usize]
        };
        let mut body = String::from("[");
        for (i, v) in items.iter().enumerate() {
            if i > 0 { body.push(','); }
            spaced(v, &mut ws, &mut body);
        }
        body.push(']');
        let events = decode::split(Format::JsonArray, Bytes::from(body.clone()), MAX)
            .map_err(|e| TestCaseError::fail(format!("{e} in {body}")))?;
        prop_assert_eq!(events.len(), items.len());
        for (e, want) in events.iter().zip(&items) {
            let got: Value = serde_json::from_slice(e).map_err(|err| TestCaseError::fail(err.to_string()))?;
            prop_assert_eq!(&got, want);
            prop_assert!(!has_loose_whitespace(e), "{}", String::from_utf8_lossy(e));
        }
    }

    #[test]
    fn mutated_arrays_never_panic_and_agree_with_serde_json(
        items in prop::collection::vec(value(), 1..4),
        cut in any::<prop::sample::Index>(),
        pos in any::<prop::sample::Index>(),
        byte in prop::sample::select(vec![b'"', b',', b']', b'[', b'{', b'}', b':', b'\\', b'0', b'-', b'e', b' ', b'x']),
        mode in 0u8..3,
    ) {
        let mut body = serde_json::to_vec(&Value::Array(items)).unwrap_or_default();
        match mode {
            0 => body.truncate(cut.index(body.len() + 1)),
            1 => { let p = pos.index(body.len()); body[p] = byte; }
            _ => { let p = pos.index(body.len() + 1); body.insert(p, byte); }
        }
        let len = body.len();
        let ours = decode::split(Format::JsonArray, Bytes::from(body.clone()), MAX);
        let theirs = serde_json::from_slice::<Value>(&body);
        match (&ours, &theirs) {
            (Ok(events), Ok(Value::Array(a))) => {
                prop_assert_eq!(events.len(), a.len());
                for (e, want) in events.iter().zip(a) {
                    let got: Value = serde_json::from_slice(e).map_err(|err| TestCaseError::fail(err.to_string()))?;
                    prop_assert_eq!(&got, want);
                }
            }
            (Err(DecodeError::Empty), Ok(Value::Array(a))) => prop_assert!(a.is_empty()),
            // Documented differences: serde_json refuses lone surrogates and
            // numbers beyond f64, which the JSON grammar allows and we keep
            // as written.
            (Ok(_), Err(e)) => prop_assert!(e.to_string().contains("surrogate") || e.to_string().contains("out of range"), "we accepted what serde_json refuses ({}): {}", e, String::from_utf8_lossy(&body)),
            (Err(e), Ok(Value::Array(_))) => prop_assert!(false, "we refused ({}) what serde_json accepts: {}", e, String::from_utf8_lossy(&body)),
            (Err(e), _) => check_error_position(e, len),
            (Ok(_), Ok(_)) => prop_assert!(false, "accepted a non-array"),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_any_decoder(body in prop::collection::vec(any::<u8>(), 0..300)) {
        let len = body.len();
        let b = Bytes::from(body);
        for f in [Format::Ndjson, Format::JsonArray] {
            if let Err(e) = decode::split(f, b.clone(), 64) {
                check_error_position(&e, len);
            }
        }
        for enc in [Encoding::Gzip, Encoding::Zstd] {
            if let Err(e) = decode::decompress(enc, b.clone(), 4096) {
                check_error_position(&e, len);
                prop_assert!(matches!(e, DecodeError::Malformed { .. } | DecodeError::BodyTooLarge { .. }), "{}", e);
            }
        }
    }

    #[test]
    fn ndjson_events_are_the_lines_minus_terminators_and_blanks(
        lines in prop::collection::vec(prop::collection::vec(prop_oneof![any::<u8>(), Just(b'\r'), Just(b'\n')], 0..20), 0..20),
    ) {
        let body: Vec<u8> = lines.concat();
        let want: Vec<Vec<u8>> = body
            .split(|&c| c == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
            .filter(|l| !l.is_empty())
            .collect();
        match decode::split(Format::Ndjson, Bytes::from(body), MAX) {
            Ok(ev) => {
                let got: Vec<Vec<u8>> = ev.iter().map(<[u8]>::to_vec).collect();
                prop_assert_eq!(got, want);
            }
            Err(DecodeError::Empty) => prop_assert!(want.is_empty()),
            Err(e) => prop_assert!(false, "{}", e),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12_000, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn compressed_bodies_round_trip_or_stop_at_the_limit(
        body in prop::collection::vec(any::<u8>(), 0..2000),
        limit in 0usize..3000,
        zstd_not_gzip in any::<bool>(),
    ) {
        use std::io::Write;
        let (enc, packed) = if zstd_not_gzip {
            (Encoding::Zstd, zstd::encode_all(&body[..], 1).unwrap_or_default())
        } else {
            let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            let _ = g.write_all(&body);
            (Encoding::Gzip, g.finish().unwrap_or_default())
        };
        match decode::decompress(enc, Bytes::from(packed), limit) {
            Ok(out) => { prop_assert!(body.len() <= limit); prop_assert_eq!(&out[..], &body[..]); }
            Err(DecodeError::BodyTooLarge { limit: l }) => { prop_assert_eq!(l, limit); prop_assert!(body.len() > limit); }
            Err(e) => prop_assert!(false, "{}", e),
        }
    }
}
