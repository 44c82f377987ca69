//! `rekey`: sets each event's partition key from the top-level JSON field
//! named by the parameter `field` (required): a string's decoded text, or a
//! number's text as written. The line itself is kept unchanged. Lines that
//! are not JSON objects, lack the field, or have it as another kind of value
//! or as a string that is not a valid partition key (empty, over 256
//! characters, or holding a control character) keep their key.
//!
//! Re-keyed output can feed another stream partitioned by that field.

use kinesthetic_filter::json::{self, Kind};
use kinesthetic_filter::{Emit, Filter, Line, Params, export_filter, rules};

pub struct Rekey {
    field: String,
}

impl Filter for Rekey {
    fn init(params: &Params) -> Result<Self, String> {
        let field = params.require("field")?;
        Ok(Rekey {
            field: field.to_owned(),
        })
    }

    fn line(&mut self, line: &Line<'_>, emit: &mut Emit<'_>) {
        emit.keep();
        let Some(value) = json::field(line.bytes(), &self.field) else {
            return;
        };
        match value.kind() {
            Kind::String => {
                if let Some(key) = value.as_str().filter(|k| rules::check_key(k).is_ok()) {
                    emit.set_key(&key);
                }
            }
            Kind::Number => {
                if let Ok(key) = std::str::from_utf8(value.raw())
                    && rules::check_key(key).is_ok()
                {
                    emit.set_key(key);
                }
            }
            _ => {}
        }
    }
}

export_filter!(Rekey);

#[cfg(test)]
mod tests {
    use super::*;
    use kinesthetic_filter::testing::{self, Input};

    #[test]
    fn keys_come_from_the_field() {
        let lines = [
            &br#"{"user":"alice","n":1}"#[..],
            br#"{ "n" : 1 , "user" : "a\u0062c" }"#,
            br#"{"user":-7.5e3}"#,
            br#"{"us\u0065r":"escaped key"}"#,
            br#"{"user":{"id":1}}"#,
            br#"{"user":null}"#,
            br#"{"user":""}"#,
            br#"{"nested":{"user":"no"}}"#,
            b"plain text user=bob",
            br#"{"user":"first","user":"second"}"#,
            br#"{"user":"forged\n0-1 line"}"#,
        ];
        let mut input = Input::new();
        for line in lines {
            input.push_event(line, "old", (1, input.len() as u64), 0);
        }
        let run = testing::run_input::<Rekey>(&[("field", "user")], &input)
            .unwrap_or_else(|e| panic!("{e}"));
        let keys: Vec<Option<&str>> = run.outputs.iter().map(|o| o.key.as_deref()).collect();
        assert_eq!(
            keys,
            [
                Some("alice"),
                Some("abc"),
                Some("-7.5e3"),
                Some("escaped key"),
                None,
                None,
                None,
                None,
                None,
                Some("first"),
                None,
            ]
        );
        let long = format!(r#"{{"user":"{}"}}"#, "k".repeat(257));
        let out = testing::run::<Rekey>(&[("field", "user")], &[long.as_bytes()])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out[0].key, None, "a key over 256 characters is not set");
        let bytes: Vec<&[u8]> = run.outputs.iter().map(|o| &o.bytes[..]).collect();
        assert_eq!(bytes, lines, "every line is kept unchanged");
    }

    #[test]
    fn field_is_required() {
        let e = testing::run::<Rekey>(&[], &[b"{}"]).err();
        assert_eq!(e.as_deref(), Some("missing parameter `field`"));
    }
}
