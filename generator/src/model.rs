//! The parsed C surface: what the emitters consume.
//!
//! The parser fills it from libclang; nothing here knows about libclang, so the
//! emitters can be read (and tested) on their own.

use std::fmt;

/// A header file of the parsed surface and where an item was declared in it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Loc {
    /// The header's path relative to the include directory (`rdma/fabric.h`).
    pub header: String,
    pub line: u32,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.header, self.line)
    }
}

/// Everything declared in the parsed headers, in declaration order per kind.
#[derive(Debug, Default)]
pub struct Api {
    /// Headers in the order the configuration lists them, with their SHA-256.
    pub headers: Vec<Header>,
    pub functions: Vec<Function>,
    pub enums: Vec<Enum>,
    pub macros: Vec<Macro>,
    pub structs: Vec<Struct>,
    pub typedefs: Vec<Typedef>,
}

#[derive(Debug, Clone)]
pub struct Header {
    pub path: String,
    pub sha256: String,
}

/// A C type, reduced to what the emitters need.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CType {
    Void,
    Bool,
    /// A builtin arithmetic type by its C spelling (`int`, `unsigned long`, …).
    Builtin(String),
    /// A typedef name (`size_t`, `uint64_t`, `fi_addr_t`).
    Typedef(String),
    Struct(String),
    Union(String),
    Enum(String),
    Pointer {
        pointee: Box<CType>,
        is_const: bool,
    },
    Array {
        element: Box<CType>,
        len: Option<u64>,
    },
    /// A function type (the pointee of a function pointer).
    Function {
        ret: Box<CType>,
        params: Vec<CType>,
        variadic: bool,
    },
}

impl CType {
    pub fn pointer(pointee: CType, is_const: bool) -> CType {
        CType::Pointer { pointee: Box::new(pointee), is_const }
    }

    pub fn is_pointer(&self) -> bool {
        matches!(self, CType::Pointer { .. })
    }

    /// The struct a pointer points to, if it is a struct pointer.
    pub fn pointee_struct(&self) -> Option<&str> {
        match self {
            CType::Pointer { pointee, .. } => match &**pointee {
                CType::Struct(name) => Some(name),
                _ => None,
            },
            _ => None,
        }
    }
}

impl fmt::Display for CType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CType::Void => f.write_str("void"),
            CType::Bool => f.write_str("bool"),
            CType::Builtin(s) | CType::Typedef(s) => f.write_str(s),
            CType::Struct(s) => write!(f, "struct {s}"),
            CType::Union(s) => write!(f, "union {s}"),
            CType::Enum(s) => write!(f, "enum {s}"),
            CType::Pointer { pointee, is_const } => {
                write!(f, "{}{pointee} *", if *is_const { "const " } else { "" })
            }
            CType::Array { element, len: Some(n) } => write!(f, "{element}[{n}]"),
            CType::Array { element, len: None } => write!(f, "{element}[]"),
            CType::Function { ret, params, variadic } => {
                write!(f, "{ret} (*)(")?;
                for (i, p) in params.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{p}")?;
                }
                if *variadic {
                    f.write_str(", ...")?;
                }
                f.write_str(")")
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub ty: CType,
}

/// A function declared (extern) or defined (`static inline`) in a header.
#[derive(Debug, Clone)]
pub struct Function {
    pub name: String,
    pub loc: Loc,
    pub ret: CType,
    pub params: Vec<Param>,
    pub variadic: bool,
    /// `Some` for `static inline` definitions: the translated body, or why it
    /// could not be translated.
    pub body: Option<Result<Block, Unsupported>>,
    /// `Some(message)` when deprecated by attribute (the message may be empty).
    pub deprecated: Option<String>,
}

impl Function {
    pub fn is_inline(&self) -> bool {
        self.body.is_some()
    }
}

/// A construct the body translator does not handle, and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Unsupported {
    pub loc: Loc,
    pub what: String,
}

pub type Block = Vec<Stmt>;

/// Statements of an inline function body.
#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    Return(Option<Expr>),
    Expr(Expr),
    /// A local variable; uninitialised locals start zeroed in Rust.
    Local {
        name: String,
        ty: CType,
        init: Option<Expr>,
    },
    If {
        cond: Expr,
        then: Block,
        otherwise: Block,
    },
}

/// Expressions of an inline function body, each with its C type.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub ty: CType,
    pub kind: ExprKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// A parameter or local variable.
    Var(String),
    /// A named constant: an enumerator or an object-like macro.
    Const(String),
    Int(i128),
    Str(String),
    /// The `NULL` macro.
    Null,
    /// A call of a function declared in the headers (or `memset`).
    Call {
        function: String,
        args: Vec<Expr>,
    },
    /// A call through an ops table: `table->member(args)`, where `table` has
    /// type `struct table_type *`.
    OpCall {
        table: Box<Expr>,
        table_type: String,
        member: String,
        args: Vec<Expr>,
    },
    Member {
        base: Box<Expr>,
        arrow: bool,
        field: String,
    },
    Unary {
        op: UnaryOp,
        operand: Box<Expr>,
    },
    Binary {
        op: BinaryOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    Assign {
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    Conditional {
        cond: Box<Expr>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
    /// A conversion to `self.ty`, written in C or implied by it.
    Cast {
        operand: Box<Expr>,
        explicit: bool,
    },
    AddrOf(Box<Expr>),
    Deref(Box<Expr>),
    SizeOfExpr(Box<Expr>),
    SizeOfType(CType),
    /// `container_of(ptr, struct container, field)`.
    ContainerOf {
        ptr: Box<Expr>,
        container: String,
        field: String,
    },
    /// `FI_CHECK_OP(table, struct table_type, member)`.
    CheckOp {
        table: Box<Expr>,
        table_type: String,
        member: String,
    },
    Paren(Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    Neg,
    Not,
    BitNot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Shl,
    Shr,
    BitAnd,
    BitOr,
    BitXor,
    And,
    Or,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl BinaryOp {
    pub fn from_c(token: &str) -> Option<BinaryOp> {
        use BinaryOp::*;
        Some(match token {
            "+" => Add,
            "-" => Sub,
            "*" => Mul,
            "/" => Div,
            "%" => Rem,
            "<<" => Shl,
            ">>" => Shr,
            "&" => BitAnd,
            "|" => BitOr,
            "^" => BitXor,
            "&&" => And,
            "||" => Or,
            "==" => Eq,
            "!=" => Ne,
            "<" => Lt,
            "<=" => Le,
            ">" => Gt,
            ">=" => Ge,
            _ => return None,
        })
    }

    /// True when the result is a truth value (`int` 0/1 in C, `bool` in Rust).
    pub fn is_boolean(self) -> bool {
        use BinaryOp::*;
        matches!(self, And | Or | Eq | Ne | Lt | Le | Gt | Ge)
    }
}

/// A C enum, named or anonymous.
#[derive(Debug, Clone)]
pub struct Enum {
    /// `None` for an anonymous enum: it is known by its first member.
    pub name: Option<String>,
    pub loc: Loc,
    /// The integer type clang chose for it (`unsigned int`, `int`).
    pub repr: CType,
    pub members: Vec<Enumerator>,
}

impl Enum {
    /// The enum's name, or `{FIRST_MEMBER}` for an anonymous one.
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(n) => format!("enum {n}"),
            None => format!("enum {{{}}}", self.members.first().map_or("", |m| m.name.as_str())),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Enumerator {
    pub name: String,
    pub value: i128,
    pub loc: Loc,
}

/// A `#define` in one of the headers.
#[derive(Debug, Clone)]
pub struct Macro {
    pub name: String,
    pub loc: Loc,
    pub kind: MacroKind,
    /// The replacement list as written, tokens separated by spaces.
    pub definition: String,
    /// The message of a `_Pragma("GCC warning …")` in the body, if any.
    pub pragma_deprecated: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MacroKind {
    /// An integer constant, evaluated by clang with its exact C type.
    Int {
        value: i128,
        ty: CType,
    },
    Str(String),
    Float {
        value: f64,
        ty: CType,
    },
    FunctionLike,
    /// Not a constant expression (an attribute, a declaration, an include guard…).
    NotConstant(String),
}

#[derive(Debug, Clone)]
pub struct Struct {
    pub name: String,
    pub loc: Loc,
    pub is_union: bool,
    pub fields: Vec<Field>,
    /// False for a tag that is declared but never defined.
    pub complete: bool,
}

impl Struct {
    /// Ops tables start with `size_t size` and hold function pointers.
    pub fn is_ops_table(&self) -> bool {
        self.fields.first().is_some_and(|f| f.name == "size")
            && self
                .fields
                .iter()
                .skip(1)
                .any(|f| matches!(&f.ty, CType::Pointer { pointee, .. } if matches!(**pointee, CType::Function { .. })))
    }

    /// libfabric objects start with an embedded `struct fid`.
    pub fn is_fid(&self) -> bool {
        self.fields.first().is_some_and(|f| f.ty == CType::Struct("fid".into()))
    }
}

#[derive(Debug, Clone)]
pub struct Field {
    /// The member name; empty for an anonymous (C11) union or struct member,
    /// whose type is then the synthesized record `parent__anonN`.
    pub name: String,
    pub ty: CType,
    pub loc: Loc,
    pub deprecated: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Typedef {
    pub name: String,
    pub loc: Loc,
    pub ty: CType,
}
