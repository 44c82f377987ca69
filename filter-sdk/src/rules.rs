//! What the host accepts as a partition key and as a route name, so that a
//! filter's native tests ([`crate::testing`]) refuse what the host refuses.
//!
//! - A partition key is 1 to [`MAX_KEY_CHARS`] Unicode characters (the
//!   Kinesis limit) without control characters: keys are printed one event
//!   per line, where a newline or tab would forge lines.
//! - A route name is 1 to [`MAX_ROUTE_BYTES`] bytes without control
//!   characters (a pipeline's `routes` names match it exactly).

use std::fmt;

/// Characters in a partition key, at most (Kinesis' limit).
pub const MAX_KEY_CHARS: usize = 256;

/// Bytes in a route name, at most.
pub const MAX_ROUTE_BYTES: usize = 256;

/// Why a partition key or route name is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// A key that is not 1 to [`MAX_KEY_CHARS`] characters.
    KeyLength { chars: usize },
    /// A route name that is not 1 to [`MAX_ROUTE_BYTES`] bytes.
    RouteLength { bytes: usize },
    /// A control character (U+0000–U+001F, U+007F–U+009F) at a character
    /// position (0-based).
    Control { at: usize, ch: char },
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::KeyLength { chars } => write!(
                f,
                "must be 1 to {MAX_KEY_CHARS} characters (the Kinesis limit), not {chars}"
            ),
            NameError::RouteLength { bytes } => {
                write!(f, "must be 1 to {MAX_ROUTE_BYTES} bytes, not {bytes}")
            }
            NameError::Control { at, ch } => write!(
                f,
                "has the control character U+{:04X} at character {}; control characters are \
                 refused (a newline or tab would forge lines where it is printed)",
                *ch as u32,
                at + 1
            ),
        }
    }
}

impl std::error::Error for NameError {}

fn no_control(s: &str) -> Result<(), NameError> {
    match s.chars().enumerate().find(|(_, c)| c.is_control()) {
        Some((at, ch)) => Err(NameError::Control { at, ch }),
        None => Ok(()),
    }
}

/// Checks a partition key.
pub fn check_key(key: &str) -> Result<(), NameError> {
    // Bytes bound characters from above: most keys skip the count.
    if key.is_empty() || key.len() > MAX_KEY_CHARS {
        let chars = key.chars().count();
        if chars == 0 || chars > MAX_KEY_CHARS {
            return Err(NameError::KeyLength { chars });
        }
    }
    no_control(key)
}

/// Checks a route name.
pub fn check_route(route: &str) -> Result<(), NameError> {
    if route.is_empty() || route.len() > MAX_ROUTE_BYTES {
        return Err(NameError::RouteLength { bytes: route.len() });
    }
    no_control(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_one_to_256_characters_without_controls_pass() {
        assert_eq!(check_key("user-1"), Ok(()));
        assert_eq!(check_key(&"😀".repeat(MAX_KEY_CHARS)), Ok(()));
        assert_eq!(check_key(""), Err(NameError::KeyLength { chars: 0 }));
        assert_eq!(
            check_key(&"k".repeat(MAX_KEY_CHARS + 1)),
            Err(NameError::KeyLength {
                chars: MAX_KEY_CHARS + 1
            })
        );
        assert_eq!(
            check_key("a\nb"),
            Err(NameError::Control { at: 1, ch: '\n' })
        );
        assert_eq!(
            check_key("\u{85}"),
            Err(NameError::Control {
                at: 0,
                ch: '\u{85}'
            })
        );
        let e = check_key("ab\tc")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("U+0009 at character 3"), "{e}");
    }

    #[test]
    fn route_names_are_bounded_and_printable() {
        assert_eq!(check_route("hot"), Ok(()));
        assert_eq!(check_route(""), Err(NameError::RouteLength { bytes: 0 }));
        assert_eq!(
            check_route(&"r".repeat(1 << 20)),
            Err(NameError::RouteLength { bytes: 1 << 20 })
        );
        assert!(check_route("a\rb").is_err());
    }
}
