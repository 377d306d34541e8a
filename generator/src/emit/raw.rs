//! `src/raw.rs`: the C ABI (structs, typedefs, exported functions) from bindgen.
//!
//! Constants and enumerators are left out here: `consts.rs` emits them with
//! the exact C types clang evaluated, and `enums.rs`/`flags.rs` type them.
//! System types come from the libc crate.

use std::collections::BTreeMap;

use bindgen::{EnumVariation, Formatter, RustTarget};
use proc_macro2::{Group, TokenStream, TokenTree};
use syn::visit_mut::VisitMut;

use crate::error::Error;
use crate::parse::Input;

/// Types of the C library that libfabric's headers use, taken from libc.
pub const LIBC_TYPES: &[&str] = &["iovec", "pollfd", "pthread_mutex_t", "pthread_cond_t"];

pub fn emit(input: &Input) -> Result<String, Error> {
    let mut builder = bindgen::Builder::default()
        .header_contents("libfabric_rs_umbrella.h", &input.umbrella())
        .clang_args(input.clang_args.iter().filter(|a| a.starts_with("-I") || a.starts_with("-D")))
        .rust_target(RustTarget::stable(77, 0).map_err(|e| Error::Internal(e.to_string()))?)
        .formatter(Formatter::Prettyplease)
        .use_core()
        .ctypes_prefix("::core::ffi")
        .default_enum_style(EnumVariation::Consts)
        .prepend_enum_name(false)
        .blocklist_item("FI_.*")
        .derive_debug(true)
        .impl_debug(true)
        .derive_default(true)
        .derive_copy(true)
        .layout_tests(true)
        .generate_comments(false)
        .merge_extern_blocks(true)
        .sort_semantically(false)
        .raw_line(format!("pub use libc::{{{}}};", LIBC_TYPES.join(", ")));
    for (_, path) in &input.headers {
        builder = builder.allowlist_file(regex_escape(&path.display().to_string()));
    }
    for t in LIBC_TYPES {
        builder = builder.blocklist_type(t);
    }
    // The private parts of the libc types above.
    builder = builder.blocklist_type("__pthread_.*|__atomic_wide_counter.*");
    let bindings =
        builder.generate().map_err(|e| Error::Bindgen { file: input.include_dir.clone(), message: e.to_string() })?;
    let mut file: syn::File = syn::parse_str(&bindings.to_string())
        .map_err(|e| Error::Internal(format!("bindgen output does not parse: {e}")))?;
    tidy(&mut file);
    Ok(format!(
        "{}//! The C ABI of libfabric, from bindgen {BINDGEN_VERSION} (pinned). Constants are in `consts`.\n{}",
        super::banner("bindgen over the configured headers"),
        prettyplease::unparse(&file)
    ))
}

/// The bindgen version `generator/Cargo.toml` pins.
pub const BINDGEN_VERSION: &str = "0.72.1";

/// Removes what `consts.rs` emits instead (enumerators, whose bindgen type
/// names are positional for anonymous enums) and gives nested anonymous
/// records stable names: `fi_mr_attr__bindgen_ty_1` → `fi_mr_attr__device`,
/// after the field they type, instead of their position.
fn tidy(file: &mut syn::File) {
    file.items.retain(|item| match item {
        syn::Item::Const(c) => !c.ident.to_string().starts_with("FI_"),
        syn::Item::Type(t) => !t.ident.to_string().starts_with("_bindgen_ty_"),
        _ => true,
    });
    file.attrs.retain(|a| !a.path().is_ident("doc"));

    let mut renames = BTreeMap::new();
    for item in &file.items {
        let (parent, fields) = match item {
            syn::Item::Struct(s) => (s.ident.to_string(), s.fields.iter().collect::<Vec<_>>()),
            syn::Item::Union(u) => (u.ident.to_string(), u.fields.named.iter().collect()),
            _ => continue,
        };
        for f in fields {
            let (Some(name), syn::Type::Path(tp)) = (&f.ident, &f.ty) else { continue };
            let Some(last) = tp.path.segments.last() else { continue };
            let ty = last.ident.to_string();
            if !ty.starts_with(&format!("{parent}__bindgen_ty_")) {
                continue;
            }
            let name = name.to_string();
            // A C11 anonymous member (`__bindgen_anon_N`) is `parent__anonN`, as in
            // the model; a named one is `parent__field`.
            let new = match name.strip_prefix("__bindgen_anon_") {
                Some(n) => format!("{parent}__anon{n}"),
                None => format!("{parent}__{}", name.trim_end_matches('_')),
            };
            renames.insert(ty, new);
        }
    }
    Renamer { renames }.visit_file_mut(file);
}

struct Renamer {
    renames: BTreeMap<String, String>,
}

impl Renamer {
    fn rename_text(&self, text: &str) -> String {
        let mut text = text.to_string();
        // Longest first, so `x__bindgen_ty_10` is not caught by `x__bindgen_ty_1`.
        for (old, new) in self.renames.iter().rev() {
            text = text.replace(old.as_str(), new);
        }
        text
    }

    /// Macro arguments (`offset_of!(T, f)`) are tokens, not syntax: rename there too.
    fn rename_tokens(&self, tokens: TokenStream) -> TokenStream {
        tokens
            .into_iter()
            .map(|t| match t {
                TokenTree::Ident(i) => match self.renames.get(&i.to_string()) {
                    Some(new) => TokenTree::Ident(proc_macro2::Ident::new(new, i.span())),
                    None => TokenTree::Ident(i),
                },
                TokenTree::Group(g) => {
                    let mut new = Group::new(g.delimiter(), self.rename_tokens(g.stream()));
                    new.set_span(g.span());
                    TokenTree::Group(new)
                }
                // String literals in macro arguments (`write!(f, "x__bindgen_ty_1 {{ union }}")`).
                TokenTree::Literal(l) => {
                    let text = l.to_string();
                    let renamed = self.rename_text(&text);
                    match renamed.parse::<proc_macro2::Literal>() {
                        Ok(new) if renamed != text => TokenTree::Literal(new),
                        _ => TokenTree::Literal(l),
                    }
                }
                other => other,
            })
            .collect()
    }
}

impl VisitMut for Renamer {
    fn visit_ident_mut(&mut self, i: &mut syn::Ident) {
        if let Some(new) = self.renames.get(&i.to_string()) {
            *i = syn::Ident::new(new, i.span());
        }
    }

    fn visit_macro_mut(&mut self, m: &mut syn::Macro) {
        m.tokens = self.rename_tokens(std::mem::take(&mut m.tokens));
    }

    fn visit_lit_str_mut(&mut self, s: &mut syn::LitStr) {
        *s = syn::LitStr::new(&self.rename_text(&s.value()), s.span());
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special.then_some('\\').into_iter().chain(std::iter::once(c))
        })
        .collect()
}
