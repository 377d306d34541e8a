//! The declarative configuration: which headers, and every decision the
//! headers alone cannot tell (flag families, names of anonymous enums,
//! appended ops members, skips and deprecations), each with its reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::Error;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Headers to parse, relative to the include directory, in include order.
    pub headers: Vec<String>,
    /// Extra arguments for clang (defines a header needs).
    #[serde(default)]
    pub clang_args: Vec<String>,
    #[serde(default)]
    pub ops: Ops,
    /// `static inline` functions emitted from `templates/inline/NAME.rs`
    /// instead of from their C body: name → reason.
    #[serde(default)]
    pub templates: BTreeMap<String, String>,
    /// Function-like macros implemented by hand in a template: name → where.
    #[serde(default)]
    pub implemented: BTreeMap<String, String>,
    /// Items not emitted: name → reason. Names are C names; an anonymous
    /// enum is named by its first member.
    #[serde(default)]
    pub skip: BTreeMap<String, String>,
    /// Items libfabric deprecates only in a comment: name → message.
    #[serde(default)]
    pub deprecated: BTreeMap<String, String>,
    /// Struct tags the headers use but never define: emitted opaque. tag → reason.
    #[serde(default)]
    pub opaque: BTreeMap<String, String>,
    /// Typed enums.
    #[serde(default, rename = "enum")]
    pub enums: Vec<EnumConfig>,
    /// Typed flag sets.
    #[serde(default)]
    pub flags: Vec<FlagsConfig>,
    /// Structs that get typed accessors.
    #[serde(default)]
    pub accessors: Vec<AccessorConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ops {
    /// `table.member` (an ops-table member) or `fid_x.table` (an ops-table
    /// pointer in an object) → the libfabric version that appended it. Calls
    /// through these get `FI_CHECK_OP` semantics even where C forgot it.
    #[serde(default)]
    pub appended: BTreeMap<String, String>,
}

/// How a C enum becomes a typed Rust enum.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnumConfig {
    /// The C enum's tag, for a named enum.
    #[serde(default)]
    pub c: Option<String>,
    /// The first member, for an anonymous enum.
    #[serde(default)]
    pub first: Option<String>,
    /// The Rust type name.
    pub name: String,
    /// The integer type at the use site (`u32` for `fi_info.addr_format`), when
    /// it differs from the enum's own.
    #[serde(default)]
    pub repr: Option<String>,
    /// Prefix removed from member names for the associated consts.
    #[serde(default)]
    pub strip: Option<String>,
    /// Also take the enumerators of other enums (named by first member), and
    /// object-like macros, into this type: libfabric moves constants between
    /// enums and macros across versions.
    #[serde(default)]
    pub extra: Vec<String>,
    pub doc: String,
}

/// One flag family: a set of bits used together in one field or argument.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagsConfig {
    pub name: String,
    /// The Rust integer type of the field (`u64`, `c_int`).
    pub repr: String,
    /// Prefix removed from member names for the associated consts.
    #[serde(default)]
    pub strip: Option<String>,
    /// The C names in the family; names absent from the headers are left out
    /// (a flag removed by a later libfabric), and so are names whose value is 0
    /// (libfabric redefines retired flags as `0ULL`).
    pub members: Vec<String>,
    pub doc: String,
}

/// Typed accessors for one struct.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessorConfig {
    #[serde(rename = "struct")]
    pub name: String,
    /// field → Rust type (a typed enum or flag set name) for integer fields
    /// that carry one.
    #[serde(default)]
    pub typed: BTreeMap<String, String>,
    /// Fields left without accessor → reason.
    #[serde(default)]
    pub skip: BTreeMap<String, String>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config { file: path.to_path_buf(), message: e.to_string() })?;
        Self::from_toml(&text, path)
    }

    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, Error> {
        toml::from_str(text).map_err(|e| Error::Config { file: PathBuf::from(origin), message: e.to_string() })
    }

    /// True when a call through `table.member`, or through the table pointer
    /// `object.field`, needs the `FI_CHECK_OP` guard.
    pub fn is_appended(&self, struct_name: &str, member: &str) -> bool {
        self.ops.appended.contains_key(&format!("{struct_name}.{member}"))
    }
}
