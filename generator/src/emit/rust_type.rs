//! C types → the Rust types of the generated crate (the same ones bindgen
//! uses in `raw.rs`, so wrappers and ops tables agree).

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;

use crate::model::CType;

/// The Rust type for a C type. Struct, union, enum and typedef names resolve
/// through `use crate::raw::*` in the emitted modules.
pub fn rust_type(t: &CType) -> TokenStream {
    match t {
        CType::Void => quote!(::core::ffi::c_void),
        CType::Bool => quote!(bool),
        CType::Builtin(name) => builtin(name),
        CType::Typedef(name) => match name.as_str() {
            "uint8_t" => quote!(u8),
            "uint16_t" => quote!(u16),
            "uint32_t" => quote!(u32),
            "uint64_t" => quote!(u64),
            "int8_t" => quote!(i8),
            "int16_t" => quote!(i16),
            "int32_t" => quote!(i32),
            "int64_t" => quote!(i64),
            "size_t" | "uintptr_t" => quote!(usize),
            "ssize_t" | "intptr_t" | "ptrdiff_t" => quote!(isize),
            other => {
                let id = ident(other);
                quote!(#id)
            }
        },
        CType::Struct(name) | CType::Union(name) | CType::Enum(name) => {
            let id = ident(name);
            quote!(#id)
        }
        CType::Pointer { pointee, is_const } => {
            if let CType::Function { .. } = **pointee {
                let f = fn_pointer(pointee);
                return quote!(::core::option::Option<#f>);
            }
            let inner = rust_type(pointee);
            if *is_const {
                quote!(*const #inner)
            } else {
                quote!(*mut #inner)
            }
        }
        CType::Array { element, len } => {
            let e = rust_type(element);
            let n = len.unwrap_or(0) as usize;
            quote!([#e; #n])
        }
        CType::Function { .. } => fn_pointer(t),
    }
}

fn fn_pointer(t: &CType) -> TokenStream {
    let CType::Function { ret, params, variadic } = t else { unreachable!("fn_pointer of a non-function") };
    let params = params.iter().map(rust_type);
    let dots = variadic.then(|| quote!(, ...));
    let ret = return_type(ret);
    quote!(unsafe extern "C" fn(#(#params),* #dots) #ret)
}

/// `-> T`, or nothing for `void`.
pub fn return_type(t: &CType) -> TokenStream {
    if *t == CType::Void {
        quote!()
    } else {
        let r = rust_type(t);
        quote!(-> #r)
    }
}

fn builtin(name: &str) -> TokenStream {
    match name {
        "char" => quote!(::core::ffi::c_char),
        "signed char" => quote!(::core::ffi::c_schar),
        "unsigned char" => quote!(::core::ffi::c_uchar),
        "short" => quote!(::core::ffi::c_short),
        "unsigned short" => quote!(::core::ffi::c_ushort),
        "int" => quote!(::core::ffi::c_int),
        "unsigned int" => quote!(::core::ffi::c_uint),
        "long" => quote!(::core::ffi::c_long),
        "unsigned long" => quote!(::core::ffi::c_ulong),
        "long long" => quote!(::core::ffi::c_longlong),
        "unsigned long long" => quote!(::core::ffi::c_ulonglong),
        "float" => quote!(f32),
        "double" => quote!(f64),
        // No Rust equivalent; no libfabric signature uses it.
        _ => quote!(::core::ffi::c_void),
    }
}

/// A Rust integer type named in the configuration (`u32`, `c_int`, `usize`).
pub fn repr_type(name: &str) -> TokenStream {
    match name {
        "c_int" | "c_uint" | "c_long" | "c_ulong" | "c_longlong" | "c_ulonglong" | "c_char" | "c_short"
        | "c_ushort" => {
            let id = ident(name);
            quote!(::core::ffi::#id)
        }
        other => {
            let id = ident(other);
            quote!(#id)
        }
    }
}

/// The configuration name of a builtin C integer type (`unsigned int` → `c_uint`).
pub fn repr_name(t: &CType) -> String {
    match t {
        CType::Builtin(n) => match n.as_str() {
            "int" => "c_int",
            "unsigned int" => "c_uint",
            "long" => "c_long",
            "unsigned long" => "c_ulong",
            "long long" => "c_longlong",
            "unsigned long long" => "c_ulonglong",
            "char" => "c_char",
            _ => "c_int",
        }
        .to_string(),
        other => rust_type(other).to_string().replace(' ', ""),
    }
}

/// An identifier; a C name that is a Rust keyword gets a trailing `_`, as
/// bindgen spells such fields and parameters.
pub fn ident(name: &str) -> Ident {
    const KEYWORDS: &[&str] = &[
        "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn", "for", "if", "impl",
        "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "static", "struct", "super",
        "trait", "true", "type", "unsafe", "use", "where", "while", "async", "await", "dyn", "abstract", "become",
        "box", "do", "final", "macro", "override", "priv", "typeof", "unsized", "virtual", "yield", "try", "gen",
    ];
    if KEYWORDS.contains(&name) || matches!(name, "self" | "Self") {
        Ident::new(&format!("{name}_"), Span::call_site())
    } else {
        Ident::new(name, Span::call_site())
    }
}
