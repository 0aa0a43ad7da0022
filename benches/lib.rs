//! Shared helpers for microseg's criterion benchmarks (the benches live in
//! `benches/benches/`).
