//! Golden outputs: each fixture header under `tests/fixtures/` models one hard
//! case of libfabric's headers (or a shape change of libfabric 2.x); every
//! file the generator emits for it is an insta snapshot.
//!
//! A fixture `NAME.h` may come with `NAME.toml`, the generator configuration
//! for it (`headers` is filled in). Review a changed snapshot with
//! `cargo insta review`, or accept all with `INSTA_UPDATE=always cargo test`.

use std::path::{Path, PathBuf};

use libfabric_generator::{generate_from, Config};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn templates() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates")
}

/// Generates the crate for one fixture and snapshots every emitted file that
/// is not a verbatim template.
fn snapshot_fixture(name: &str) {
    let toml = fixtures().join(format!("{name}.toml"));
    let mut config = if toml.is_file() { Config::load(&toml).expect("fixture config") } else { Config::default() };
    config.headers = vec![format!("{name}.h")];
    let generated = generate_from(config, &fixtures(), &templates()).unwrap_or_else(|e| panic!("{name}: {e}"));
    for (path, contents) in &generated.files {
        let verbatim = ["Cargo.toml", "build.rs", "src/lib.rs", "src/support.rs", "src/version.rs", "versions.txt"];
        if verbatim.contains(&path.as_str()) {
            continue;
        }
        let snapshot = format!("{name}__{}", path.replace(['/', '.'], "_"));
        insta::assert_snapshot!(snapshot, contents);
    }
}

macro_rules! fixtures {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                snapshot_fixture(stringify!($name));
            }
        )*
    };
}

fixtures!();
