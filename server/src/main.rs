//! The `commandpost` binary; everything is in the library so tests run the same code.

/// jemalloc rather than glibc's allocator: with one task pair per connection spread over the runtime's threads,
/// glibc kept several times more memory resident per idle viewer connection (BENCHMARKS.md, "Many incidents").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    server::cli::main();
}
