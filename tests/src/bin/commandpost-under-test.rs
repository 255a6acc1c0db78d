//! The real `commandpost` command line, built inside the tests crate so that process tests can start it from
//! `CARGO_BIN_EXE_commandpost-under-test` (or next to the test executable) and kill it like any server.

fn main() {
    server::cli::main()
}
