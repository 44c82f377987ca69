//! `rekey`: sets each event's partition key from the top-level JSON field
//! named by the `field` parameter (strings decoded, other values as their
//! JSON text). Lines without the field, or not JSON, keep their key.

use kinesthetic_filter::json::{self, Kind};
use kinesthetic_filter::{Emit, Filter, Line, Params, export_filter};

pub struct Rekey {
    field: String,
}

impl Filter for Rekey {
    fn init(params: &Params) -> Result<Self, String> {
        Ok(Rekey {
            field: params.require("field")?.to_owned(),
        })
    }

    fn line(&mut self, line: &Line<'_>, emit: &mut Emit<'_>) {
        emit.keep();
        if let Some(v) = json::field(line.bytes(), &self.field) {
            match v.kind() {
                Kind::String => {
                    if let Some(s) = v.as_str() {
                        emit.set_key(&s);
                    }
                }
                _ => {
                    if let Ok(s) = std::str::from_utf8(v.raw()) {
                        emit.set_key(s);
                    }
                }
            }
        }
    }
}

export_filter!(Rekey);

#[cfg(test)]
mod tests {
    use super::*;
    use kinesthetic_filter::testing;

    #[test]
    fn keys_from_the_field() {
        let out = testing::run::<Rekey>(
            &[("field", "user")],
            &[
                br#"{"user":"a\u0062c"}"#,
                br#"{"user":7}"#,
                b"plain",
                br#"{"x":1}"#,
            ],
        )
        .unwrap_or_default();
        let keys: Vec<Option<&str>> = out.iter().map(|o| o.key.as_deref()).collect();
        assert_eq!(keys, [Some("abc"), Some("7"), None, None]);
        assert_eq!(out.len(), 4, "every line is kept");
    }
}
