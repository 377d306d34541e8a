//! `static inline` function bodies → `model::Stmt`/`Expr`.
//!
//! libfabric's inline functions use a small subset of C: returns, locals,
//! `if`, assignments, calls (direct or through an ops table), member access,
//! casts and a few operators, plus the macros `FI_CHECK_OP` and
//! `container_of`. This file reads exactly that subset from the AST and
//! reports anything else as `Unsupported` with its location.
//!
//! libclang 14 does not expose operator kinds, so operators are read from the
//! tokens of the expression; macro constants are recognised the same way (an
//! expression spelled as one macro name becomes `Const(name)`).

use std::collections::BTreeSet;

use super::clang::*;
use super::types::ctype;
use crate::model::*;

pub struct BodyContext<'a> {
    /// Object-like macros with a constant value.
    pub constants: &'a BTreeSet<String>,
    /// Maps a libclang location to a `Loc` (header-relative).
    pub locate: &'a dyn Fn(&Cursor<'_>) -> Loc,
}

/// The context of one function: the shared context and the function's tokens.
///
/// A cursor inside a macro expansion has an extent that starts in the macro's
/// definition, so its tokens are taken from the function's own tokens by the
/// expansion offsets of the cursor instead of tokenizing its extent.
struct Cx<'a> {
    constants: &'a BTreeSet<String>,
    locate: &'a dyn Fn(&Cursor<'_>) -> Loc,
    tokens: Vec<Token>,
}

impl Cx<'_> {
    fn tokens(&self, c: &Cursor<'_>) -> Vec<Token> {
        let (start, end) = c.offsets();
        self.tokens.iter().filter(|t| t.offset >= start && t.offset < end).cloned().collect()
    }
}

type Result<T> = std::result::Result<T, Unsupported>;

pub fn translate(function: &Cursor<'_>, shared: &BodyContext<'_>) -> Result<Block> {
    let cx = &Cx { constants: shared.constants, locate: shared.locate, tokens: function.tokens() };
    let body = function
        .children()
        .into_iter()
        .find(|c| c.kind() == COMPOUND_STMT)
        .ok_or_else(|| unsupported(function, cx, "a function without a body"))?;
    block(&body, cx)
}

fn unsupported(c: &Cursor<'_>, cx: &Cx<'_>, what: impl Into<String>) -> Unsupported {
    Unsupported { loc: (cx.locate)(c), what: what.into() }
}

fn block(c: &Cursor<'_>, cx: &Cx<'_>) -> Result<Block> {
    if c.kind() == COMPOUND_STMT {
        let mut out = Vec::new();
        for s in c.children() {
            out.extend(stmt(&s, cx)?);
        }
        Ok(out)
    } else {
        stmt(c, cx)
    }
}

fn stmt(c: &Cursor<'_>, cx: &Cx<'_>) -> Result<Vec<Stmt>> {
    let children = c.children();
    Ok(match c.kind() {
        RETURN_STMT => vec![Stmt::Return(match children.first() {
            Some(e) => Some(expr(e, cx)?),
            None => None,
        })],
        DECL_STMT => {
            let mut out = Vec::new();
            for v in &children {
                if v.kind() != VAR_DECL {
                    return Err(unsupported(v, cx, "a declaration other than a local variable"));
                }
                let init = match v.children().into_iter().rfind(|e| e.is_expression()) {
                    Some(e) => Some(expr(&e, cx)?),
                    None => None,
                };
                out.push(Stmt::Local { name: v.spelling(), ty: ctype(v.ty(), None), init });
            }
            out
        }
        IF_STMT => {
            let cond = children.first().ok_or_else(|| unsupported(c, cx, "an `if` without condition"))?;
            let then = children.get(1).ok_or_else(|| unsupported(c, cx, "an `if` without body"))?;
            vec![Stmt::If {
                cond: expr(cond, cx)?,
                then: block(then, cx)?,
                otherwise: match children.get(2) {
                    Some(e) => block(e, cx)?,
                    None => Vec::new(),
                },
            }]
        }
        COMPOUND_STMT => block(c, cx)?,
        _ if c.is_expression() => vec![Stmt::Expr(expr(c, cx)?)],
        _ => return Err(unsupported(c, cx, format!("unsupported statement `{}`", c.kind_name()))),
    })
}

fn boxed(c: &Cursor<'_>, cx: &Cx<'_>) -> Result<Box<Expr>> {
    expr(c, cx).map(Box::new)
}

fn expr(c: &Cursor<'_>, cx: &Cx<'_>) -> Result<Expr> {
    let ty = ctype(c.ty(), None);
    let children: Vec<_> = c.children().into_iter().filter(|k| k.is_expression()).collect();

    // Implicit conversions come first, so that a macro spelled inside one keeps
    // the conversion around it.
    if c.kind() == UNEXPOSED_EXPR {
        let [inner] = children.as_slice() else {
            return Err(unsupported(c, cx, "an unexposed expression that is not a conversion"));
        };
        let operand = expr(inner, cx)?;
        let same = c.ty().canonical().spelling() == inner.ty().canonical().spelling();
        // Array and function decay produce the pointer the operand already is in Rust.
        return Ok(if same || matches!(operand.kind, ExprKind::Str(_)) {
            operand
        } else {
            Expr { ty, kind: ExprKind::Cast { operand: Box::new(operand), explicit: false } }
        });
    }

    let tokens = cx.tokens(c);
    if let Some(first) = tokens.first() {
        if tokens.len() == 1 && first.is_identifier {
            if first.text == "NULL" {
                return Ok(Expr { ty, kind: ExprKind::Null });
            }
            if cx.constants.contains(&first.text) && c.kind() != DECL_REF_EXPR {
                return Ok(Expr { ty, kind: ExprKind::Const(first.text.clone()) });
            }
        }
        if first.text == "FI_CHECK_OP" && is_one_invocation(&tokens) {
            return check_op(c, &tokens, cx).map(|kind| Expr { ty, kind });
        }
        if first.text == "container_of" && is_one_invocation(&tokens) {
            return container_of(c, &tokens, cx).map(|kind| Expr { ty, kind });
        }
    }

    let kind = match c.kind() {
        INTEGER_LITERAL => match c.evaluate() {
            Some(Value::Int(v)) => ExprKind::Int(v),
            _ => return Err(unsupported(c, cx, "an integer literal clang cannot evaluate")),
        },
        STRING_LITERAL => {
            let s = c.spelling();
            let inner = s.strip_prefix('"').and_then(|s| s.strip_suffix('"'));
            match inner {
                Some(i) if !i.contains('\\') => ExprKind::Str(i.to_string()),
                _ => return Err(unsupported(c, cx, "a string literal with escapes")),
            }
        }
        PAREN_EXPR => ExprKind::Paren(boxed(one(c, &children, cx)?, cx)?),
        DECL_REF_EXPR => {
            let target = c.referenced().ok_or_else(|| unsupported(c, cx, "an unresolved name"))?;
            match target.kind() {
                ENUM_CONSTANT_DECL => ExprKind::Const(target.spelling()),
                PARM_DECL | VAR_DECL => ExprKind::Var(target.spelling()),
                _ => return Err(unsupported(c, cx, format!("a reference to a `{}`", target.kind_name()))),
            }
        }
        MEMBER_REF_EXPR => {
            let base = one(c, &children, cx)?;
            ExprKind::Member {
                base: boxed(base, cx)?,
                arrow: base.ty().canonical().kind() == T_POINTER,
                field: c.spelling(),
            }
        }
        CALL_EXPR => call(c, &children, cx)?,
        UNARY_OPERATOR => {
            let operand = boxed(one(c, &children, cx)?, cx)?;
            match tokens.first().map(|t| t.text.as_str()) {
                Some("-") => ExprKind::Unary { op: UnaryOp::Neg, operand },
                Some("!") => ExprKind::Unary { op: UnaryOp::Not, operand },
                Some("~") => ExprKind::Unary { op: UnaryOp::BitNot, operand },
                Some("&") => ExprKind::AddrOf(operand),
                Some("*") => ExprKind::Deref(operand),
                Some("+") => return Ok(*operand),
                other => return Err(unsupported(c, cx, format!("unary operator {other:?}"))),
            }
        }
        BINARY_OPERATOR => {
            let [l, r] = children.as_slice() else {
                return Err(unsupported(c, cx, "a binary operator without two operands"));
            };
            let end_of_lhs = l.offsets().1;
            let op = tokens
                .iter()
                .find(|t| t.offset >= end_of_lhs)
                .map(|t| t.text.clone())
                .ok_or_else(|| unsupported(c, cx, "a binary operator whose token is hidden in a macro"))?;
            if op == "=" {
                ExprKind::Assign { lhs: boxed(l, cx)?, rhs: boxed(r, cx)? }
            } else {
                let op = BinaryOp::from_c(&op).ok_or_else(|| unsupported(c, cx, format!("operator `{op}`")))?;
                ExprKind::Binary { op, lhs: boxed(l, cx)?, rhs: boxed(r, cx)? }
            }
        }
        CONDITIONAL_OPERATOR => {
            let [k, t, f] = children.as_slice() else {
                return Err(unsupported(c, cx, "a conditional operator without three operands"));
            };
            ExprKind::Conditional { cond: boxed(k, cx)?, then: boxed(t, cx)?, otherwise: boxed(f, cx)? }
        }
        C_STYLE_CAST_EXPR => ExprKind::Cast { operand: boxed(one(c, &children, cx)?, cx)?, explicit: true },
        UNARY_EXPR if tokens.first().is_some_and(|t| t.text == "sizeof") => match children.first() {
            Some(e) => ExprKind::SizeOfExpr(boxed(e, cx)?),
            None => {
                let tref = c.children().into_iter().find(|k| k.kind() == TYPE_REF);
                let t = tref.ok_or_else(|| unsupported(c, cx, "sizeof of an unnamed type"))?;
                ExprKind::SizeOfType(ctype(t.ty(), None))
            }
        },
        _ => {
            return Err(unsupported(
                c,
                cx,
                format!("unsupported expression `{}` (`{}`)", c.kind_name(), spelled(&tokens)),
            ))
        }
    };
    Ok(Expr { ty, kind })
}

fn one<'a, 'tu>(c: &Cursor<'tu>, children: &'a [Cursor<'tu>], cx: &Cx<'_>) -> Result<&'a Cursor<'tu>> {
    match children {
        [only] => Ok(only),
        _ => Err(unsupported(c, cx, format!("expected one operand, found {}", children.len()))),
    }
}

fn spelled(tokens: &[Token]) -> String {
    tokens.iter().map(|t| t.text.as_str()).collect::<Vec<_>>().join(" ")
}

/// Looks through implicit conversions and parentheses.
fn strip<'tu>(c: &Cursor<'tu>) -> Cursor<'tu> {
    let mut c = *c;
    while matches!(c.kind(), UNEXPOSED_EXPR | PAREN_EXPR) {
        match c.children().into_iter().find(|k| k.is_expression()) {
            Some(inner) => c = inner,
            None => break,
        }
    }
    c
}

fn call(c: &Cursor<'_>, children: &[Cursor<'_>], cx: &Cx<'_>) -> Result<ExprKind> {
    let (callee, args) = children.split_first().ok_or_else(|| unsupported(c, cx, "a call without callee"))?;
    let args = args.iter().map(|a| expr(a, cx)).collect::<Result<Vec<_>>>()?;
    let callee = strip(callee);
    match callee.kind() {
        DECL_REF_EXPR => Ok(ExprKind::Call { function: callee.spelling(), args }),
        MEMBER_REF_EXPR => {
            let base = callee.children().into_iter().find(|k| k.is_expression());
            let base = base.ok_or_else(|| unsupported(c, cx, "an ops call without table"))?;
            let table_ty = ctype(base.ty(), None);
            let table_type = table_ty
                .pointee_struct()
                .ok_or_else(|| unsupported(c, cx, format!("a call through a member of `{table_ty}`")))?
                .to_string();
            Ok(ExprKind::OpCall { table: boxed(&base, cx)?, table_type, member: callee.spelling(), args })
        }
        _ => Err(unsupported(c, cx, format!("a call through a `{}`", callee.kind_name()))),
    }
}

/// True when `tokens` are exactly `NAME ( … )`: one macro invocation.
fn is_one_invocation(tokens: &[Token]) -> bool {
    let mut depth = 0;
    for (i, t) in tokens.iter().enumerate().skip(1) {
        match t.text.as_str() {
            "(" => depth += 1,
            ")" => {
                depth -= 1;
                if depth == 0 {
                    return i == tokens.len() - 1;
                }
            }
            _ if depth == 0 => return false,
            _ => {}
        }
    }
    false
}

/// Splits a function-like macro invocation's tokens into its arguments.
fn macro_args(tokens: &[Token]) -> Vec<Vec<Token>> {
    let mut args = vec![Vec::new()];
    let mut depth = 0;
    for t in tokens.iter().skip(1) {
        match t.text.as_str() {
            "(" if depth == 0 => depth = 1,
            "(" => {
                depth += 1;
                args.last_mut().expect("non-empty").push(t.clone());
            }
            ")" if depth == 1 => break,
            ")" => {
                depth -= 1;
                args.last_mut().expect("non-empty").push(t.clone());
            }
            "," if depth == 1 => args.push(Vec::new()),
            _ => args.last_mut().expect("non-empty").push(t.clone()),
        }
    }
    args
}

/// The last identifier of a macro argument (`struct fi_ops` → `fi_ops`).
fn last_ident(arg: Option<&Vec<Token>>) -> Option<String> {
    arg?.iter().rev().find(|t| t.is_identifier).map(|t| t.text.clone())
}

/// Finds, in the expansion under `c`, the expression spelled as `arg`.
fn find_spelled<'tu>(c: &Cursor<'tu>, arg: &[Token], cx: &Cx<'_>) -> Option<Cursor<'tu>> {
    let want: Vec<&str> = arg.iter().map(|t| t.text.as_str()).collect();
    let mut stack = vec![*c];
    while let Some(k) = stack.pop() {
        if k.is_expression() && k.kind() != UNEXPOSED_EXPR && k.kind() != PAREN_EXPR {
            let got: Vec<String> = cx.tokens(&k).into_iter().map(|t| t.text).collect();
            if got == want {
                return Some(k);
            }
        }
        let mut children = k.children();
        children.reverse();
        stack.extend(children);
    }
    None
}

/// `FI_CHECK_OP(ops, struct table, member)`.
fn check_op(c: &Cursor<'_>, tokens: &[Token], cx: &Cx<'_>) -> Result<ExprKind> {
    let args = macro_args(tokens);
    let (Some(table_type), Some(member)) = (last_ident(args.get(1)), last_ident(args.get(2))) else {
        return Err(unsupported(c, cx, "FI_CHECK_OP with unexpected arguments"));
    };
    let table = find_spelled(c, &args[0], cx).ok_or_else(|| unsupported(c, cx, "FI_CHECK_OP's table operand"))?;
    Ok(ExprKind::CheckOp { table: boxed(&table, cx)?, table_type, member })
}

/// `container_of(ptr, struct container, field)`.
fn container_of(c: &Cursor<'_>, tokens: &[Token], cx: &Cx<'_>) -> Result<ExprKind> {
    let args = macro_args(tokens);
    let (Some(container), Some(field)) = (last_ident(args.get(1)), last_ident(args.get(2))) else {
        return Err(unsupported(c, cx, "container_of with unexpected arguments"));
    };
    let ptr = find_spelled(c, &args[0], cx).ok_or_else(|| unsupported(c, cx, "container_of's pointer operand"))?;
    Ok(ExprKind::ContainerOf { ptr: boxed(&ptr, cx)?, container, field })
}
