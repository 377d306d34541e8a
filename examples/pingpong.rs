//! `fi_pingpong` in Rust: the same options, output and protocol as
//! libfabric's C tool, so either side of a run may be C.
//!
//! ```text
//! cargo run --release -p libfabric-examples --example pingpong -- -p tcp -e msg            # server
//! cargo run --release -p libfabric-examples --example pingpong -- -p tcp -e msg 127.0.0.1  # client
//! fi_pingpong -p tcp -e msg 127.0.0.1                                                       # or the C client
//! ```

use std::process::ExitCode;

use libfabric_examples::fi_pingpong::{run, Options, Stop, USAGE};

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(stop) => {
            if let Stop::Bad(why) = stop {
                eprintln!("{why}");
            }
            eprint!("{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    match run(&options, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("{failure}");
            ExitCode::FAILURE
        }
    }
}
