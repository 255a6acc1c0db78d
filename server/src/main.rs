//! The `commandpost` binary; everything is in the library so tests run the same code.

fn main() {
    server::cli::main();
}
