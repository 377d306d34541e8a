fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let g = libfabric_generator::generate(&libfabric_generator::Options {
        include_dir: "/usr/include".into(),
        config: std::env::var_os("GEN_CONFIG").map(Into::into).unwrap_or(root.join("generator/libfabric.toml")),
        templates: root.join("templates"),
    });
    match g {
        Ok(g) => {
            for (p, c) in &g.files {
                let path = root.join("generated").join(p);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, c).unwrap();
            }
        }
        Err(e) => { eprintln!("error: {e}"); std::process::exit(1); }
    }
}
