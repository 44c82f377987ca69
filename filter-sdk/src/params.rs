//! The pipeline's parameters for a filter.

use std::str::FromStr;

/// Key/value parameters passed to [`Filter::init`](crate::Filter::init), in
/// the order the pipeline gave them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parameters from key/value pairs, in the pipeline's order.
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Self { pairs }
    }

    /// The value of `key` (the last one if it is given twice).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or an error naming the missing parameter:
    /// `` missing parameter `key` ``.
    pub fn require(&self, key: &str) -> Result<&str, String> {
        self.get(key)
            .ok_or_else(|| format!("missing parameter `{key}`"))
    }

    /// Parses `key` if present (`Ok(None)` if absent); the error names the
    /// parameter, its value and why it did not parse.
    pub fn parse<T: FromStr>(&self, key: &str) -> Result<Option<T>, String>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|e| format!("parameter `{key}`: cannot parse `{v}`: {e}")),
        }
    }

    /// All pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Params {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self::new(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_parameter_and_value() {
        let p: Params = [("n", "x"), ("m", "3"), ("m", "4")].into_iter().collect();
        assert_eq!(p.require("k"), Err("missing parameter `k`".to_owned()));
        assert_eq!(p.get("m"), Some("4"));
        assert_eq!(p.parse::<u32>("m"), Ok(Some(4)));
        assert_eq!(p.parse::<u32>("absent"), Ok(None));
        let e = p.parse::<u32>("n").err().unwrap_or_default();
        assert!(e.contains("`n`") && e.contains("`x`"), "{e}");
        assert_eq!(p.iter().count(), 3);
    }
}
