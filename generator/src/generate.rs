//! The whole run: configuration + headers → the files of `generated/`.

use std::path::{Path, PathBuf};

use quote::quote;

use crate::config::Config;
use crate::emit::{self, Files};
use crate::error::Error;
use crate::model::Api;
use crate::parse::{self, Input};

/// Where to read from.
#[derive(Debug, Clone)]
pub struct Options {
    /// The include directory holding `rdma/` (from pkg-config by default).
    pub include_dir: PathBuf,
    /// The generator configuration (`generator/libfabric.toml`).
    pub config: PathBuf,
    /// The templates directory (`templates/`).
    pub templates: PathBuf,
}

/// The result of a run.
pub struct Generated {
    pub files: Files,
    pub api: Api,
    pub config: Config,
}

/// Parses the headers and emits every file of the generated crate.
pub fn generate(options: &Options) -> Result<Generated, Error> {
    let config = Config::load(&options.config)?;
    let input = Input::new(&options.include_dir, &config)?;
    let api = parse::parse(&input)?;
    let mut files = Files::new();

    for t in ["Cargo.toml", "build.rs", "src/support.rs", "src/version.rs", "src/lib.rs"] {
        files.insert(t.to_string(), read_template(&options.templates, &format!("generated/{t}"))?);
    }
    files.insert("src/raw.rs".into(), emit::raw::emit(&input)?);

    let (mut const_modules, mut inline_modules) = (Vec::new(), Vec::new());
    for header in &config.headers {
        let module = emit::module_name(header);
        let consts = emit::consts::emit_header(&api, &config, header);
        if !consts.is_empty() {
            const_modules.push(module.clone());
            files.insert(
            format!("src/consts/{module}.rs"),
            emit::rust_file(
                header,
                quote! {
                    #![allow(deprecated, clippy::unreadable_literal)]
                    #[allow(unused_imports)]
                    use crate::raw::*;
                    #consts
                },
            )?,
        );
        }
        let (inline, _) = emit::inline::emit_header(&api, &config, header, &options.templates)?;
        if inline.is_empty() {
            continue;
        }
        inline_modules.push(module.clone());
        files.insert(
            format!("src/inline/{module}.rs"),
            emit::rust_file(
                header,
                quote! {
                    #![allow(deprecated, unused_parens, clippy::unnecessary_cast)]
                    #[allow(unused_imports)]
                    use crate::raw::*;
                    #[allow(unused_imports)]
                    use crate::consts::*;
                    #[allow(unused_imports)]
                    use crate::support::{container_of, has_op};
                    #[allow(unused_imports)]
                    use super::*;
                    #inline
                },
            )?,
        );
    }
    files.insert(
        "src/consts/mod.rs".into(),
        emit::module_index(" Every object-like macro and enumerator of the headers, one module per header.", &const_modules)?,
    );
    files.insert(
        "src/inline/mod.rs".into(),
        emit::module_index(" The headers' `static inline` functions, one module per header.", &inline_modules)?,
    );
    let enums = emit::enums::emit_enums(&api, &config);
    files.insert(
        "src/enums.rs".into(),
        emit::rust_file(
            "the [[enum]] tables of generator/libfabric.toml",
            quote! {
                //! Typed open enums: `#[repr(transparent)]` newtypes over the C integer,
                //! with the C constants as associated consts. Any value converts in and
                //! out, including values a newer libfabric adds; `Debug` prints the C name.
                #![allow(deprecated, clippy::unnecessary_cast)]
                #[allow(unused_imports)]
                use crate::consts::*;
                use crate::support::open_enum_impls;
                #enums
            },
        )?,
    );
    let flags = emit::enums::emit_flags(&api, &config);
    files.insert(
        "src/flags.rs".into(),
        emit::rust_file(
            "the [[flags]] tables of generator/libfabric.toml",
            quote! {
                //! Typed flag sets, one per field or argument family. libfabric reuses
                //! bits across families (`FI_CONTEXT` and `FI_DIRECTED_RECV` are both bit
                //! 59), so each family lists exactly the flags valid where it is used.
                //! Unknown bits are kept; `Debug` prints the C names.
                #![allow(deprecated, clippy::unnecessary_cast)]
                #[allow(unused_imports)]
                use crate::consts::*;
                use crate::support::flag_set_impls;
                #flags
            },
        )?,
    );
    let accessors = emit::accessors::emit(&api, &config)?;
    files.insert(
        "src/accessors.rs".into(),
        emit::rust_file(
            "the [[accessors]] tables of generator/libfabric.toml",
            quote! {
                //! Typed getters and setters on the raw structs of `raw`.
                #![allow(clippy::unnecessary_cast, clippy::missing_safety_doc)]
                #[allow(unused_imports)]
                use crate::enums::*;
                #[allow(unused_imports)]
                use crate::flags::*;
                use crate::raw::*;
                #accessors
            },
        )?,
    );

    Ok(Generated { files, api, config })
}

fn read_template(templates: &Path, name: &str) -> Result<String, Error> {
    let path = templates.join(name);
    std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))
}
