//! Every name the emitters will turn into a Rust identifier must be one:
//! C accepts extended identifiers (`FI_…` with a non-ASCII letter) that Rust
//! does not, so such a name is a clear error naming where it was declared,
//! never a panic in the emitter.

use crate::error::Error;
use crate::model::{Api, CType, Loc, Stmt};

/// A C identifier the emitters can spell in Rust: ASCII letters, digits
/// and `_`, not starting with a digit.
fn valid(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks `name` (empty: an anonymous declaration, which has none to spell).
fn check(name: &str, loc: &Loc, what: &str) -> Result<(), Error> {
    if name.is_empty() || valid(name) {
        return Ok(());
    }
    Err(Error::Unsupported {
        location: loc.to_string(),
        what: format!("{what} {name:?} is not an identifier Rust can spell (ASCII letters, digits and `_` only)"),
    })
}

fn check_type(ty: &CType, loc: &Loc) -> Result<(), Error> {
    match ty {
        CType::Typedef(n) | CType::Struct(n) | CType::Union(n) | CType::Enum(n) => check(n, loc, "type name"),
        CType::Pointer { pointee, .. } => check_type(pointee, loc),
        CType::Array { element, .. } => check_type(element, loc),
        CType::Function { ret, params, .. } => {
            check_type(ret, loc)?;
            params.iter().try_for_each(|p| check_type(p, loc))
        }
        _ => Ok(()),
    }
}

fn check_block(block: &[Stmt], loc: &Loc) -> Result<(), Error> {
    for stmt in block {
        match stmt {
            Stmt::Local { name, ty, .. } => {
                check(name, loc, "local variable")?;
                check_type(ty, loc)?;
            }
            Stmt::If { then, otherwise, .. } => {
                check_block(then, loc)?;
                check_block(otherwise, loc)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks every declared name of `api`, and the type names it uses.
pub fn check_identifiers(api: &Api) -> Result<(), Error> {
    for f in &api.functions {
        check(&f.name, &f.loc, "function")?;
        check_type(&f.ret, &f.loc)?;
        for p in &f.params {
            check(&p.name, &f.loc, "parameter")?;
            check_type(&p.ty, &f.loc)?;
        }
        if let Some(Ok(body)) = &f.body {
            check_block(body, &f.loc)?;
        }
    }
    for e in &api.enums {
        if let Some(name) = &e.name {
            check(name, &e.loc, "enum")?;
        }
        for m in &e.members {
            check(&m.name, &m.loc, "enumerator")?;
        }
    }
    for m in &api.macros {
        check(&m.name, &m.loc, "macro")?;
    }
    for s in &api.structs {
        check(&s.name, &s.loc, if s.is_union { "union" } else { "struct" })?;
        for field in &s.fields {
            check(&field.name, &field.loc, "field")?;
            check_type(&field.ty, &field.loc)?;
        }
    }
    for t in &api.typedefs {
        check(&t.name, &t.loc, "typedef")?;
        check_type(&t.ty, &t.loc)?;
    }
    Ok(())
}
