//! The `commandpost` binary.
fn main() {}
