//! The example filters' own native unit tests (the SDK's test harness, no
//! Wasm runtime) run as part of the workspace's test command.

#[test]
fn example_filters_pass_their_native_tests() {
    let root = xtask::root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = xtask::clean_command(cargo)
        .args(["test", "--quiet", "--manifest-path"])
        .arg(root.join("example-filters/Cargo.toml"))
        .env(
            "CARGO_TARGET_DIR",
            xtask::target_dir().join("example-filters"),
        )
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "example filters' tests failed:\n{text}"
    );
    // Every crate ran tests (not zero).
    let ran: usize = text
        .lines()
        .filter_map(|l| l.strip_prefix("test result: ok. "))
        .filter_map(|l| l.split(' ').next()?.parse::<usize>().ok())
        .sum();
    assert!(ran >= 12, "only {ran} tests ran:\n{text}");
}
