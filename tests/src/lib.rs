//! commandpost's integration tests live in `tests/tests/`; this library holds their shared harness.
