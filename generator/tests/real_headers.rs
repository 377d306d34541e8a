//! The installed libfabric headers, through the real configuration: the
//! inventory (every item and what it became) is a snapshot, so a libfabric
//! update shows up as a reviewable diff; and nothing is left unhandled.

use std::path::Path;

use libfabric_generator::inventory::{self, Outcome};
use libfabric_generator::{generate, parse, Options};

#[test]
fn inventory_of_the_installed_headers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let options = Options {
        include_dir: parse::clang::pkg_config_include_dir().expect("libfabric headers via pkg-config"),
        config: root.join("generator/libfabric.toml"),
        templates: root.join("templates"),
    };
    let generated = generate(&options).expect("the installed headers generate");
    let unhandled: Vec<_> = generated.inventory.iter().filter(|e| matches!(e.outcome, Outcome::Unhandled(_))).collect();
    assert!(unhandled.is_empty(), "items neither emitted nor skipped with a reason: {unhandled:#?}");
    insta::assert_snapshot!("inventory", inventory::markdown(&generated.inventory));
    insta::assert_snapshot!("coverage", inventory::coverage(&generated.inventory, &generated.config.headers));
}

#[test]
fn regeneration_is_deterministic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let options = Options {
        include_dir: parse::clang::pkg_config_include_dir().expect("libfabric headers via pkg-config"),
        config: root.join("generator/libfabric.toml"),
        templates: root.join("templates"),
    };
    let first = generate(&options).expect("first run").files;
    let second = generate(&options).expect("second run").files;
    assert_eq!(first.keys().collect::<Vec<_>>(), second.keys().collect::<Vec<_>>());
    for (path, text) in &first {
        assert!(second[path] == *text, "{path} differs between two runs");
    }
}
