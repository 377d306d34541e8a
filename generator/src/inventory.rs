//! The inventory: every item of the headers and what it became.
//!
//! It is written to `generated/INVENTORY.md`, printed per header by
//! `cargo xtask coverage`, and snapshotted, so that a libfabric update shows
//! up as a reviewable list of added, removed and changed items.

use std::collections::BTreeSet;
use std::fmt::Write;

use crate::config::Config;
use crate::emit::enums::{enum_members, find_enum, flag_members};
use crate::emit::inline::Origin;
use crate::model::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Emitted; the text says as what.
    Emitted(String),
    /// Deliberately not emitted; the reason comes from the configuration.
    Skipped(String),
    /// Neither emitted nor listed as skipped: a gap to close.
    Unhandled(String),
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub header: String,
    pub kind: &'static str,
    pub name: String,
    pub outcome: Outcome,
}

/// Builds the inventory. `origins` says where each inline function came from.
pub fn inventory(api: &Api, config: &Config, origins: &[(String, Origin)]) -> Vec<Entry> {
    let mut out = Vec::new();
    let skip = |name: &str| {
        config
            .implemented
            .get(name)
            .map(|w| Outcome::Emitted(w.clone()))
            .or_else(|| config.skip.get(name).map(|r| Outcome::Skipped(r.clone())))
    };

    for f in &api.functions {
        let outcome = skip(&f.name).unwrap_or_else(|| {
            if !f.is_inline() {
                Outcome::Emitted(format!("raw::{} (exported function)", f.name))
            } else {
                match origins.iter().find(|(n, _)| n == &f.name) {
                    Some((_, Origin::Ast)) => Outcome::Emitted(format!("inline::{} (from the C body)", f.name)),
                    Some((_, Origin::Template)) => {
                        Outcome::Emitted(format!("inline::{} (templates/inline/{}.rs)", f.name, f.name))
                    }
                    None => Outcome::Unhandled("inline function not emitted".into()),
                }
            }
        });
        let kind = if f.is_inline() { "static inline" } else { "function" };
        out.push(Entry { header: f.loc.header.clone(), kind, name: f.name.clone(), outcome });
    }

    let typed_members: Vec<(String, String)> = config
        .enums
        .iter()
        .flat_map(|c| enum_members(api, config, c).into_iter().map(move |m| (m.name, c.name.clone())))
        .chain(
            config
                .flags
                .iter()
                .flat_map(|f| flag_members(api, config, f).into_iter().map(move |m| (m.name, f.name.clone()))),
        )
        .collect();
    let typed_in = |name: &str| -> String {
        let homes: BTreeSet<&str> = typed_members.iter().filter(|(m, _)| m == name).map(|(_, t)| t.as_str()).collect();
        if homes.is_empty() {
            String::new()
        } else {
            format!("; in {}", homes.into_iter().collect::<Vec<_>>().join(", "))
        }
    };

    for m in &api.macros {
        let outcome = skip(&m.name).unwrap_or_else(|| match &m.kind {
            MacroKind::Int { value, ty } => {
                Outcome::Emitted(format!("consts::{}: {ty} = {value}{}", m.name, typed_in(&m.name)))
            }
            MacroKind::Float { value, ty } => Outcome::Emitted(format!("consts::{}: {ty} = {value}", m.name)),
            MacroKind::Str(s) => Outcome::Emitted(format!("consts::{}: &CStr = {s:?}", m.name)),
            MacroKind::FunctionLike => Outcome::Unhandled("function-like macro".into()),
            MacroKind::NotConstant(why) => Outcome::Unhandled(format!("not a constant: {why}")),
        });
        out.push(Entry { header: m.loc.header.clone(), kind: "#define", name: m.name.clone(), outcome });
    }

    for e in &api.enums {
        let typed = config.enums.iter().find(|c| find_enum(api, c).is_some_and(|f| std::ptr::eq(f, e)));
        let key = e.name.clone().unwrap_or_else(|| e.members.first().map(|m| m.name.clone()).unwrap_or_default());
        let outcome = skip(&key).unwrap_or_else(|| match typed {
            Some(c) => Outcome::Emitted(format!("enums::{} ({} members)", c.name, e.members.len())),
            None => Outcome::Unhandled("no [[enum]] entry: members are plain constants only".into()),
        });
        out.push(Entry { header: e.loc.header.clone(), kind: "enum", name: e.display_name(), outcome });
        for m in &e.members {
            let outcome = skip(&m.name)
                .unwrap_or_else(|| Outcome::Emitted(format!("consts::{} = {}{}", m.name, m.value, typed_in(&m.name))));
            out.push(Entry { header: m.loc.header.clone(), kind: "enumerator", name: m.name.clone(), outcome });
        }
    }

    for s in &api.structs {
        let keyword = if s.is_union { "union" } else { "struct" };
        let outcome = skip(&s.name).unwrap_or_else(|| {
            if !s.complete {
                match config.opaque.get(&s.name) {
                    Some(reason) => Outcome::Emitted(format!("raw::{} (opaque: {reason})", s.name)),
                    None => Outcome::Unhandled("used but never defined; add it to [opaque]".into()),
                }
            } else {
                let what = if s.is_ops_table() {
                    "ops table"
                } else if s.is_fid() {
                    "object"
                } else {
                    keyword
                };
                let accessors =
                    if config.accessors.iter().any(|a| a.name == s.name) { ", typed accessors" } else { "" };
                Outcome::Emitted(format!("raw::{} ({what}, {} fields{accessors})", s.name, s.fields.len()))
            }
        });
        out.push(Entry { header: s.loc.header.clone(), kind: keyword, name: s.name.clone(), outcome });
    }

    for t in &api.typedefs {
        let outcome = skip(&t.name).unwrap_or_else(|| Outcome::Emitted(format!("raw::{} = {}", t.name, t.ty)));
        out.push(Entry { header: t.loc.header.clone(), kind: "typedef", name: t.name.clone(), outcome });
    }

    let order = |h: &str| config.headers.iter().position(|x| x == h).unwrap_or(usize::MAX);
    out.sort_by(|a, b| order(&a.header).cmp(&order(&b.header)).then(a.kind.cmp(b.kind)).then(a.name.cmp(&b.name)));
    out
}

/// `generated/INVENTORY.md`.
pub fn markdown(entries: &[Entry]) -> String {
    let mut s = String::from(
        "<!-- @generated by `cargo xtask regen`. DO NOT EDIT. -->\n\
         # Inventory of the libfabric headers\n\n\
         Every declaration the generator found, and what it became. `cargo xtask coverage`\n\
         prints the counts per header.\n",
    );
    let mut header = "";
    for e in entries {
        if e.header != header {
            header = &e.header;
            let _ = write!(s, "\n## {header}\n\n| kind | name | became |\n|---|---|---|\n");
        }
        let became = match &e.outcome {
            Outcome::Emitted(w) => format!("`{w}`"),
            Outcome::Skipped(r) => format!("skipped: {r}"),
            Outcome::Unhandled(r) => format!("**UNHANDLED**: {r}"),
        };
        let _ = writeln!(s, "| {} | `{}` | {} |", e.kind, e.name.replace('|', "\\|"), became.replace('|', "\\|"));
    }
    s
}

/// One line per header: found, emitted, skipped (and unhandled, if any).
pub fn coverage(entries: &[Entry], headers: &[String]) -> String {
    let mut s = format!("{:<28} {:>6} {:>8} {:>8} {:>10}\n", "header", "found", "emitted", "skipped", "unhandled");
    let mut totals = [0usize; 4];
    for h in headers {
        let of: Vec<&Entry> = entries.iter().filter(|e| &e.header == h).collect();
        let count = |f: fn(&Outcome) -> bool| of.iter().filter(|e| f(&e.outcome)).count();
        let row = [
            of.len(),
            count(|o| matches!(o, Outcome::Emitted(_))),
            count(|o| matches!(o, Outcome::Skipped(_))),
            count(|o| matches!(o, Outcome::Unhandled(_))),
        ];
        for (t, r) in totals.iter_mut().zip(row) {
            *t += r;
        }
        let _ = writeln!(s, "{h:<28} {:>6} {:>8} {:>8} {:>10}", row[0], row[1], row[2], row[3]);
    }
    let _ = writeln!(s, "{:<28} {:>6} {:>8} {:>8} {:>10}", "total", totals[0], totals[1], totals[2], totals[3]);
    let mut skipped: Vec<&Entry> = entries.iter().filter(|e| !matches!(e.outcome, Outcome::Emitted(_))).collect();
    skipped.sort_by(|a, b| a.header.cmp(&b.header).then(a.name.cmp(&b.name)));
    if !skipped.is_empty() {
        s.push_str("\nnot emitted:\n");
        for e in skipped {
            let (tag, why) = match &e.outcome {
                Outcome::Skipped(r) => ("skipped", r),
                Outcome::Unhandled(r) => ("UNHANDLED", r),
                Outcome::Emitted(_) => unreachable!(),
            };
            let _ = writeln!(s, "  {}: {} {} — {tag}: {why}", e.header, e.kind, e.name);
        }
    }
    s
}

/// Configuration entries that name nothing in these headers: right for a name
/// only another libfabric version has, a typo otherwise (which would, say,
/// silently drop an `FI_CHECK_OP` guard), so `cargo xtask coverage` lists them.
pub fn unmatched_config(api: &Api, config: &Config) -> Vec<String> {
    let mut names: BTreeSet<&str> = BTreeSet::new();
    names.extend(api.functions.iter().map(|f| f.name.as_str()));
    names.extend(api.macros.iter().map(|m| m.name.as_str()));
    names.extend(api.structs.iter().map(|s| s.name.as_str()));
    names.extend(api.typedefs.iter().map(|t| t.name.as_str()));
    for e in &api.enums {
        names.extend(e.name.as_deref());
        names.extend(e.members.iter().map(|m| m.name.as_str()));
    }
    let field_exists = |s: &str, f: &str| {
        api.structs.iter().any(|x| {
            x.name == s
                && x.fields.iter().any(|g| {
                    g.name == f
                        || (g.name.is_empty()
                            && matches!(&g.ty, CType::Union(n) | CType::Struct(n)
                                if api.structs.iter().any(|u| &u.name == n && u.fields.iter().any(|h| h.name == f))))
                })
        })
    };
    let mut out = Vec::new();
    for key in config.ops.appended.keys() {
        let ok = key.split_once('.').is_some_and(|(s, f)| field_exists(s, f));
        if !ok {
            out.push(format!("[ops.appended] {key}"));
        }
    }
    for (table, map) in [
        ("skip", &config.skip),
        ("deprecated", &config.deprecated),
        ("implemented", &config.implemented),
        ("opaque", &config.opaque),
        ("templates", &config.templates),
    ] {
        out.extend(map.keys().filter(|k| !names.contains(k.as_str())).map(|k| format!("[{table}] {k}")));
    }
    for e in &config.enums {
        if find_enum(api, e).is_none() {
            out.push(format!("[[enum]] {} ({})", e.name, e.c.as_deref().or(e.first.as_deref()).unwrap_or("?")));
        }
        out.extend(
            e.extra.iter().filter(|x| !names.contains(x.as_str())).map(|x| format!("[[enum]] {} extra {x}", e.name)),
        );
    }
    for f in &config.flags {
        out.extend(
            f.members
                .iter()
                .filter(|m| !names.contains(m.as_str()))
                .map(|m| format!("[[flags]] {} member {m}", f.name)),
        );
    }
    for a in &config.accessors {
        if !names.contains(a.name.as_str()) {
            out.push(format!("[[accessors]] {}", a.name));
            continue;
        }
        for field in a.typed.keys().chain(a.skip.keys()) {
            if !field_exists(&a.name, field) {
                out.push(format!("[[accessors]] {}.{field}", a.name));
            }
        }
    }
    out
}
