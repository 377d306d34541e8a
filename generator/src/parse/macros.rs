//! Object-like macros, evaluated by clang rather than pattern-matched.
//!
//! Each macro `X` becomes `static const __typeof__(X) probe_X = X;` in a second
//! translation unit that includes the same headers; clang evaluates the
//! initializer and reports its exact C type. A macro that is not an expression
//! (an attribute, a declaration) makes its probe line fail, and the
//! diagnostic says why.

use std::collections::BTreeMap;

use super::clang::*;
use super::types::ctype;
use crate::error::Error;
use crate::model::{CType, MacroKind};

const PROBE_PREFIX: &str = "libfabric_rs_probe_";
const STRING_PROBE_PREFIX: &str = "libfabric_rs_string_probe_";

/// A macro definition as first seen: its name and body tokens.
pub struct RawMacro {
    pub name: String,
    pub function_like: bool,
    pub body: Vec<Token>,
}

/// Evaluates every object-like macro of `macros` that has a body.
pub fn evaluate(umbrella: &str, args: &[String], macros: &[RawMacro]) -> Result<BTreeMap<String, MacroKind>, Error> {
    let mut out = BTreeMap::new();
    let mut source = String::from(umbrella);
    let first_probe_line = source.lines().count() as u32 + 1;
    let mut probed = Vec::new();
    for m in macros {
        if m.function_like {
            out.insert(m.name.clone(), MacroKind::FunctionLike);
        } else if m.body.is_empty() {
            out.insert(m.name.clone(), MacroKind::NotConstant("empty: an include guard or marker".into()));
        } else if let Some(s) = string_body(&m.body) {
            out.insert(m.name.clone(), MacroKind::Str(s));
        } else {
            source.push_str(&format!("static const __typeof__({n}) {PROBE_PREFIX}{n} = {n};\n", n = m.name));
            probed.push(m.name.clone());
        }
    }

    // A second probe per macro reads string constants built by concatenation
    // (`FI_LIB_EXTENSION ".so"`), which `__typeof__` turns into arrays clang
    // does not evaluate. Its diagnostics are not read.
    for name in &probed {
        source.push_str(&format!("static const char *const {STRING_PROBE_PREFIX}{name} = {name};\n"));
    }
    let tu = TranslationUnit::parse("libfabric_rs_probe.c", &source, args)?;
    let mut strings = BTreeMap::new();
    for c in tu.cursor().children() {
        if let Some(name) = c.spelling().strip_prefix(STRING_PROBE_PREFIX) {
            if let Some(Value::Str(s)) = c.evaluate() {
                strings.insert(name.to_string(), s);
            }
        }
    }
    for d in tu.errors() {
        if d.line >= first_probe_line {
            if let Some(name) = probed.get((d.line - first_probe_line) as usize) {
                out.entry(name.clone()).or_insert_with(|| MacroKind::NotConstant(d.message.clone()));
            }
        }
    }
    for c in tu.cursor().children() {
        if c.kind() != VAR_DECL {
            continue;
        }
        let Some(name) = c.spelling().strip_prefix(PROBE_PREFIX).map(str::to_string) else { continue };
        if let Some(s) = strings.remove(&name) {
            out.insert(name, MacroKind::Str(s));
            continue;
        }
        if out.contains_key(&name) {
            continue;
        }
        let ty = canonical_type(c.ty());
        let kind = match c.evaluate() {
            Some(Value::Int(value)) => MacroKind::Int { value: normalize(value, &ty), ty },
            Some(Value::Float(value)) => MacroKind::Float { value, ty },
            Some(Value::Str(s)) => MacroKind::Str(s),
            None => MacroKind::NotConstant("clang could not evaluate it as a constant".into()),
        };
        out.insert(name, kind);
    }
    for name in probed {
        out.entry(name).or_insert_with(|| MacroKind::NotConstant("no probe result".into()));
    }
    Ok(out)
}

/// The C type of a probe, without the `const` the probe added and without
/// typedef sugar: the exact type C gives the constant.
fn canonical_type(t: Type<'_>) -> CType {
    ctype(t.canonical(), None)
}

/// Reinterprets libclang's value in the constant's own width and signedness.
fn normalize(v: i128, ty: &CType) -> i128 {
    let CType::Builtin(name) = ty else { return v };
    match name.as_str() {
        "int" => v as i32 as i128,
        "unsigned int" => v as u32 as i128,
        "long" | "long long" => v as i64 as i128,
        "unsigned long" | "unsigned long long" => v as u64 as i128,
        _ => v,
    }
}

/// A body made only of string literals (adjacent literals concatenate).
fn string_body(body: &[Token]) -> Option<String> {
    let mut out = String::new();
    for t in body {
        let inner = t.text.strip_prefix('"')?.strip_suffix('"')?;
        if inner.contains('\\') {
            return None; // escapes: let clang evaluate it
        }
        out.push_str(inner);
    }
    Some(out)
}

/// The message of a `_Pragma("GCC warning \"…\"")` in a macro body.
pub fn pragma_deprecation(body: &[Token]) -> Option<String> {
    let i = body.iter().position(|t| t.text == "_Pragma")?;
    // The operand is a string literal holding `GCC warning "message"`.
    let literal = body.get(i + 2)?.text.as_str();
    let inner = literal.strip_prefix('"')?.strip_suffix('"')?.replace("\\\"", "\"");
    let message = inner.strip_prefix("GCC warning").unwrap_or(&inner).trim();
    Some(message.strip_prefix('"').and_then(|m| m.strip_suffix('"')).unwrap_or(message).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(texts: &[&str]) -> Vec<Token> {
        texts.iter().map(|t| Token { text: t.to_string(), is_identifier: false, offset: 0 }).collect()
    }

    #[test]
    fn pragma_message_is_unescaped() {
        let body = tokens(&["_Pragma", "(", r#""GCC warning \"'FI_MR_BASIC' is deprecated\"""#, ")", "(", "1", ")"]);
        assert_eq!(pragma_deprecation(&body).as_deref(), Some("'FI_MR_BASIC' is deprecated"));
        assert_eq!(pragma_deprecation(&tokens(&["(", "1", ")"])), None);
    }
}
