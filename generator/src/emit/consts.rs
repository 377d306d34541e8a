//! `src/consts/<header>.rs`: every object-like macro and every enumerator,
//! with the value and exact C type clang computed.

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use super::rust_type::{ident, rust_type};
use crate::config::Config;
use crate::model::*;

/// Items for one header.
pub fn emit_header(api: &Api, config: &Config, header: &str) -> TokenStream {
    let mut items = Vec::new();
    // Macros and enums interleave in the header; keep declaration order.
    let mut entries: Vec<(u32, TokenStream)> = Vec::new();
    for m in api.macros.iter().filter(|m| m.loc.header == header) {
        if config.skip.contains_key(&m.name) {
            continue;
        }
        if let Some(item) = macro_const(m, config) {
            entries.push((m.loc.line, item));
        }
    }
    for e in api.enums.iter().filter(|e| e.loc.header == header) {
        let owner = e.display_name();
        // A named enum's members take the enum's type, as bindgen declares it
        // in raw.rs; an anonymous enum's take its integer type.
        let ty = match &e.name {
            Some(n) => {
                let id = ident(n);
                quote!(#id)
            }
            None => rust_type(&e.repr),
        };
        for m in &e.members {
            if config.skip.contains_key(&m.name) {
                continue;
            }
            let name = ident(&m.name);
            let value = int_literal(m.value);
            let doc = format!(" `{}` in `{owner}`.", m.name);
            let deprecated = deprecated_attr(config.deprecated.get(&m.name).map(String::as_str));
            entries.push((
                m.loc.line,
                quote! {
                    #[doc = #doc]
                    #deprecated
                    pub const #name: #ty = #value;
                },
            ));
        }
    }
    entries.sort_by_key(|(line, _)| *line);
    items.extend(entries.into_iter().map(|(_, t)| t));
    quote!(#(#items)*)
}

fn macro_const(m: &Macro, config: &Config) -> Option<TokenStream> {
    let name = ident(&m.name);
    let doc = format!(" `#define {} {}`", m.name, m.definition);
    let note = config.deprecated.get(&m.name).cloned().or_else(|| m.pragma_deprecated.clone());
    let deprecated = deprecated_attr(note.as_deref());
    let (ty, value) = match &m.kind {
        MacroKind::Int { value, ty } => (rust_type(ty), int_literal(*value)),
        MacroKind::Float { value, ty } => (rust_type(ty), {
            let lit = Literal::f64_unsuffixed(*value);
            quote!(#lit)
        }),
        MacroKind::Str(s) => {
            let c = std::ffi::CString::new(s.as_str()).ok()?;
            let lit = Literal::c_string(&c);
            (quote!(&::core::ffi::CStr), quote!(#lit))
        }
        MacroKind::FunctionLike | MacroKind::NotConstant(_) => return None,
    };
    Some(quote! {
        #[doc = #doc]
        #deprecated
        pub const #name: #ty = #value;
    })
}

pub fn deprecated_attr(note: Option<&str>) -> TokenStream {
    match note {
        Some(n) => quote!(#[deprecated(note = #n)]),
        None => quote!(),
    }
}

/// An integer literal; negative values are written with a minus sign and, as
/// all literals here, take their type from the declaration.
pub fn int_literal(v: i128) -> TokenStream {
    let lit = Literal::u128_unsuffixed(v.unsigned_abs());
    if v < 0 {
        quote!(-#lit)
    } else {
        quote!(#lit)
    }
}
