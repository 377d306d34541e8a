//! Header parsing: libclang AST → `model::Api`.

mod body;
pub mod clang;
mod macros;
mod names;
mod types;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use self::clang::*;
use self::types::{ctype, record_name};
use crate::config::Config;
use crate::error::Error;
use crate::model::*;

/// The headers to parse: an include directory and the configured header list.
pub struct Input {
    pub include_dir: PathBuf,
    /// (relative name, canonical path) in configured order.
    pub headers: Vec<(String, PathBuf)>,
    pub clang_args: Vec<String>,
}

impl Input {
    /// Resolves the configured headers under `include_dir`; every one must exist.
    pub fn new(include_dir: &Path, config: &Config) -> Result<Input, Error> {
        if !include_dir.is_dir() {
            return Err(Error::Headers(format!("{} is not a directory", include_dir.display())));
        }
        let mut headers = Vec::new();
        for h in &config.headers {
            let path = include_dir.join(h);
            let canonical = path.canonicalize().map_err(|e| Error::Headers(format!("{}: {e}", path.display())))?;
            headers.push((h.clone(), canonical));
        }
        let mut clang_args = vec![
            "-x".into(),
            "c".into(),
            "-std=gnu11".into(),
            "-ferror-limit=0".into(),
            format!("-I{}", include_dir.display()),
        ];
        clang_args.extend(config.clang_args.iter().cloned());
        Ok(Input { include_dir: include_dir.to_path_buf(), headers, clang_args })
    }

    /// The translation unit that includes every header.
    pub fn umbrella(&self) -> String {
        self.headers.iter().map(|(h, _)| format!("#include <{h}>\n")).collect()
    }
}

/// Parses the headers into the model.
pub fn parse(input: &Input) -> Result<Api, Error> {
    let umbrella = input.umbrella();
    let tu = TranslationUnit::parse("libfabric_rs_umbrella.c", &umbrella, &input.clang_args)?;
    let errors = tu.errors();
    if !errors.is_empty() {
        return Err(Error::Diagnostics(errors.into_iter().map(|d| (d.file, d.line, d.message)).collect()));
    }

    let by_path: HashMap<PathBuf, String> =
        input.headers.iter().map(|(name, path)| (path.clone(), name.clone())).collect();
    let header_of = |file: &Path| -> Option<String> {
        by_path.get(file).cloned().or_else(|| file.canonicalize().ok().and_then(|p| by_path.get(&p).cloned()))
    };
    let mut canon_cache: HashMap<PathBuf, Option<String>> = HashMap::new();
    let mut header_of_cached = |file: &Path| -> Option<String> {
        canon_cache.entry(file.to_path_buf()).or_insert_with(|| header_of(file)).clone()
    };

    let mut api = Api::default();
    for (name, path) in &input.headers {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        api.headers.push(Header { path: name.clone(), sha256: hex(&Sha256::digest(&bytes)) });
    }

    // Pass 1: collect top-level cursors that belong to the configured headers.
    let mut raw_macros = Vec::new();
    let mut macro_locs = BTreeMap::new();
    let mut inline_cursors = Vec::new();
    let mut seen_functions = BTreeSet::new();
    let mut defined_records = BTreeSet::new();
    let mut defined_anywhere = BTreeSet::new();

    for c in tu.cursor().children() {
        if matches!(c.kind(), STRUCT_DECL | UNION_DECL) && c.is_definition() {
            if let Some(name) = record_name(&c) {
                defined_anywhere.insert(name);
            }
        }
        let location = c.location();
        let Some(header) = header_of_cached(&location.file) else { continue };
        let loc = Loc { header, line: location.line };
        match c.kind() {
            MACRO_DEFINITION => {
                let tokens = c.tokens();
                let body = body_tokens(&tokens, c.is_macro_function_like());
                let pragma = macros::pragma_deprecation(&body);
                let definition = body.iter().map(|t| t.text.as_str()).collect::<Vec<_>>().join(" ");
                macro_locs.insert(c.spelling(), (loc, pragma, definition));
                raw_macros.push(macros::RawMacro {
                    name: c.spelling(),
                    function_like: c.is_macro_function_like(),
                    body,
                });
            }
            FUNCTION_DECL => {
                let name = c.spelling();
                if c.is_definition() {
                    seen_functions.insert(name.clone());
                    inline_cursors.push((c, loc));
                } else if seen_functions.insert(name.clone()) {
                    api.functions.push(function_signature(&c, loc, None));
                }
            }
            ENUM_DECL if c.is_definition() => api.enums.push(enumeration(&c, loc, &mut header_of_cached)),
            STRUCT_DECL | UNION_DECL => {
                let Some(name) = record_name(&c) else { continue };
                if c.is_definition() && defined_records.insert(name.clone()) {
                    record(&c, &name, loc, &mut api.structs, &mut header_of_cached);
                }
            }
            TYPEDEF_DECL => {
                api.typedefs.push(Typedef { name: c.spelling(), loc, ty: ctype(c.typedef_underlying(), None) });
            }
            _ => {}
        }
    }

    defined_anywhere.extend(api.structs.iter().map(|s| s.name.clone()));
    // Struct tags the headers use but nobody defines (`struct fi_peer_av`):
    // incomplete types, placed where they are first used.
    for (tag, loc) in referenced_types(&api) {
        if !defined_anywhere.contains(&tag) {
            api.structs.push(Struct { name: tag, loc, is_union: false, fields: Vec::new(), complete: false });
        }
    }

    // Pass 2: evaluate object-like macros.
    let kinds = macros::evaluate(&umbrella, &input.clang_args, &raw_macros)?;
    let mut constants = BTreeSet::new();
    for m in &raw_macros {
        let kind = kinds.get(&m.name).cloned().unwrap_or(MacroKind::NotConstant("not evaluated".into()));
        if matches!(kind, MacroKind::Int { .. } | MacroKind::Str(_) | MacroKind::Float { .. }) {
            constants.insert(m.name.clone());
        }
        let (loc, pragma_deprecated, definition) = macro_locs[&m.name].clone();
        // A macro defined twice (in alternative #if branches) is kept once.
        if !api.macros.iter().any(|x| x.name == m.name) {
            api.macros.push(Macro { name: m.name.clone(), loc, kind, definition, pragma_deprecated });
        }
    }

    // Pass 3: inline function bodies (they refer to the constants found above).
    let locate = |c: &Cursor<'_>| {
        let l = c.location();
        Loc { header: by_path.get(&l.file).cloned().unwrap_or_else(|| l.file.display().to_string()), line: l.line }
    };
    let cx = body::BodyContext { constants: &constants, locate: &locate };
    for (c, loc) in inline_cursors {
        let body = body::translate(&c, &cx)
            .map_err(|u| Unsupported { what: format!("{} in `{}`", u.what, c.spelling()), ..u });
        api.functions.push(function_signature(&c, loc, Some(body)));
    }
    api.functions.sort_by(|a, b| a.loc.cmp(&b.loc).then(a.name.cmp(&b.name)));
    names::check_identifiers(&api)?;
    Ok(api)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The replacement list of a macro definition (its tokens after the name and,
/// for a function-like macro, the parameter list).
fn body_tokens(tokens: &[Token], function_like: bool) -> Vec<Token> {
    let mut rest = tokens.iter().skip(1);
    if function_like {
        for t in rest.by_ref() {
            if t.text == ")" {
                break;
            }
        }
    }
    rest.cloned().collect()
}

fn function_signature(c: &Cursor<'_>, loc: Loc, body: Option<Result<Block, Unsupported>>) -> Function {
    Function {
        name: c.spelling(),
        loc,
        ret: ctype(c.result_type(), None),
        params: c
            .arguments()
            .iter()
            .enumerate()
            .map(|(i, p)| Param {
                name: match p.spelling() {
                    s if s.is_empty() => format!("arg{i}"),
                    s => s,
                },
                ty: ctype(p.ty(), None),
            })
            .collect(),
        variadic: c.is_variadic(),
        body,
        deprecated: c.deprecation(),
    }
}

fn enumeration(c: &Cursor<'_>, loc: Loc, header_of: &mut dyn FnMut(&Path) -> Option<String>) -> Enum {
    let members = c
        .children()
        .into_iter()
        .filter(|m| m.kind() == ENUM_CONSTANT_DECL)
        .map(|m| {
            let l = m.location();
            let unsigned = matches!(c.enum_integer_type().canonical().kind(), T_UINT | T_ULONG | T_ULONG_LONG);
            Enumerator {
                name: m.spelling(),
                value: if unsigned { i128::from(m.enum_unsigned_value()) } else { i128::from(m.enum_value()) },
                loc: Loc { header: header_of(&l.file).unwrap_or_default(), line: l.line },
            }
        })
        .collect();
    let name = c.spelling();
    let anonymous = name.is_empty() || name.contains(' ') || c.is_anonymous();
    Enum { name: (!anonymous).then_some(name), loc, repr: ctype(c.enum_integer_type().canonical(), None), members }
}

/// Adds the record and, first, any anonymous records nested in it.
fn record(
    c: &Cursor<'_>,
    name: &str,
    loc: Loc,
    out: &mut Vec<Struct>,
    header_of: &mut dyn FnMut(&Path) -> Option<String>,
) {
    let mut fields = Vec::new();
    let mut pending_anon: Option<Cursor<'_>> = None;
    for k in c.children() {
        let l = k.location();
        let kloc = Loc { header: header_of(&l.file).unwrap_or_else(|| loc.header.clone()), line: l.line };
        match k.kind() {
            STRUCT_DECL | UNION_DECL if record_name(&k).is_none() => {
                // Either the type of the next field (`union {…} device;`) or an
                // anonymous member (`union {…};`, C11).
                if let Some(prev) = pending_anon.replace(k) {
                    anonymous_member(&prev, name, &mut fields, out, header_of, kloc.clone());
                }
            }
            FIELD_DECL => {
                let fname = k.spelling();
                let nested = format!("{name}__{fname}");
                if let Some(anon) = pending_anon.take() {
                    let is_type_of_field = matches!(k.ty().canonical().kind(), T_RECORD)
                        && record_name(&k.ty().canonical().declaration()).is_none();
                    if is_type_of_field {
                        record(&anon, &nested, kloc.clone(), out, header_of);
                    } else {
                        anonymous_member(&anon, name, &mut fields, out, header_of, kloc.clone());
                    }
                }
                fields.push(Field {
                    name: fname,
                    ty: ctype(k.ty(), Some(&nested)),
                    loc: kloc,
                    deprecated: k.deprecation(),
                });
            }
            _ => {}
        }
    }
    if let Some(anon) = pending_anon.take() {
        anonymous_member(&anon, name, &mut fields, out, header_of, loc.clone());
    }
    out.push(Struct { name: name.to_string(), loc, is_union: c.kind() == UNION_DECL, fields, complete: true });
}

/// A C11 anonymous member: recorded as a field with an empty name whose type is
/// the synthesized record `parent__anonN`.
fn anonymous_member(
    anon: &Cursor<'_>,
    parent: &str,
    fields: &mut Vec<Field>,
    out: &mut Vec<Struct>,
    header_of: &mut dyn FnMut(&Path) -> Option<String>,
    loc: Loc,
) {
    let n = fields.iter().filter(|f| f.name.is_empty()).count() + 1;
    let name = format!("{parent}__anon{n}");
    record(anon, &name, loc.clone(), out, header_of);
    let ty = if anon.kind() == UNION_DECL { CType::Union(name) } else { CType::Struct(name) };
    fields.push(Field { name: String::new(), ty, loc, deprecated: None });
}

/// Struct tags referenced by fields and signatures, each with its first use.
fn referenced_types(api: &Api) -> BTreeMap<String, Loc> {
    fn walk(t: &CType, loc: &Loc, out: &mut BTreeMap<String, Loc>) {
        match t {
            CType::Struct(s) => {
                out.entry(s.clone()).or_insert_with(|| loc.clone());
            }
            CType::Pointer { pointee, .. } => walk(pointee, loc, out),
            CType::Array { element, .. } => walk(element, loc, out),
            CType::Function { ret, params, .. } => {
                walk(ret, loc, out);
                params.iter().for_each(|p| walk(p, loc, out));
            }
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    for s in &api.structs {
        s.fields.iter().for_each(|f| walk(&f.ty, &f.loc, &mut out));
    }
    for f in &api.functions {
        walk(&f.ret, &f.loc, &mut out);
        f.params.iter().for_each(|p| walk(&p.ty, &f.loc, &mut out));
    }
    out
}
