//! Property test (a fuzzer where cargo-fuzz cannot run: it needs a nightly
//! toolchain): the generator over mutated fixture headers returns a result,
//! never panics. Each case edits one fixture a few times (cuts, inserted
//! tokens, repeated lines, changed digits) and runs the whole pipeline on it.
//!
//! CI runs 48 cases; `PROPTEST_CASES=5000 cargo test -p libfabric-generator
//! --test fuzz` (or `cargo xtask fuzz`) runs more.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use libfabric_generator::{generate_from, Config};
use proptest::prelude::*;
use proptest::sample::Index;

const FIXTURES: &[&str] = &[
    "anonymous_enums",
    "appended_op",
    "enum_values",
    "fid_embedding",
    "flexible_array",
    "inline_forms",
    "nested_unions",
    "overlapping_bits",
    "pragma_deprecated",
    "shift_flags",
];

/// Fragments that make C headers interesting to break.
const TOKENS: &[&str] = &[
    "{",
    "}",
    ";",
    "(",
    ")",
    "*",
    ",",
    "=",
    "enum",
    "struct",
    "union",
    "typedef",
    "static inline",
    "#define FI_X ",
    "#if 0\n",
    "#endif\n",
    "(1ULL << 63)",
    "-1",
    "0x",
    "void",
    "int",
    "\\\n",
    "/*",
    "*/",
    "\"",
    "'",
    "\0",
    "…",
];

#[derive(Debug, Clone)]
enum Edit {
    Cut { at: Index, len: usize },
    Insert { at: Index, token: Index },
    RepeatLine { line: Index },
    Digit { at: Index, digit: u8 },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), 1..40usize).prop_map(|(at, len)| Edit::Cut { at, len }),
        (any::<Index>(), any::<Index>()).prop_map(|(at, token)| Edit::Insert { at, token }),
        any::<Index>().prop_map(|line| Edit::RepeatLine { line }),
        (any::<Index>(), b'0'..=b'9').prop_map(|(at, digit)| Edit::Digit { at, digit }),
    ]
}

/// Applies `edit` at a character boundary of `text`.
fn apply(text: &mut String, edit: &Edit) {
    let boundary = |i: &Index, text: &str| {
        let mut at = i.index(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        at
    };
    match edit {
        Edit::Cut { at, len } => {
            let start = boundary(at, text);
            let mut end = (start + len).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.replace_range(start..end, "");
        }
        Edit::Insert { at, token } => {
            let at = boundary(at, text);
            text.insert_str(at, TOKENS[token.index(TOKENS.len())]);
        }
        Edit::RepeatLine { line } => {
            let lines: Vec<&str> = text.lines().collect();
            if !lines.is_empty() {
                let i = line.index(lines.len());
                let mut out = lines[..=i].join("\n");
                out.push('\n');
                out.push_str(&lines[i..].join("\n"));
                *text = out;
            }
        }
        Edit::Digit { at, digit } => {
            if let Some(pos) =
                text.char_indices().map(|(i, _)| i).filter(|&i| text.as_bytes()[i].is_ascii_digit()).nth(at.index(64))
            {
                text.replace_range(pos..pos + 1, std::str::from_utf8(&[*digit]).unwrap_or("0"));
            }
        }
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_headers_give_a_result_never_a_panic(fixture in 0..FIXTURES.len(), edits in prop::collection::vec(edit(), 1..6)) {
        let name = FIXTURES[fixture];
        let mut text = std::fs::read_to_string(fixtures().join(format!("{name}.h"))).expect("fixture");
        for e in &edits {
            apply(&mut text, e);
        }
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("generator-fuzz");
        std::fs::create_dir_all(&dir).expect("scratch directory");
        std::fs::write(dir.join(format!("{name}.h")), &text).expect("write the mutated header");
        let toml = fixtures().join(format!("{name}.toml"));
        let mut config = match std::fs::read_to_string(&toml) {
            Ok(t) => Config::from_toml(&format!("headers = []\n{t}"), &toml).expect("fixture config"),
            Err(_) => Config::default(),
        };
        config.headers = vec![format!("{name}.h")];
        let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates");
        let outcome = catch_unwind(AssertUnwindSafe(|| generate_from(config, &dir, &templates).map(drop)));
        prop_assert!(outcome.is_ok(), "the generator panicked on {name} after {edits:?}");
        if let Ok(Err(e)) = outcome {
            // An error says what went wrong, in words.
            prop_assert!(!e.to_string().is_empty());
        }
    }
}
