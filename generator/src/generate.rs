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

    for t in ["Cargo.toml", "build.rs", "src/support.rs", "src/version.rs"] {
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
    files.insert("src/lib.rs".into(), read_template(&options.templates, "generated/src/lib.rs")?);
    Ok(Generated { files, api, config })
}

fn read_template(templates: &Path, name: &str) -> Result<String, Error> {
    let path = templates.join(name);
    std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))
}
