//! Each safety promise of the safe layer, broken on purpose: none of these
//! programs may compile (`tests/compile_fail/*.rs`, with the compiler's
//! expected complaint beside each).

#[test]
fn misuse_does_not_compile() {
    trybuild::TestCases::new().compile_fail("compile_fail/*.rs");
}
