fn main() {
    let cfg = libfabric_generator::Config { headers: std::env::args().skip(2).collect(), ..Default::default() };
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap());
    let input = libfabric_generator::parse::Input::new(&dir, &cfg).unwrap();
    print!("{}", libfabric_generator::emit::raw::emit(&input).unwrap());
}
