//! `src/enums.rs`: typed open enums and `src/flags.rs`: typed flag sets.
//!
//! Both are `#[repr(transparent)]` newtypes over the C integer with
//! associated consts, so a value a newer libfabric adds passes through
//! unharmed, `Debug` prints the C name, and conversion to and from the raw
//! integer is free. Which constants belong together comes from the
//! configuration, since libfabric's bit families overlap.

use std::collections::BTreeSet;

use proc_macro2::TokenStream;
use quote::quote;

use super::consts::{deprecated_attr, int_literal};
use super::rust_type::{ident, repr_name, repr_type};
use crate::config::{Config, EnumConfig, FlagsConfig};
use crate::model::*;

/// One named constant of the surface, wherever it was declared.
#[derive(Debug, Clone)]
pub struct Constant {
    pub name: String,
    pub value: i128,
    pub deprecated: Option<String>,
}

/// Looks up a constant by C name: an enumerator or an integer macro.
pub fn constant(api: &Api, config: &Config, name: &str) -> Option<Constant> {
    let deprecated = |pragma: Option<&String>| config.deprecated.get(name).or(pragma).cloned();
    for e in &api.enums {
        if let Some(m) = e.members.iter().find(|m| m.name == name) {
            return Some(Constant { name: name.into(), value: m.value, deprecated: deprecated(None) });
        }
    }
    api.macros.iter().find(|m| m.name == name).and_then(|m| match &m.kind {
        MacroKind::Int { value, .. } => {
            Some(Constant { name: name.into(), value: *value, deprecated: deprecated(m.pragma_deprecated.as_ref()) })
        }
        _ => None,
    })
}

/// The C enum a configuration entry designates.
pub fn find_enum<'a>(api: &'a Api, c: &EnumConfig) -> Option<&'a Enum> {
    api.enums.iter().find(|e| match (&c.c, &c.first) {
        (Some(tag), _) => e.name.as_deref() == Some(tag.as_str()),
        (None, Some(first)) => e.name.is_none() && e.members.first().is_some_and(|m| &m.name == first),
        (None, None) => false,
    })
}

/// The members of a configured enum: its own, then those named in `extra`.
pub fn enum_members(api: &Api, config: &Config, c: &EnumConfig) -> Vec<Constant> {
    let mut out: Vec<Constant> = Vec::new();
    let mut push = |k: Constant| {
        if !out.iter().any(|o| o.name == k.name) && !config.skip.contains_key(&k.name) {
            out.push(k);
        }
    };
    if let Some(e) = find_enum(api, c) {
        for m in &e.members {
            push(Constant {
                name: m.name.clone(),
                value: m.value,
                deprecated: config.deprecated.get(&m.name).cloned(),
            });
        }
    }
    for extra in &c.extra {
        // Another anonymous enum, named by its first member: take all of it.
        let whole = api.enums.iter().find(|e| e.name.is_none() && e.members.first().is_some_and(|m| &m.name == extra));
        match whole {
            Some(e) => e.members.iter().for_each(|m| {
                push(Constant {
                    name: m.name.clone(),
                    value: m.value,
                    deprecated: config.deprecated.get(&m.name).cloned(),
                })
            }),
            None => {
                if let Some(k) = constant(api, config, extra) {
                    push(k);
                }
            }
        }
    }
    out
}

/// The longest common `_`-delimited prefix of the names.
fn common_prefix(names: &[&str]) -> String {
    let Some(first) = names.first() else { return String::new() };
    let mut prefix = String::new();
    for part in first.split_inclusive('_') {
        let candidate = format!("{prefix}{part}");
        if candidate.len() < first.len() && names.iter().all(|n| n.starts_with(&candidate) && n.len() > candidate.len())
        {
            prefix = candidate;
        } else {
            break;
        }
    }
    prefix
}

/// Rust names for the associated consts: the C name minus `strip`, unless that
/// would start with a digit or collide, then the whole C name.
fn const_names(names: &[&str], strip: Option<&str>) -> Vec<String> {
    let prefix = strip.map(str::to_string).unwrap_or_else(|| common_prefix(names));
    let mut seen = BTreeSet::new();
    names
        .iter()
        .map(|n| {
            let short = n.strip_prefix(prefix.as_str()).unwrap_or(n);
            let chosen = if short.is_empty() || short.starts_with(|c: char| c.is_ascii_digit()) || seen.contains(short)
            {
                n.to_string()
            } else {
                short.to_string()
            };
            seen.insert(chosen.clone());
            chosen
        })
        .collect()
}

pub fn emit_enums(api: &Api, config: &Config) -> TokenStream {
    let mut items = Vec::new();
    for c in &config.enums {
        let members = enum_members(api, config, c);
        let Some(e) = find_enum(api, c) else { continue };
        let name = ident(&c.name);
        let repr_text = c.repr.clone().unwrap_or_else(|| repr_name(&e.repr));
        let repr = repr_type(&repr_text);
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        let rust_names = const_names(&names, c.strip.as_deref());
        let consts = members.iter().zip(&rust_names).map(|(m, rn)| {
            let rn = ident(rn);
            let cn = ident(&m.name);
            let doc = format!(" `{}` ({})", m.name, m.value);
            let dep = deprecated_attr(m.deprecated.as_deref());
            quote! {
                #[doc = #doc]
                #dep
                pub const #rn: Self = Self(#cn as #repr);
            }
        });
        // One name per value: the first declared, except that a sentinel
        // (`FI_DATATYPE_LAST`) gives way to a real member with the same value
        // (`FI_INT128`).
        let is_sentinel = |n: &str| n.ends_with("_LAST") || n.ends_with("_MAX");
        let mut named: Vec<&Constant> = Vec::new();
        for m in &members {
            match named.iter().position(|n| n.value == m.value) {
                None => named.push(m),
                Some(i) if is_sentinel(&named[i].name) && !is_sentinel(&m.name) => named[i] = m,
                Some(_) => {}
            }
        }
        let arms = named.iter().map(|m| {
            let v = int_literal(m.value);
            let n = &m.name;
            quote!(#v => ::core::option::Option::Some(#n),)
        });
        let all = members.iter().zip(&rust_names).map(|(m, rn)| {
            let (n, rn) = (&m.name, ident(rn));
            quote!((#n, Self::#rn),)
        });
        let c_name = e.display_name();
        let type_deprecated = deprecated_attr(c.c.as_ref().and_then(|t| config.deprecated.get(t)).map(String::as_str));
        let doc = format!(" {}", c.doc);
        let origin = format!(" C: `{c_name}` (`{}`), carried as `{repr_text}`.", e.loc.header);
        items.push(quote! {
            #[doc = #doc]
            #[doc = ""]
            #[doc = #origin]
            #type_deprecated
            #[repr(transparent)]
            #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
            pub struct #name(pub #repr);

            impl #name {
                #(#consts)*

                /// Every named value with its C name, in declaration order
                /// (aliases included).
                pub const NAMED: &'static [(&'static str, Self)] = &[#(#all)*];

                /// The C name of this value (the first declared, where several share it),
                /// or `None` for a value these headers do not name.
                pub const fn name(self) -> ::core::option::Option<&'static str> {
                    match self.0 {
                        #(#arms)*
                        _ => ::core::option::Option::None,
                    }
                }
            }

            open_enum_impls!(#name, #repr);
        });
    }
    quote!(#(#items)*)
}

/// The members of a flag family that exist in these headers and are not the
/// `0` placeholders libfabric leaves for retired flags.
pub fn flag_members(api: &Api, config: &Config, f: &FlagsConfig) -> Vec<Constant> {
    f.members
        .iter()
        .filter(|n| !config.skip.contains_key(*n))
        .filter_map(|n| constant(api, config, n))
        .filter(|k| k.value != 0)
        .collect()
}

pub fn emit_flags(api: &Api, config: &Config) -> TokenStream {
    let mut items = Vec::new();
    for f in &config.flags {
        let members = flag_members(api, config, f);
        let name = ident(&f.name);
        let repr = repr_type(&f.repr);
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        let rust_names = const_names(&names, Some(f.strip.as_deref().unwrap_or("FI_")));
        let consts = members.iter().zip(&rust_names).map(|(m, rn)| {
            let rn = ident(rn);
            let cn = ident(&m.name);
            let doc = format!(" `{}` ({:#x})", m.name, m.value);
            let dep = deprecated_attr(m.deprecated.as_deref());
            quote! {
                #[doc = #doc]
                #dep
                pub const #rn: Self = Self(#cn as #repr);
            }
        });
        let named = members.iter().map(|m| {
            let n = &m.name;
            let cn = ident(&m.name);
            quote!((#n, #cn as #repr),)
        });
        let doc = format!(" {}", f.doc);
        items.push(quote! {
            #[doc = #doc]
            #[repr(transparent)]
            #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
            pub struct #name(pub #repr);

            impl #name {
                #(#consts)*

                /// Every flag of the family with its C name, in declaration order.
                pub const NAMED: &'static [(&'static str, #repr)] = &[#(#named)*];
            }

            flag_set_impls!(#name, #repr);
        });
    }
    quote!(#(#items)*)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_stops_at_word_boundaries() {
        assert_eq!(common_prefix(&["FI_EP_UNSPEC", "FI_EP_MSG"]), "FI_EP_");
        assert_eq!(common_prefix(&["FI_INT8", "FI_INTX"]), "FI_");
        assert_eq!(common_prefix(&["FI_A"]), "FI_");
    }

    #[test]
    fn names_never_start_with_digits_or_collide() {
        let names = const_names(&["FI_8BIT", "FI_X", "FX_X"], Some("FI_"));
        assert_eq!(names, ["FI_8BIT", "X", "FX_X"]);
    }
}
