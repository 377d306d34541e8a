use libfabric_generator::model::*;
fn main() {
    let cfg = libfabric_generator::Config { headers: std::env::args().skip(2).collect(), ..Default::default() };
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap());
    let input = libfabric_generator::parse::Input::new(&dir, &cfg).unwrap();
    let api = libfabric_generator::parse::parse(&input).unwrap();
    if std::env::var("FULL").is_ok() {
        println!("{api:#?}");
        return;
    }
    for f in &api.functions {
        if let Some(Err(e)) = &f.body {
            println!("ERR {} {}: {}", f.name, e.loc, e.what);
        }
    }
    for m in &api.macros {
        match &m.kind {
            MacroKind::Int { value, ty } => println!("M {} = {} : {}", m.name, value, ty),
            k => println!("M {} {:?} {:?}", m.name, k, m.pragma_deprecated),
        }
    }
    for e in &api.enums {
        println!("E {} {} {}", e.display_name(), e.repr, e.members.len());
    }
    for s in &api.structs {
        println!(
            "S {} {} fields={} ops={} fid={} complete={}",
            s.name,
            s.loc,
            s.fields.len(),
            s.is_ops_table(),
            s.is_fid(),
            s.complete
        );
    }
    for t in &api.typedefs {
        println!("T {} = {}", t.name, t.ty);
    }
    println!("functions {} inline {}", api.functions.len(), api.functions.iter().filter(|f| f.is_inline()).count());
}
