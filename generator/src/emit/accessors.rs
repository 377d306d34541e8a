//! `src/accessors.rs`: typed getters and setters on the raw structs, so the
//! safe layer never touches a raw field.
//!
//! Integer fields that carry an enum or a flag set (per the configuration)
//! read and write that type; strings read as `CStr`; pointers to structs read
//! as references. Reading through a pointer is `unsafe`, with the contract that
//! the pointer is null or valid; storing a pointer or a value is safe.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::rust_type::{ident, repr_type, rust_type};
use crate::config::{AccessorConfig, Config};
use crate::error::Error;
use crate::model::*;

/// What a typed field's Rust type is.
enum Typed<'a> {
    Enum { repr: &'a str },
    Flags { repr: &'a str },
}

fn typed<'a>(api: &Api, config: &'a Config, name: &str) -> Option<Typed<'a>> {
    if let Some(f) = config.flags.iter().find(|f| f.name == name) {
        return Some(Typed::Flags { repr: &f.repr });
    }
    let e = config.enums.iter().find(|e| e.name == name)?;
    let found = super::enums::find_enum(api, e)?;
    let repr = match &e.repr {
        Some(r) => r.as_str(),
        None => match &found.repr {
            CType::Builtin(b) if b == "int" => "c_int",
            _ => "c_uint",
        },
    };
    Some(Typed::Enum { repr })
}

pub fn emit(api: &Api, config: &Config) -> Result<TokenStream, Error> {
    let mut items = Vec::new();
    for a in &config.accessors {
        let Some(s) = api.structs.iter().find(|s| s.name == a.name && s.complete) else { continue };
        items.push(struct_accessors(api, config, a, s)?);
    }
    Ok(quote!(#(#items)*))
}

fn struct_accessors(api: &Api, config: &Config, a: &AccessorConfig, s: &Struct) -> Result<TokenStream, Error> {
    let sname = ident(&s.name);
    let mut methods = Vec::new();
    for (f, union) in flatten(api, s).into_iter().filter(|(f, _)| !a.skip.contains_key(&f.name)) {
        let field = ident(&f.name);
        let getter = field.clone();
        // Where the value lives, and how to read it: a member of an anonymous
        // union of aliases is read through the support macro that explains why
        // that is sound.
        let (place, read) = match &union {
            None => (quote!(self.#field), quote!(self.#field)),
            Some(anon) => (quote!(self.#anon.#field), quote!(alias_union_read!(self.#anon, #field))),
        };
        if union.is_some() && !is_scalar(&f.ty) {
            continue;
        }
        let setter = format_ident!("set_{}", f.name);
        let fty = rust_type(&f.ty);
        let doc = format!(" `{}.{}` (`{}`).", s.name, f.name, f.ty);
        if let Some(tname) = a.typed.get(&f.name) {
            let t = ident(tname);
            let kind = typed(api, config, tname).ok_or_else(|| Error::Config {
                file: "generator/libfabric.toml".into(),
                message: format!(
                    "accessor {}.{} names `{tname}`, which is no configured enum or flag set",
                    s.name, f.name
                ),
            })?;
            let (get, put) = match kind {
                Typed::Enum { repr } => {
                    let r = repr_type(repr);
                    (quote!(#t::from_raw(#read as #r)), quote!(value.raw() as #fty))
                }
                Typed::Flags { repr } => {
                    let r = repr_type(repr);
                    (quote!(#t::from_bits_retain(#read as #r)), quote!(value.bits() as #fty))
                }
            };
            methods.push(quote! {
                #[doc = #doc]
                #[inline]
                pub fn #getter(&self) -> #t { #get }
                #[doc = #doc]
                #[inline]
                pub fn #setter(&mut self, value: #t) { #place = #put; }
            });
            continue;
        }
        match &f.ty {
            CType::Pointer { pointee, .. } if matches!(**pointee, CType::Builtin(ref b) if b == "char") => {
                methods.push(quote! {
                    #[doc = #doc]
                    ///
                    /// # Safety
                    ///
                    /// The field is null or points to a NUL-terminated string that
                    /// outlives the returned reference.
                    #[inline]
                    pub unsafe fn #getter(&self) -> ::core::option::Option<&::core::ffi::CStr> {
                        if self.#field.is_null() {
                            ::core::option::Option::None
                        } else {
                            ::core::option::Option::Some(::core::ffi::CStr::from_ptr(self.#field))
                        }
                    }
                    #[doc = #doc]
                    /// Stores the pointer; ownership rules are libfabric's (`fi_freeinfo`
                    /// frees the strings of an `fi_info`).
                    #[inline]
                    pub fn #setter(&mut self, value: #fty) { self.#field = value; }
                });
            }
            CType::Pointer { pointee, is_const }
                if matches!(**pointee, CType::Struct(_)) && !is_opaque(api, pointee) =>
            {
                let target = rust_type(pointee);
                let mut_getter = format_ident!("{}_mut", f.name);
                let mutable = (!is_const).then(|| {
                    quote! {
                        #[doc = #doc]
                        ///
                        /// # Safety
                        ///
                        /// The field is null or points to a valid, unaliased value that
                        /// outlives the returned reference.
                        #[inline]
                        pub unsafe fn #mut_getter(&mut self) -> ::core::option::Option<&mut #target> {
                            self.#field.as_mut()
                        }
                    }
                });
                methods.push(quote! {
                    #[doc = #doc]
                    ///
                    /// # Safety
                    ///
                    /// The field is null or points to a valid value that outlives the
                    /// returned reference.
                    #[inline]
                    pub unsafe fn #getter(&self) -> ::core::option::Option<&#target> {
                        self.#field.as_ref()
                    }
                    #mutable
                    #[doc = #doc]
                    #[inline]
                    pub fn #setter(&mut self, value: #fty) { self.#field = value; }
                });
            }
            CType::Array { element, len: None } => {
                let e = rust_type(element);
                methods.push(quote! {
                    #[doc = #doc]
                    /// The flexible array member, `len` elements long.
                    ///
                    /// # Safety
                    ///
                    /// At least `len` elements were written after the struct (the
                    /// length comes from the call that filled it).
                    #[inline]
                    pub unsafe fn #getter(&self, len: usize) -> &[#e] {
                        self.#field.as_slice(len)
                    }
                });
            }
            CType::Array { .. } => {
                methods.push(quote! {
                    #[doc = #doc]
                    #[inline]
                    pub fn #getter(&self) -> &#fty { &self.#field }
                    #[doc = #doc]
                    #[inline]
                    pub fn #setter(&mut self, value: #fty) { self.#field = value; }
                });
            }
            CType::Struct(_) | CType::Union(_) => {
                let mut_getter = format_ident!("{}_mut", f.name);
                methods.push(quote! {
                    #[doc = #doc]
                    #[inline]
                    pub fn #getter(&self) -> &#fty { &self.#field }
                    #[doc = #doc]
                    #[inline]
                    pub fn #mut_getter(&mut self) -> &mut #fty { &mut self.#field }
                });
            }
            _ => {
                methods.push(quote! {
                    #[doc = #doc]
                    #[inline]
                    pub fn #getter(&self) -> #fty { #read }
                    #[doc = #doc]
                    #[inline]
                    pub fn #setter(&mut self, value: #fty) { #place = value; }
                });
            }
        }
    }
    let doc = format!(" Typed access to `struct {}` (`{}`).", s.name, s.loc.header);
    Ok(quote! {
        #[doc = #doc]
        impl #sname {
            #(#methods)*
        }
    })
}

/// The struct's named fields, with the members of C11 anonymous unions whose
/// members all share one scalar type (aliases, like 2.x's
/// `data_progress`/`progress`) lifted up: each comes with the bindgen name of
/// the union field that holds it.
fn flatten<'a>(api: &'a Api, s: &'a Struct) -> Vec<(&'a Field, Option<proc_macro2::Ident>)> {
    let mut out = Vec::new();
    let mut anon = 0;
    for f in &s.fields {
        if !f.name.is_empty() {
            out.push((f, None));
            continue;
        }
        anon += 1;
        let CType::Union(name) = &f.ty else { continue };
        let Some(u) = api.structs.iter().find(|x| &x.name == name) else { continue };
        let aliases =
            u.fields.first().is_some_and(|first| u.fields.iter().all(|g| g.ty == first.ty && !g.name.is_empty()));
        if aliases {
            let holder = ident(&format!("__bindgen_anon_{anon}"));
            out.extend(u.fields.iter().map(|g| (g, Some(holder.clone()))));
        }
    }
    out
}

fn is_scalar(t: &CType) -> bool {
    matches!(t, CType::Builtin(_) | CType::Typedef(_) | CType::Enum(_) | CType::Bool)
}

fn is_opaque(api: &Api, t: &CType) -> bool {
    match t {
        CType::Struct(n) => !api.structs.iter().any(|s| &s.name == n && s.complete),
        _ => false,
    }
}
