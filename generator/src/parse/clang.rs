//! A small safe wrapper over the libclang C API (through clang-sys).
//!
//! Only what the parser needs: parse a translation unit from memory, walk
//! cursors, read types, tokens, locations and evaluated values. Every raw call
//! is confined to this file.

#![allow(non_upper_case_globals)] // clang-sys names its constants in C style

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_uint, c_ulong, c_void};
use std::path::{Path, PathBuf};
use std::ptr;

use clang_sys::*;

use crate::error::Error;

/// Loads libclang for this thread (clang-sys loads at run time, per thread).
pub fn ensure_loaded() -> Result<(), Error> {
    if !clang_sys::is_loaded() {
        clang_sys::load().map_err(Error::Libclang)?;
    }
    Ok(())
}

/// libclang's own version string, e.g. "Debian clang version 14.0.6".
pub fn version() -> String {
    // SAFETY: libclang is loaded (ensure_loaded ran before any parse); the
    // returned CXString is owned and disposed by `take`.
    unsafe { take(clang_getClangVersion()) }
}

/// Turns an owned `CXString` into a Rust string and disposes it.
///
/// # Safety
/// `s` must be a valid `CXString` returned by libclang and not yet disposed.
unsafe fn take(s: CXString) -> String {
    let p = clang_getCString(s);
    let out = if p.is_null() { String::new() } else { CStr::from_ptr(p).to_string_lossy().into_owned() };
    clang_disposeString(s);
    out
}

/// An index plus one parsed translation unit; both are disposed on drop.
pub struct TranslationUnit {
    index: CXIndex,
    tu: CXTranslationUnit,
}

/// A diagnostic of severity error or fatal.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: u32,
    pub message: String,
}

impl TranslationUnit {
    /// Parses `source` (C, held in memory under the name `name`) with `args`.
    pub fn parse(name: &str, source: &str, args: &[String]) -> Result<Self, Error> {
        ensure_loaded()?;
        let c_name = CString::new(name).map_err(|_| Error::Internal("NUL in file name".into()))?;
        let c_args: Vec<CString> = args
            .iter()
            .map(|a| CString::new(a.as_str()))
            .collect::<Result<_, _>>()
            .map_err(|_| Error::Internal("NUL in a clang argument".into()))?;
        let arg_ptrs: Vec<*const c_char> = c_args.iter().map(|a| a.as_ptr()).collect();
        let mut unsaved = CXUnsavedFile {
            Filename: c_name.as_ptr(),
            Contents: source.as_ptr().cast(),
            Length: source.len() as c_ulong,
        };
        let mut tu: CXTranslationUnit = ptr::null_mut();
        // SAFETY: every pointer handed to libclang outlives the call (`c_name`,
        // `c_args`, `arg_ptrs`, `source`); `tu` is only used if parsing succeeded.
        let (index, code) = unsafe {
            let index = clang_createIndex(0, 0);
            let code = clang_parseTranslationUnit2(
                index,
                c_name.as_ptr(),
                arg_ptrs.as_ptr(),
                arg_ptrs.len() as i32,
                &mut unsaved,
                1,
                CXTranslationUnit_DetailedPreprocessingRecord,
                &mut tu,
            );
            (index, code)
        };
        if code != CXError_Success || tu.is_null() {
            // SAFETY: the index was created above and is not used again.
            unsafe { clang_disposeIndex(index) };
            return Err(Error::Parse { file: name.into(), message: format!("libclang error code {code}") });
        }
        Ok(TranslationUnit { index, tu })
    }

    /// Errors and fatal errors reported while parsing.
    pub fn errors(&self) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        // SAFETY: `self.tu` is a live translation unit; each diagnostic is
        // disposed after use and the strings are taken (copied and disposed).
        unsafe {
            for i in 0..clang_getNumDiagnostics(self.tu) {
                let d = clang_getDiagnostic(self.tu, i);
                if clang_getDiagnosticSeverity(d) >= CXDiagnostic_Error {
                    let (file, line) = spelling_location(clang_getDiagnosticLocation(d));
                    out.push(Diagnostic { file, line, message: take(clang_getDiagnosticSpelling(d)) });
                }
                clang_disposeDiagnostic(d);
            }
        }
        out
    }

    pub fn cursor(&self) -> Cursor<'_> {
        // SAFETY: `self.tu` is live for the lifetime of the returned cursor.
        Cursor { raw: unsafe { clang_getTranslationUnitCursor(self.tu) }, tu: self }
    }

    /// The tokens spelled in `extent`, with their byte offsets in their file.
    fn tokens(&self, extent: CXSourceRange) -> Vec<Token> {
        let mut raw: *mut CXToken = ptr::null_mut();
        let mut n: c_uint = 0;
        let mut out = Vec::new();
        // SAFETY: the range comes from this translation unit; the token array is
        // read within its length and disposed once.
        unsafe {
            clang_tokenize(self.tu, extent, &mut raw, &mut n);
            if raw.is_null() {
                return out;
            }
            for t in std::slice::from_raw_parts(raw, n as usize) {
                let mut offset = 0;
                clang_getSpellingLocation(
                    clang_getTokenLocation(self.tu, *t),
                    ptr::null_mut(),
                    ptr::null_mut(),
                    ptr::null_mut(),
                    &mut offset,
                );
                out.push(Token {
                    text: take(clang_getTokenSpelling(self.tu, *t)),
                    is_identifier: clang_getTokenKind(*t) == CXToken_Identifier,
                    offset,
                });
            }
            clang_disposeTokens(self.tu, raw, n);
        }
        out
    }
}

impl Drop for TranslationUnit {
    fn drop(&mut self) {
        // SAFETY: both handles were created in `parse` and are disposed once.
        unsafe {
            clang_disposeTranslationUnit(self.tu);
            clang_disposeIndex(self.index);
        }
    }
}

/// One preprocessor token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub text: String,
    pub is_identifier: bool,
    pub offset: u32,
}

/// The file and line of a location's spelling.
fn spelling_location(loc: CXSourceLocation) -> (PathBuf, u32) {
    let mut file: CXFile = ptr::null_mut();
    let mut line = 0;
    // SAFETY: `loc` is a location value from libclang; out-pointers are valid.
    unsafe {
        clang_getSpellingLocation(loc, &mut file, &mut line, ptr::null_mut(), ptr::null_mut());
        let name = if file.is_null() { String::new() } else { take(clang_getFileName(file)) };
        (PathBuf::from(name), line)
    }
}

/// A cursor tied to the translation unit it came from.
#[derive(Clone, Copy)]
pub struct Cursor<'tu> {
    raw: CXCursor,
    tu: &'tu TranslationUnit,
}

/// The kind of a cursor, as libclang numbers it.
pub type Kind = CXCursorKind;
pub use clang_sys::{
    CXCursor_BinaryOperator as BINARY_OPERATOR, CXCursor_CStyleCastExpr as C_STYLE_CAST_EXPR,
    CXCursor_CallExpr as CALL_EXPR, CXCursor_CompoundStmt as COMPOUND_STMT,
    CXCursor_ConditionalOperator as CONDITIONAL_OPERATOR, CXCursor_DeclRefExpr as DECL_REF_EXPR,
    CXCursor_DeclStmt as DECL_STMT, CXCursor_EnumConstantDecl as ENUM_CONSTANT_DECL, CXCursor_EnumDecl as ENUM_DECL,
    CXCursor_FieldDecl as FIELD_DECL, CXCursor_FunctionDecl as FUNCTION_DECL, CXCursor_IfStmt as IF_STMT,
    CXCursor_IntegerLiteral as INTEGER_LITERAL, CXCursor_MacroDefinition as MACRO_DEFINITION,
    CXCursor_MemberRefExpr as MEMBER_REF_EXPR, CXCursor_ParenExpr as PAREN_EXPR, CXCursor_ParmDecl as PARM_DECL,
    CXCursor_ReturnStmt as RETURN_STMT, CXCursor_StringLiteral as STRING_LITERAL, CXCursor_StructDecl as STRUCT_DECL,
    CXCursor_TypeRef as TYPE_REF, CXCursor_TypedefDecl as TYPEDEF_DECL, CXCursor_UnaryExpr as UNARY_EXPR,
    CXCursor_UnaryOperator as UNARY_OPERATOR, CXCursor_UnexposedExpr as UNEXPOSED_EXPR,
    CXCursor_UnionDecl as UNION_DECL, CXCursor_VarDecl as VAR_DECL,
};

/// A source location: file (as libclang spells it) and line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    pub file: PathBuf,
    pub line: u32,
}

impl<'tu> Cursor<'tu> {
    pub fn kind(&self) -> Kind {
        // SAFETY: the cursor belongs to a live translation unit.
        unsafe { clang_getCursorKind(self.raw) }
    }

    pub fn is_expression(&self) -> bool {
        // SAFETY: pure function of the kind value.
        unsafe { clang_isExpression(self.kind()) != 0 }
    }

    pub fn spelling(&self) -> String {
        // SAFETY: the cursor is live; the string is taken.
        unsafe { take(clang_getCursorSpelling(self.raw)) }
    }

    pub fn children(&self) -> Vec<Cursor<'tu>> {
        extern "C" fn visit(c: CXCursor, _parent: CXCursor, data: CXClientData) -> CXChildVisitResult {
            // SAFETY: `data` is the `&mut Vec<CXCursor>` passed below, alive for the walk.
            let out = unsafe { &mut *(data as *mut Vec<CXCursor>) };
            out.push(c);
            CXChildVisit_Continue
        }
        let mut raw: Vec<CXCursor> = Vec::new();
        // SAFETY: the visitor only pushes into `raw`, which outlives the call.
        unsafe { clang_visitChildren(self.raw, visit, &mut raw as *mut Vec<CXCursor> as *mut c_void) };
        raw.into_iter().map(|raw| Cursor { raw, tu: self.tu }).collect()
    }

    /// Where the cursor is spelled (for macro-expanded code: where it was expanded).
    pub fn location(&self) -> Location {
        // SAFETY: the cursor is live; out-pointers are valid locals.
        unsafe {
            let mut file: CXFile = ptr::null_mut();
            let mut line = 0;
            clang_getExpansionLocation(
                clang_getCursorLocation(self.raw),
                &mut file,
                &mut line,
                ptr::null_mut(),
                ptr::null_mut(),
            );
            let name = if file.is_null() { String::new() } else { take(clang_getFileName(file)) };
            Location { file: PathBuf::from(name), line }
        }
    }

    /// Byte offsets `[start, end)` of the cursor's extent in its file. A macro
    /// argument maps to where it is spelled in the invocation, the rest of a
    /// macro expansion to the invocation itself.
    pub fn offsets(&self) -> (u32, u32) {
        // SAFETY: the cursor is live; out-pointers are valid locals.
        unsafe {
            let extent = clang_getCursorExtent(self.raw);
            let offset = |loc| {
                let mut offset = 0;
                clang_getFileLocation(loc, ptr::null_mut(), ptr::null_mut(), ptr::null_mut(), &mut offset);
                offset
            };
            (offset(clang_getRangeStart(extent)), offset(clang_getRangeEnd(extent)))
        }
    }

    /// The tokens of the cursor's extent.
    pub fn tokens(&self) -> Vec<Token> {
        // SAFETY: the cursor is live.
        let extent = unsafe { clang_getCursorExtent(self.raw) };
        self.tu.tokens(extent)
    }

    pub fn ty(&self) -> Type<'tu> {
        // SAFETY: the cursor is live.
        Type { raw: unsafe { clang_getCursorType(self.raw) }, tu: self.tu }
    }

    pub fn typedef_underlying(&self) -> Type<'tu> {
        // SAFETY: the cursor is live (a typedef declaration).
        Type { raw: unsafe { clang_getTypedefDeclUnderlyingType(self.raw) }, tu: self.tu }
    }

    pub fn result_type(&self) -> Type<'tu> {
        // SAFETY: the cursor is live.
        Type { raw: unsafe { clang_getCursorResultType(self.raw) }, tu: self.tu }
    }

    /// The declaration a reference or expression refers to.
    pub fn referenced(&self) -> Option<Cursor<'tu>> {
        // SAFETY: the cursor is live; a null cursor is reported as None.
        let raw = unsafe { clang_getCursorReferenced(self.raw) };
        // SAFETY: as above.
        if unsafe { clang_Cursor_isNull(raw) } != 0 {
            None
        } else {
            Some(Cursor { raw, tu: self.tu })
        }
    }

    pub fn is_definition(&self) -> bool {
        // SAFETY: the cursor is live.
        unsafe { clang_isCursorDefinition(self.raw) != 0 }
    }

    pub fn is_static(&self) -> bool {
        // SAFETY: the cursor is live.
        unsafe { clang_Cursor_getStorageClass(self.raw) == CX_SC_Static }
    }

    pub fn is_inline(&self) -> bool {
        // SAFETY: the cursor is live.
        unsafe { clang_Cursor_isFunctionInlined(self.raw) != 0 }
    }

    pub fn is_variadic(&self) -> bool {
        // SAFETY: the cursor is live.
        unsafe { clang_Cursor_isVariadic(self.raw) != 0 }
    }

    pub fn is_macro_function_like(&self) -> bool {
        // SAFETY: the cursor is live.
        unsafe { clang_Cursor_isMacroFunctionLike(self.raw) != 0 }
    }

    /// True for a record declared without a name (`union { … } field;`).
    pub fn is_anonymous(&self) -> bool {
        // SAFETY: the cursor is live.
        unsafe { clang_Cursor_isAnonymous(self.raw) != 0 }
    }

    /// `Some(message)` when the declaration is deprecated by attribute; the
    /// message is the attribute's, or empty.
    pub fn deprecation(&self) -> Option<String> {
        // SAFETY: the cursor is live; the out-strings are taken (disposed) and
        // no platform array is requested.
        unsafe {
            if clang_getCursorAvailability(self.raw) != CXAvailability_Deprecated {
                return None;
            }
            let (mut always_deprecated, mut always_unavailable) = (0, 0);
            let mut message: CXString = std::mem::zeroed();
            let mut unavailable: CXString = std::mem::zeroed();
            clang_getCursorPlatformAvailability(
                self.raw,
                &mut always_deprecated,
                &mut message,
                &mut always_unavailable,
                &mut unavailable,
                ptr::null_mut(),
                0,
            );
            let _ = take(unavailable);
            Some(take(message))
        }
    }

    /// libclang's name for a cursor kind (`ForStmt`).
    pub fn kind_name(&self) -> String {
        // SAFETY: pure function of the kind value; the string is taken.
        unsafe { take(clang_getCursorKindSpelling(self.kind())) }
    }

    pub fn arguments(&self) -> Vec<Cursor<'tu>> {
        // SAFETY: the cursor is live; indices stay below the reported count.
        unsafe {
            let n = clang_Cursor_getNumArguments(self.raw).max(0) as u32;
            (0..n).map(|i| Cursor { raw: clang_Cursor_getArgument(self.raw, i), tu: self.tu }).collect()
        }
    }

    pub fn enum_value(&self) -> i64 {
        // SAFETY: the cursor is live (an enum constant declaration).
        unsafe { clang_getEnumConstantDeclValue(self.raw) }
    }

    pub fn enum_unsigned_value(&self) -> u64 {
        // SAFETY: the cursor is live (an enum constant declaration).
        unsafe { clang_getEnumConstantDeclUnsignedValue(self.raw) }
    }

    pub fn enum_integer_type(&self) -> Type<'tu> {
        // SAFETY: the cursor is live (an enum declaration).
        Type { raw: unsafe { clang_getEnumDeclIntegerType(self.raw) }, tu: self.tu }
    }

    /// Evaluates the cursor as a constant expression.
    pub fn evaluate(&self) -> Option<Value> {
        // SAFETY: the cursor is live; the result is read by kind and disposed once.
        unsafe {
            let r = clang_Cursor_Evaluate(self.raw);
            if r.is_null() {
                return None;
            }
            let v = match clang_EvalResult_getKind(r) {
                CXEval_Int => Some(if clang_EvalResult_isUnsignedInt(r) != 0 {
                    Value::Int(i128::from(clang_EvalResult_getAsUnsigned(r)))
                } else {
                    Value::Int(i128::from(clang_EvalResult_getAsLongLong(r)))
                }),
                CXEval_Float => Some(Value::Float(clang_EvalResult_getAsDouble(r))),
                CXEval_StrLiteral => {
                    let p = clang_EvalResult_getAsStr(r);
                    (!p.is_null()).then(|| Value::Str(CStr::from_ptr(p).to_string_lossy().into_owned()))
                }
                _ => None,
            };
            clang_EvalResult_dispose(r);
            v
        }
    }
}

/// A value computed by clang.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i128),
    Float(f64),
    Str(String),
}

/// A type tied to its translation unit.
#[derive(Clone, Copy)]
pub struct Type<'tu> {
    raw: CXType,
    tu: &'tu TranslationUnit,
}

/// The type kinds the model distinguishes.
pub use clang_sys::{
    CXType_Bool as T_BOOL, CXType_Char_S as T_CHAR_S, CXType_Char_U as T_CHAR_U,
    CXType_ConstantArray as T_CONSTANT_ARRAY, CXType_Double as T_DOUBLE, CXType_Elaborated as T_ELABORATED,
    CXType_Enum as T_ENUM, CXType_Float as T_FLOAT, CXType_FunctionNoProto as T_FUNCTION_NO_PROTO,
    CXType_FunctionProto as T_FUNCTION_PROTO, CXType_IncompleteArray as T_INCOMPLETE_ARRAY, CXType_Int as T_INT,
    CXType_Long as T_LONG, CXType_LongDouble as T_LONG_DOUBLE, CXType_LongLong as T_LONG_LONG,
    CXType_Pointer as T_POINTER, CXType_Record as T_RECORD, CXType_SChar as T_SCHAR, CXType_Short as T_SHORT,
    CXType_Typedef as T_TYPEDEF, CXType_UChar as T_UCHAR, CXType_UInt as T_UINT, CXType_ULong as T_ULONG,
    CXType_ULongLong as T_ULONG_LONG, CXType_UShort as T_USHORT, CXType_Void as T_VOID,
};

impl<'tu> Type<'tu> {
    pub fn kind(&self) -> CXTypeKind {
        self.raw.kind
    }

    pub fn spelling(&self) -> String {
        // SAFETY: the type belongs to a live translation unit.
        unsafe { take(clang_getTypeSpelling(self.raw)) }
    }

    fn wrap(&self, raw: CXType) -> Type<'tu> {
        Type { raw, tu: self.tu }
    }

    pub fn canonical(&self) -> Type<'tu> {
        // SAFETY: the type is live.
        self.wrap(unsafe { clang_getCanonicalType(self.raw) })
    }

    pub fn pointee(&self) -> Type<'tu> {
        // SAFETY: the type is live.
        self.wrap(unsafe { clang_getPointeeType(self.raw) })
    }

    /// For `struct x` written with its keyword: the named type.
    pub fn named(&self) -> Type<'tu> {
        // SAFETY: the type is live.
        self.wrap(unsafe { clang_Type_getNamedType(self.raw) })
    }

    pub fn is_const(&self) -> bool {
        // SAFETY: the type is live.
        unsafe { clang_isConstQualifiedType(self.raw) != 0 }
    }

    pub fn declaration(&self) -> Cursor<'tu> {
        // SAFETY: the type is live.
        Cursor { raw: unsafe { clang_getTypeDeclaration(self.raw) }, tu: self.tu }
    }

    pub fn typedef_name(&self) -> String {
        // SAFETY: the type is live.
        unsafe { take(clang_getTypedefName(self.raw)) }
    }

    pub fn element(&self) -> Type<'tu> {
        // SAFETY: the type is live.
        self.wrap(unsafe { clang_getArrayElementType(self.raw) })
    }

    pub fn array_len(&self) -> i64 {
        // SAFETY: the type is live.
        unsafe { clang_getArraySize(self.raw) }
    }

    pub fn result(&self) -> Type<'tu> {
        // SAFETY: the type is live.
        self.wrap(unsafe { clang_getResultType(self.raw) })
    }

    pub fn args(&self) -> Vec<Type<'tu>> {
        // SAFETY: the type is live; indices stay below the reported count.
        unsafe {
            let n = clang_getNumArgTypes(self.raw).max(0) as u32;
            (0..n).map(|i| self.wrap(clang_getArgType(self.raw, i))).collect()
        }
    }

    pub fn is_variadic(&self) -> bool {
        // SAFETY: the type is live.
        unsafe { clang_isFunctionTypeVariadic(self.raw) != 0 }
    }
}

/// The include directory that holds `rdma/fabric.h`, from pkg-config.
pub fn pkg_config_include_dir() -> Result<PathBuf, Error> {
    let out = std::process::Command::new("pkg-config")
        .args(["--variable=includedir", "libfabric"])
        .output()
        .map_err(|e| Error::Headers(format!("could not run pkg-config: {e}")))?;
    if !out.status.success() {
        return Err(Error::Headers(format!(
            "pkg-config does not know libfabric ({}); install libfabric-dev or pass --headers DIR",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(Path::new(&dir).to_path_buf())
}
