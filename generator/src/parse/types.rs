//! libclang types → `model::CType`.

use super::clang::*;
use crate::model::CType;

/// Converts a clang type. `anon_name` names an anonymous record met as the
/// type of a field (`parent__field`), since such records have no tag.
pub fn ctype(t: Type<'_>, anon_name: Option<&str>) -> CType {
    match t.kind() {
        T_VOID => CType::Void,
        T_BOOL => CType::Bool,
        T_CHAR_S | T_CHAR_U => builtin("char"),
        T_SCHAR => builtin("signed char"),
        T_UCHAR => builtin("unsigned char"),
        T_SHORT => builtin("short"),
        T_USHORT => builtin("unsigned short"),
        T_INT => builtin("int"),
        T_UINT => builtin("unsigned int"),
        T_LONG => builtin("long"),
        T_ULONG => builtin("unsigned long"),
        T_LONG_LONG => builtin("long long"),
        T_ULONG_LONG => builtin("unsigned long long"),
        T_FLOAT => builtin("float"),
        T_DOUBLE => builtin("double"),
        T_LONG_DOUBLE => builtin("long double"),
        T_TYPEDEF => CType::Typedef(t.typedef_name()),
        T_ELABORATED => ctype(t.named(), anon_name),
        T_RECORD => {
            let decl = t.declaration();
            let name = record_name(&decl).or_else(|| anon_name.map(str::to_string)).unwrap_or_default();
            if decl.kind() == UNION_DECL {
                CType::Union(name)
            } else {
                CType::Struct(name)
            }
        }
        T_ENUM => CType::Enum(t.declaration().spelling()),
        T_POINTER => {
            let p = t.pointee();
            CType::pointer(ctype(p, None), p.is_const())
        }
        T_CONSTANT_ARRAY => {
            CType::Array { element: Box::new(ctype(t.element(), None)), len: u64::try_from(t.array_len()).ok() }
        }
        T_INCOMPLETE_ARRAY => CType::Array { element: Box::new(ctype(t.element(), None)), len: None },
        T_FUNCTION_PROTO | T_FUNCTION_NO_PROTO => CType::Function {
            ret: Box::new(ctype(t.result(), None)),
            params: t.args().into_iter().map(|a| ctype(a, None)).collect(),
            variadic: t.is_variadic(),
        },
        // Attributed or otherwise sugared types: look through to the canonical one.
        _ => {
            let c = t.canonical();
            if c.kind() == t.kind() {
                CType::Typedef(t.spelling())
            } else {
                ctype(c, anon_name)
            }
        }
    }
}

fn builtin(s: &str) -> CType {
    CType::Builtin(s.to_string())
}

/// A record's tag, or `None` for an anonymous record.
pub fn record_name(decl: &Cursor<'_>) -> Option<String> {
    let s = decl.spelling();
    // libclang spells anonymous records "(anonymous union at …)" or "(unnamed …)".
    (!s.is_empty() && !s.contains(' ') && !decl.is_anonymous()).then_some(s)
}
