//! Nothing: see `tests/defaults.rs`.
