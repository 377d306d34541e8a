//! `src/inline/<header>.rs`: the headers' `static inline` functions in Rust.
//!
//! Each body is translated from its C AST (`model::Stmt`): a call through an
//! ops table becomes a call through the same table in Rust, with no shim. Ops
//! members appended after their table first shipped are guarded like
//! `FI_CHECK_OP` (size and null check, `-FI_ENOSYS`), including where C
//! forgot the guard. Functions listed under `templates` come from
//! `templates/inline/NAME.rs` instead.

use std::cell::RefCell;
use std::path::Path;

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use super::rust_type::{ident, return_type, rust_type};
use crate::config::Config;
use crate::error::Error;
use crate::model::*;

/// Where an inline function's Rust code came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Ast,
    Template,
}

/// Emits the module for one header; returns its items and, per function, the origin.
pub fn emit_header(
    api: &Api,
    config: &Config,
    header: &str,
    templates: &Path,
) -> Result<(TokenStream, Vec<(String, Origin)>), Error> {
    let mut items = Vec::new();
    let mut origins = Vec::new();
    for f in api.functions.iter().filter(|f| f.is_inline() && f.loc.header == header) {
        if config.skip.contains_key(&f.name) {
            continue;
        }
        if config.templates.contains_key(&f.name) {
            items.push(template(f, templates)?);
            origins.push((f.name.clone(), Origin::Template));
            continue;
        }
        let body = match &f.body {
            Some(Ok(b)) => b,
            Some(Err(u)) => return Err(Error::Unsupported { location: u.loc.to_string(), what: u.what.clone() }),
            None => continue,
        };
        items.push(function(api, f, body, config)?);
        origins.push((f.name.clone(), Origin::Ast));
    }
    Ok((quote!(#(#items)*), origins))
}

fn signature(f: &Function, body: &Block) -> (TokenStream, TokenStream) {
    let params = f.params.iter().map(|p| {
        let n = ident(&p.name);
        let t = rust_type(&p.ty);
        let w = Writes::of(&p.name, body);
        let m = (w.assignments > 0 || w.address_taken).then(|| quote!(mut));
        quote!(#m #n: #t)
    });
    (quote!(#(#params),*), return_type(&f.ret))
}

fn deprecation(f: &Function, config: &Config) -> TokenStream {
    if let Some(note) = config.deprecated.get(&f.name) {
        quote!(#[deprecated(note = #note)])
    } else if let Some(message) = &f.deprecated {
        let note = if message.is_empty() { "deprecated in libfabric's headers" } else { message.as_str() };
        quote!(#[deprecated(note = #note)])
    } else {
        quote!()
    }
}

fn function(api: &Api, f: &Function, body: &Block, config: &Config) -> Result<TokenStream, Error> {
    let name = ident(&f.name);
    let (params, ret) = signature(f, body);
    let emitter = BodyEmitter { api, config, function: f, proven: RefCell::new(Vec::new()), body };
    let mut stmts = Vec::new();
    for (i, s) in body.iter().enumerate() {
        stmts.push(match s {
            // The final `return x;` becomes the tail expression.
            Stmt::Return(Some(e)) if i + 1 == body.len() => emitter.coerce(e, &f.ret)?,
            _ => emitter.stmt(s)?,
        });
    }
    let summary = format!(" libfabric's `{}` (`{}`), translated from its C body.", f.name, f.loc.header);
    let dispatch = describe(body);
    let deprecated = deprecation(f, config);
    Ok(quote! {
        #[doc = #summary]
        #[doc = ""]
        #[doc = #dispatch]
        #[doc = ""]
        #[doc = " # Safety"]
        #[doc = ""]
        #[doc = " The contract of the C function (see its libfabric man page): object"]
        #[doc = " pointers point to open libfabric objects, other pointers are valid for"]
        #[doc = " the accesses the call makes, for as long as it makes them."]
        #deprecated
        #[inline]
        pub unsafe fn #name(#params) #ret {
            #(#stmts)*
        }
    })
}

/// One line saying what the function calls.
fn describe(body: &Block) -> String {
    let mut calls = Vec::new();
    fn walk_expr(e: &Expr, calls: &mut Vec<String>) {
        match &e.kind {
            ExprKind::OpCall { table, member, args, .. } => {
                calls.push(format!("`{}->{member}`", spell(table)));
                args.iter().for_each(|a| walk_expr(a, calls));
            }
            ExprKind::Call { function, args } => {
                calls.push(format!("`{function}`"));
                args.iter().for_each(|a| walk_expr(a, calls));
            }
            ExprKind::Conditional { cond, then, otherwise } => {
                for x in [cond, then, otherwise] {
                    walk_expr(x, calls);
                }
            }
            ExprKind::Cast { operand: x, .. } | ExprKind::Paren(x) | ExprKind::Unary { operand: x, .. } => {
                walk_expr(x, calls)
            }
            ExprKind::Binary { lhs, rhs, .. } | ExprKind::Assign { lhs, rhs } => {
                walk_expr(lhs, calls);
                walk_expr(rhs, calls);
            }
            _ => {}
        }
    }
    fn walk(stmts: &Block, calls: &mut Vec<String>) {
        for s in stmts {
            match s {
                Stmt::Return(Some(e)) | Stmt::Expr(e) | Stmt::Local { init: Some(e), .. } => walk_expr(e, calls),
                Stmt::If { cond, then, otherwise } => {
                    walk_expr(cond, calls);
                    walk(then, calls);
                    walk(otherwise, calls);
                }
                _ => {}
            }
        }
    }
    walk(body, &mut calls);
    calls.dedup();
    if calls.is_empty() {
        " Computes its result without calling into libfabric.".to_string()
    } else {
        format!(" Calls {}.", calls.join(", then "))
    }
}

/// A C-like spelling of a table expression, for docs (`ep->msg`).
fn spell(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Var(n) => n.clone(),
        ExprKind::Member { base, arrow, field } => format!("{}{}{field}", spell(base), if *arrow { "->" } else { "." }),
        ExprKind::Paren(x) | ExprKind::Cast { operand: x, .. } => spell(x),
        ExprKind::ContainerOf { ptr, container, .. } => format!("({container} *){}", spell(ptr)),
        _ => "…".into(),
    }
}

struct BodyEmitter<'a> {
    api: &'a Api,
    config: &'a Config,
    function: &'a Function,
    /// `(table type, member)` pairs already checked by an enclosing FI_CHECK_OP.
    proven: RefCell<Vec<(String, String)>>,
    /// The whole body, to tell which locals are written after their declaration.
    body: &'a Block,
}

/// How a local or parameter is written in a body.
#[derive(Default)]
struct Writes {
    assignments: usize,
    address_taken: bool,
}

impl Writes {
    fn of(name: &str, body: &Block) -> Writes {
        let mut w = Writes::default();
        w.block(name, body);
        w
    }

    fn block(&mut self, name: &str, body: &Block) {
        for s in body {
            match s {
                Stmt::Return(Some(e)) | Stmt::Expr(e) | Stmt::Local { init: Some(e), .. } => self.expr(name, e),
                Stmt::If { cond, then, otherwise } => {
                    self.expr(name, cond);
                    self.block(name, then);
                    self.block(name, otherwise);
                }
                _ => {}
            }
        }
    }

    fn expr(&mut self, name: &str, e: &Expr) {
        /// True when the place `e` is (a field of) the variable `name`.
        fn is_place_of(e: &Expr, name: &str) -> bool {
            match &e.kind {
                ExprKind::Var(n) => n == name,
                ExprKind::Member { base, arrow: false, .. } | ExprKind::Paren(base) => is_place_of(base, name),
                _ => false,
            }
        }
        match &e.kind {
            ExprKind::Assign { lhs, rhs } => {
                if is_place_of(lhs, name) {
                    self.assignments += 1;
                }
                self.expr(name, lhs);
                self.expr(name, rhs);
            }
            ExprKind::AddrOf(x) => {
                self.address_taken |= is_place_of(x, name);
                self.expr(name, x);
            }
            ExprKind::Call { args, .. } => args.iter().for_each(|a| self.expr(name, a)),
            ExprKind::OpCall { table, args, .. } => {
                self.expr(name, table);
                args.iter().for_each(|a| self.expr(name, a));
            }
            ExprKind::Unary { operand: x, .. }
            | ExprKind::Cast { operand: x, .. }
            | ExprKind::Paren(x)
            | ExprKind::Deref(x)
            | ExprKind::Member { base: x, .. }
            | ExprKind::SizeOfExpr(x) => self.expr(name, x),
            ExprKind::ContainerOf { ptr: x, .. } | ExprKind::CheckOp { table: x, .. } => self.expr(name, x),
            ExprKind::Binary { lhs, rhs, .. } => {
                self.expr(name, lhs);
                self.expr(name, rhs);
            }
            ExprKind::Conditional { cond, then, otherwise } => {
                self.expr(name, cond);
                self.expr(name, then);
                self.expr(name, otherwise);
            }
            _ => {}
        }
    }
}

type R = Result<TokenStream, Error>;

impl BodyEmitter<'_> {
    fn unsupported(&self, what: &str) -> Error {
        Error::Unsupported {
            location: self.function.loc.to_string(),
            what: format!("{what} in `{}`", self.function.name),
        }
    }

    fn stmt(&self, s: &Stmt) -> R {
        Ok(match s {
            Stmt::Return(None) => quote!(return;),
            Stmt::Return(Some(e)) => {
                let v = self.coerce(e, &self.function.ret)?;
                quote!(return #v;)
            }
            Stmt::Local { name, ty, init } => {
                let n = ident(name);
                let t = rust_type(ty);
                let writes = Writes::of(name, self.body);
                let aggregate = matches!(ty, CType::Struct(_) | CType::Union(_) | CType::Array { .. });
                match init {
                    Some(e) => {
                        let v = self.coerce(e, ty)?;
                        let m = (writes.assignments > 0 || writes.address_taken).then(|| quote!(mut));
                        quote!(let #m #n: #t = #v;)
                    }
                    // C leaves it uninitialised. A struct filled field by field, or
                    // a variable whose address is passed out, starts zeroed (one
                    // store, and defined); a scalar is declared and Rust checks
                    // that it is assigned before use.
                    None if aggregate || writes.address_taken => quote!(let mut #n: #t = ::core::mem::zeroed();),
                    None => {
                        let m = (writes.assignments > 1).then(|| quote!(mut));
                        quote!(let #m #n: #t;)
                    }
                }
            }
            Stmt::If { cond, then, otherwise } => {
                let c = self.cond(cond)?;
                let proof = self.proof_of(cond);
                let t = self.with_proof(proof, || then.iter().map(|s| self.stmt(s)).collect::<Result<Vec<_>, _>>())?;
                let o = otherwise.iter().map(|s| self.stmt(s)).collect::<Result<Vec<_>, _>>()?;
                if o.is_empty() {
                    quote!(if #c { #(#t)* })
                } else {
                    quote!(if #c { #(#t)* } else { #(#o)* })
                }
            }
            Stmt::Expr(Expr { kind: ExprKind::Assign { lhs, rhs }, .. }) => {
                let p = self.place(lhs)?;
                let v = self.coerce(rhs, &lhs.ty)?;
                quote!(#p = #v;)
            }
            Stmt::Expr(e) => {
                let v = self.value(e)?;
                quote!(#v;)
            }
        })
    }

    /// The `(table, member)` that a condition proves present, if it is `FI_CHECK_OP`.
    fn proof_of(&self, cond: &Expr) -> Option<(String, String)> {
        match &cond.kind {
            ExprKind::CheckOp { table_type, member, .. } => Some((table_type.clone(), member.clone())),
            ExprKind::Paren(x) | ExprKind::Cast { operand: x, .. } => self.proof_of(x),
            _ => None,
        }
    }

    fn with_proof<T>(&self, proof: Option<(String, String)>, f: impl FnOnce() -> T) -> T {
        let pushed = proof.map(|p| self.proven.borrow_mut().push(p)).is_some();
        let out = f();
        if pushed {
            self.proven.borrow_mut().pop();
        }
        out
    }

    /// `e` as the Rust type of `to`. C types that are the same type in C can be
    /// different Rust types (`long` is `c_long`, `ssize_t` is `isize`), so every
    /// place a value flows into a declared type converts when they differ.
    fn coerce(&self, e: &Expr, to: &CType) -> R {
        let v = self.value(e)?;
        let target = rust_type(to);
        if rust_type(&e.ty).to_string() == target.to_string() || matches!(e.kind, ExprKind::Null | ExprKind::Int(_)) {
            Ok(v)
        } else {
            Ok(quote!((#v as #target)))
        }
    }

    /// Arguments converted to the parameter types of the callee, where known.
    fn args(&self, args: &[Expr], params: Option<Vec<CType>>) -> Result<Vec<TokenStream>, Error> {
        args.iter()
            .enumerate()
            .map(|(i, a)| match params.as_ref().and_then(|p| p.get(i)) {
                Some(t) => self.coerce(a, t),
                None => self.value(a),
            })
            .collect()
    }

    /// The parameter types of a header function.
    fn function_params(&self, name: &str) -> Option<Vec<CType>> {
        let f = self.api.functions.iter().find(|f| f.name == name)?;
        Some(f.params.iter().map(|p| p.ty.clone()).collect())
    }

    /// The parameter types of an ops-table member.
    fn member_params(&self, table: &str, member: &str) -> Option<Vec<CType>> {
        let s = self.api.structs.iter().find(|s| s.name == table)?;
        let f = s.fields.iter().find(|f| f.name == member)?;
        match &f.ty {
            CType::Pointer { pointee, .. } => match &**pointee {
                CType::Function { params, .. } => Some(params.clone()),
                _ => None,
            },
            _ => None,
        }
    }

    /// An lvalue.
    fn place(&self, e: &Expr) -> R {
        match &e.kind {
            ExprKind::Var(_) | ExprKind::Member { .. } => self.value(e),
            ExprKind::Deref(p) => {
                let p = self.value(p)?;
                Ok(quote!((*#p)))
            }
            ExprKind::Paren(x) => self.place(x),
            _ => Err(self.unsupported("an assignment to a computed place")),
        }
    }

    fn is_bool(e: &Expr) -> bool {
        match &e.kind {
            ExprKind::Binary { op, .. } => op.is_boolean(),
            ExprKind::Unary { op: UnaryOp::Not, .. } | ExprKind::CheckOp { .. } => true,
            ExprKind::Paren(x) => Self::is_bool(x),
            _ => false,
        }
    }

    /// A Rust `bool` with C's truth value of `e`.
    fn cond(&self, e: &Expr) -> R {
        Ok(match &e.kind {
            ExprKind::Paren(x) => self.cond(x)?,
            ExprKind::Unary { op: UnaryOp::Not, operand } if !Self::is_bool(operand) && !operand.ty.is_pointer() => {
                let v = self.value(operand)?;
                quote!((#v == 0))
            }
            ExprKind::Unary { op: UnaryOp::Not, operand } => {
                let c = self.cond(operand)?;
                quote!(!#c)
            }
            ExprKind::Binary { op: op @ (BinaryOp::And | BinaryOp::Or), lhs, rhs } => {
                let (l, r) = (self.cond(lhs)?, self.cond(rhs)?);
                if *op == BinaryOp::And {
                    quote!((#l && #r))
                } else {
                    quote!((#l || #r))
                }
            }
            ExprKind::Binary { op, lhs, rhs } if op.is_boolean() => {
                let (l, r) = (self.value(lhs)?, self.value(rhs)?);
                let o = match op {
                    BinaryOp::Eq => quote!(==),
                    BinaryOp::Ne => quote!(!=),
                    BinaryOp::Lt => quote!(<),
                    BinaryOp::Le => quote!(<=),
                    BinaryOp::Gt => quote!(>),
                    _ => quote!(>=),
                };
                quote!((#l #o #r))
            }
            ExprKind::CheckOp { table, table_type, member } => {
                let t = self.value(table)?;
                let (tt, m) = (ident(table_type), ident(member));
                quote!(has_op!(#t, #tt, #m))
            }
            _ if e.ty.is_pointer() => {
                let v = self.value(e)?;
                quote!(!(#v).is_null())
            }
            _ => {
                let v = self.value(e)?;
                quote!((#v != 0))
            }
        })
    }

    /// A Rust expression of the Rust type of `e`'s C type.
    fn value(&self, e: &Expr) -> R {
        if Self::is_bool(e) {
            let c = self.cond(e)?;
            let t = rust_type(&e.ty);
            return Ok(quote!((#c as #t)));
        }
        Ok(match &e.kind {
            ExprKind::Var(n) => {
                let id = ident(n);
                quote!(#id)
            }
            ExprKind::Const(n) => {
                let id = ident(n);
                let t = rust_type(&e.ty);
                quote!((#id as #t))
            }
            ExprKind::Int(v) => {
                let lit = Literal::u128_unsuffixed(v.unsigned_abs());
                if *v < 0 {
                    quote!(-#lit)
                } else {
                    quote!(#lit)
                }
            }
            ExprKind::Str(s) => {
                let c = std::ffi::CString::new(s.as_str()).map_err(|_| self.unsupported("a string with NUL"))?;
                let lit = Literal::c_string(&c);
                quote!(#lit.as_ptr())
            }
            ExprKind::Null => quote!(::core::ptr::null_mut()),
            ExprKind::Call { function, args } if function == "memset" => {
                let [dst, byte, len] = args.as_slice() else { return Err(self.unsupported("memset arity")) };
                let (d, b, l) = (self.value(dst)?, self.value(byte)?, self.value(len)?);
                quote!(::core::ptr::write_bytes(#d as *mut u8, #b as u8, #l))
            }
            ExprKind::Call { function, args } => {
                let f = ident(function);
                let a = self.args(args, self.function_params(function))?;
                quote!(#f(#(#a),*))
            }
            ExprKind::OpCall { table, table_type, member, args } => self.op_call(e, table, table_type, member, args)?,
            ExprKind::Member { base, arrow, field } => {
                let b = self.value(base)?;
                let f = ident(field);
                if *arrow {
                    quote!((*#b).#f)
                } else {
                    quote!(#b.#f)
                }
            }
            ExprKind::Unary { op: UnaryOp::Neg, operand } => {
                let v = self.value(operand)?;
                quote!((-#v))
            }
            ExprKind::Unary { op: _, operand } => {
                let v = self.value(operand)?;
                quote!((!#v))
            }
            ExprKind::Binary { op, lhs, rhs } => {
                let (l, r) = (self.value(lhs)?, self.value(rhs)?);
                match op {
                    BinaryOp::Add => quote!((#l + #r)),
                    BinaryOp::Sub => quote!((#l - #r)),
                    BinaryOp::Mul => quote!((#l * #r)),
                    BinaryOp::Div => quote!((#l / #r)),
                    BinaryOp::Rem => quote!((#l % #r)),
                    BinaryOp::BitAnd => quote!((#l & #r)),
                    BinaryOp::BitOr => quote!((#l | #r)),
                    BinaryOp::BitXor => quote!((#l ^ #r)),
                    // C leaves out-of-range shifts undefined; Rust's wrapping form is defined.
                    BinaryOp::Shl => quote!((#l).wrapping_shl((#r) as u32)),
                    BinaryOp::Shr => quote!((#l).wrapping_shr((#r) as u32)),
                    _ => return Err(self.unsupported("a comparison used as a number")),
                }
            }
            ExprKind::Assign { .. } => return Err(self.unsupported("an assignment used as a value")),
            ExprKind::Conditional { cond, then, otherwise } => {
                let c = self.cond(cond)?;
                let t = self.with_proof(self.proof_of(cond), || self.coerce(then, &e.ty))?;
                let o = self.coerce(otherwise, &e.ty)?;
                quote!((if #c { #t } else { #o }))
            }
            ExprKind::Cast { operand, .. } => self.cast(operand, &e.ty)?,
            ExprKind::AddrOf(x) => {
                let p = self.place(x)?;
                let is_const = matches!(&e.ty, CType::Pointer { is_const: true, .. });
                if is_const {
                    quote!(::core::ptr::addr_of!(#p))
                } else {
                    quote!(::core::ptr::addr_of_mut!(#p))
                }
            }
            ExprKind::Deref(x) => {
                let v = self.value(x)?;
                quote!((*#v))
            }
            ExprKind::SizeOfExpr(x) => {
                let p = self.place(x)?;
                quote!(::core::mem::size_of_val(&#p))
            }
            ExprKind::SizeOfType(t) => {
                let t = rust_type(t);
                quote!(::core::mem::size_of::<#t>())
            }
            ExprKind::ContainerOf { ptr, container, field } => {
                let p = self.value(ptr)?;
                let (c, f) = (ident(container), ident(field));
                quote!(container_of!(#p, #c, #f))
            }
            ExprKind::CheckOp { .. } => unreachable!("CheckOp is boolean"),
            // Every compound expression is emitted in parentheses already.
            ExprKind::Paren(x) => self.value(x)?,
        })
    }

    fn cast(&self, operand: &Expr, to: &CType) -> R {
        let target = rust_type(to);
        if let ExprKind::Null = operand.kind {
            return Ok(if matches!(to, CType::Pointer { is_const: true, .. }) {
                quote!(::core::ptr::null())
            } else {
                quote!(::core::ptr::null_mut())
            });
        }
        let v = self.value(operand)?;
        if rust_type(&operand.ty).to_string() == target.to_string() {
            return Ok(v);
        }
        Ok(quote!((#v as #target)))
    }

    /// A call through an ops table, guarded when the member (or the table
    /// pointer) was appended after the first release.
    fn op_call(&self, call: &Expr, table: &Expr, table_type: &str, member: &str, args: &[Expr]) -> R {
        let t = self.value(table)?;
        let m = ident(member);
        let a = self.args(args, self.member_params(table_type, member))?;
        let invoke = quote!(((*#t).#m.unwrap_unchecked())(#(#a),*));
        let appended_table = match &table.kind {
            ExprKind::Member { base, field, .. } => {
                base.ty.pointee_struct().is_some_and(|object| self.config.is_appended(object, field))
            }
            _ => false,
        };
        let needs_guard = self.config.is_appended(table_type, member) || appended_table;
        let proven = self.proven.borrow().iter().any(|(tt, mm)| tt == table_type && mm == member);
        if !needs_guard || proven {
            return Ok(invoke);
        }
        if !matches!(&call.ty, CType::Builtin(_) | CType::Typedef(_)) {
            return Err(self.unsupported("a guarded ops call that does not return an integer"));
        }
        let ret = rust_type(&call.ty);
        let tt = ident(table_type);
        Ok(quote!((if has_op!(#t, #tt, #m) { #invoke } else { -(FI_ENOSYS as #ret) })))
    }
}

/// A function from `templates/inline/NAME.rs`, checked against the C signature.
fn template(f: &Function, templates: &Path) -> Result<TokenStream, Error> {
    let file = templates.join("inline").join(format!("{}.rs", f.name));
    let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
    let parsed: syn::ItemFn =
        syn::parse_str(&text).map_err(|e| Error::Template { file: file.clone(), message: e.to_string() })?;
    let problem = if parsed.sig.ident != f.name {
        Some(format!("defines `{}`, expected `{}`", parsed.sig.ident, f.name))
    } else if parsed.sig.inputs.len() != f.params.len() {
        Some(format!("takes {} arguments, the C function {}", parsed.sig.inputs.len(), f.params.len()))
    } else {
        None
    };
    if let Some(message) = problem {
        return Err(Error::Template { file, message });
    }
    Ok(quote!(#parsed))
}
