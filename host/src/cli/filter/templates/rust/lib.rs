//! `@NAME@`: a Kinesthetic filter. Keeps the lines that contain the
//! parameter `needle`.
//!
//! Test natively:  cargo test
//! Build:          cargo build --release --target wasm32-wasip2
//! Run:            kinesthetic filter run target/wasm32-wasip2/release/@IDENT@.wasm --param needle=error INPUT
//!                 (with CARGO_TARGET_DIR set, the module is in $CARGO_TARGET_DIR/wasm32-wasip2/release/)

use kinesthetic_filter::{Emit, Filter, Line, Params, export_filter};

pub struct @TYPE@ {
    needle: Vec<u8>,
}

impl Filter for @TYPE@ {
    fn init(params: &Params) -> Result<Self, String> {
        let needle = params.require("needle")?;
        Ok(Self { needle: needle.as_bytes().to_vec() })
    }

    fn line(&mut self, line: &Line<'_>, emit: &mut Emit<'_>) {
        let bytes = line.bytes();
        if bytes.windows(self.needle.len().max(1)).any(|w| w == self.needle.as_slice()) {
            emit.keep();
        }
    }
}

export_filter!(@TYPE@);

#[cfg(test)]
mod tests {
    use super::*;
    use kinesthetic_filter::testing;

    #[test]
    fn keeps_lines_with_the_needle() {
        let out = testing::run::<@TYPE@>(&[("needle", "error")], &[b"an error", b"all fine", b"error!"])
            .expect("filter runs");
        let kept: Vec<_> = out.iter().map(|o| o.bytes.as_slice()).collect();
        assert_eq!(kept, [&b"an error"[..], b"error!"]);
    }

    #[test]
    fn needle_is_required() {
        let err = testing::run::<@TYPE@>(&[], &[b"x"]).expect_err("init must fail");
        assert!(err.contains("needle"), "{err}");
    }
}
