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
    // `headers` is a required key of the configuration; fixtures leave it out
    // (it is set below), so an empty list is put in front of their tables.
    let mut config = match std::fs::read_to_string(&toml) {
        Ok(text) => Config::from_toml(&format!("headers = []\n{text}"), &toml).expect("fixture config"),
        Err(_) => Config::default(),
    };
    config.headers = vec![format!("{name}.h")];
    let generated = generate_from(config, &fixtures(), &templates()).unwrap_or_else(|e| panic!("{name}: {e}"));
    for (path, contents) in &generated.files {
        let verbatim = [
            "Cargo.toml",
            "build.rs",
            "rustfmt.toml",
            "src/lib.rs",
            "src/support.rs",
            "src/version.rs",
            "versions.txt",
        ];
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

fixtures!(
    shift_flags,
    overlapping_bits,
    anonymous_enums,
    enum_values,
    appended_op,
    fid_embedding,
    nested_unions,
    flexible_array,
    pragma_deprecated,
    v2_appended_av_member,
    v2_anonymous_union_in_attr,
    v2_enum_became_macros,
    v2_flag_zeroed,
    v2_enum_inserted,
    inline_forms,
);
