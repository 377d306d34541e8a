//! The libfabric binding generator.
//!
//! The pipeline is `parse` (libclang AST → [`model::Api`]), then `emit`
//! (model + [`config::Config`] → the files of the `libfabric-sys` crate).
//! `cargo xtask regen` drives it; see CI.md.

pub mod config;
pub mod error;
pub mod model;
pub mod parse;

pub use config::Config;
pub use error::Error;
pub mod emit;
pub mod generate;
pub mod inventory;

pub use generate::{generate, generate_from, Generated, Options};
