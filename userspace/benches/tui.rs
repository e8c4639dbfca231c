//! `cniscope tui` benchmarks (filled in with the ui module).

fn main() {}
