//! Runnable examples live beside this file as `[[example]]` targets; the
//! larger ones keep their logic here, where tests and benchmarks reuse it.

pub mod cli;
pub mod fi_pingpong;
