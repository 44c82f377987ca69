//! Test harness for Kinesthetic's integration tests (`tests/it`).
