//! Failures of a generator run: each is a clear `Error` (never a panic) that
//! names the file, and the line where there is one.
//!
//! Headers with errors are written under `CARGO_TARGET_TMPDIR`, one directory
//! per test.

use std::fs;
use std::path::{Path, PathBuf};

use libfabric_generator::{generate_from, Config, Error};

fn templates() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates")
}

/// An empty directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("generator-errors").join(test);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create the scratch directory");
    dir
}

/// Runs the generator over `headers` in `include_dir`; it must fail.
fn generate_err(include_dir: &Path, headers: &[&str]) -> Error {
    let config = Config { headers: headers.iter().map(|h| h.to_string()).collect(), ..Config::default() };
    match generate_from(config, include_dir, &templates()) {
        Ok(_) => panic!("generating {headers:?} from {} succeeded; expected an error", include_dir.display()),
        Err(e) => e,
    }
}

#[test]
fn missing_include_directory() {
    let dir = scratch("missing_include_directory").join("no-such-include-dir");
    let err = generate_err(&dir, &["fabric.h"]);
    let message = err.to_string();
    assert!(matches!(err, Error::Headers(_)), "unexpected error kind: {err:?}");
    assert!(message.contains(&dir.display().to_string()), "the error does not name the directory: {message}");
    assert!(message.contains("is not a directory"), "unclear error: {message}");
}

#[test]
fn configured_header_does_not_exist() {
    let dir = scratch("configured_header_does_not_exist");
    fs::write(dir.join("present.h"), "struct fi_present { int a; };\n").unwrap();
    let err = generate_err(&dir, &["present.h", "rdma/missing.h"]);
    let message = err.to_string();
    assert!(matches!(err, Error::Headers(_)), "unexpected error kind: {err:?}");
    assert!(message.contains("rdma/missing.h"), "the error does not name the header: {message}");
    assert!(!message.contains("present.h"), "the error names the wrong header: {message}");
}

#[test]
fn header_with_a_syntax_error() {
    let dir = scratch("header_with_a_syntax_error");
    fs::write(
        dir.join("bad_syntax.h"),
        "/* line 1 */\n\
         #include <stdint.h>\n\
         struct fi_fine { uint64_t caps; };\n\
         static const int fi_broken = ;\n",
    )
    .unwrap();
    let err = generate_err(&dir, &["bad_syntax.h"]);
    let message = err.to_string();
    let Error::Diagnostics(diagnostics) = &err else { panic!("unexpected error kind: {err:?}") };
    assert!(
        diagnostics.iter().any(|(file, line, _)| file.ends_with("bad_syntax.h") && *line == 4),
        "no diagnostic at bad_syntax.h:4: {diagnostics:?}"
    );
    assert!(message.contains("bad_syntax.h:4: error:"), "the error does not name file and line: {message}");
}

/// The line-numbered error of an inline function the translator rejects.
fn unsupported(test: &str, header: &str, text: &str, line: u32) {
    let dir = scratch(test);
    fs::write(dir.join(header), text).unwrap();
    let err = generate_err(&dir, &[header]);
    let message = err.to_string();
    let Error::Unsupported { location, .. } = &err else { panic!("unexpected error kind: {err:?}") };
    let expected = format!("{header}:{line}");
    assert!(location.ends_with(&expected), "location {location:?} is not {expected}");
    assert!(message.contains(&expected), "the error does not name file and line: {message}");
    assert!(
        message.contains("templates") && message.contains("skip"),
        "the error does not say how to proceed: {message}"
    );
}

#[test]
fn inline_function_with_a_for_loop() {
    unsupported(
        "inline_function_with_a_for_loop",
        "unsupported_for.h",
        "/* line 1 */\n\
         static inline int fi_sum(int n)\n\
         {\n\
         \tint total = 0;\n\
         \tfor (int i = 0; i < n; i++)\n\
         \t\ttotal = total + i;\n\
         \treturn total;\n\
         }\n",
        5,
    );
}

#[test]
fn inline_function_with_a_switch() {
    unsupported(
        "inline_function_with_a_switch",
        "unsupported_switch.h",
        "/* line 1 */\n\
         static inline int fi_pick(int c)\n\
         {\n\
         \tswitch (c) {\n\
         \tcase 0:\n\
         \t\treturn 1;\n\
         \tdefault:\n\
         \t\treturn 2;\n\
         \t}\n\
         }\n",
        4,
    );
}

#[test]
fn identifier_rust_cannot_spell() {
    // C accepts extended identifiers; Rust identifiers here are ASCII
    // (found by tests/fuzz.rs: a macro name with "…" in it).
    let dir = scratch("identifier_rust_cannot_spell");
    fs::write(dir.join("odd_name.h"), "#define FI_OK 1\n#define FI_ODD\u{2026}NAME 2\n").unwrap();
    let err = generate_err(&dir, &["odd_name.h"]);
    let message = err.to_string();
    assert!(matches!(err, Error::Unsupported { .. }), "unexpected error kind: {err:?}");
    assert!(message.contains("odd_name.h:2"), "the error does not name the file and line: {message}");
    assert!(message.contains("FI_ODD\u{2026}NAME"), "the error does not name the identifier: {message}");
}
