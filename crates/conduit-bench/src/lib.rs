//! Benchmark drivers written in Rust; each is a binary under `src/bin`, run by a script in
//! `bench/`. See docs/benchmarks.md.
