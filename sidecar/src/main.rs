mod bootstrap;
mod dns;
mod git;
mod host;
mod models;
mod probe;

/// Entry point. Bottle mode (`--bootstrap-stdin`) is wired here; host mode (`--policy …`, see
/// docs/design.md) belongs to the proxy's CLI.
fn main() {
    if git::invoked_as_hook() {
        std::process::exit(git::run_hook());
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["--version"] | ["-V"] => println!("bottle-sidecar {}", env!("CARGO_PKG_VERSION")),
        ["git-ticket", ..] => std::process::exit(git::ticket_command(&args[1..])),
        ["probe", ..] => std::process::exit(probe::command(&args[1..])),
        ["--bootstrap-stdin"] => {
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("bottle-sidecar: cannot start the async runtime: {e}");
                    std::process::exit(1);
                }
            };
            if let Err(e) = rt.block_on(bootstrap::run_from_stdin(|b| b)) {
                eprintln!("bottle-sidecar: {e}");
                std::process::exit(1);
            }
        }
        // Host mode (`--policy …`, `gen-ca`, `--help`): see host.rs.
        [first, ..]
            if first.starts_with("--policy")
                || first.starts_with("--ca-")
                || first.starts_with("--listen")
                || first.starts_with("--audit")
                || first.starts_with("--workers")
                || first.starts_with("--secrets-file")
                || *first == "gen-ca"
                || *first == "--help"
                || *first == "-h" =>
        {
            if let Err(e) = host::main_from_args(args.clone()) {
                eprintln!("bottle-sidecar: {e:#}");
                std::process::exit(1);
            }
        }
        _ => {
            eprintln!(
                "usage: bottle-sidecar --policy FILE --ca-cert FILE --ca-key FILE [--listen ADDR] [--audit FILE|-] [--workers N]   (host mode; --help)\n       bottle-sidecar gen-ca --out DIR\n       bottle-sidecar --bootstrap-stdin   (bottle mode: one JSON document on stdin)\n       bottle-sidecar probe http://HOST:PORT/PATH   (one GET, for model readiness)\n       bottle-sidecar --version"
            );
            std::process::exit(2);
        }
    }
}
