//! Runs a git gate by hand: `serve <listen-addr> <state-dir> <hook-binary> <name>=<url>...`
//! (default push policy, no credential). For trying it with real git clients, e.g.
//! `git clone http://127.0.0.1:9418/proj`.

use bottle_git_gate::{GateConfig, GitGate, PushPolicy, RemoteConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: serve <listen-addr> <state-dir> <hook-binary> <name>=<url>...");
        std::process::exit(2);
    }
    let remotes = args[3..]
        .iter()
        .map(|a| {
            let (name, url) = a.split_once('=').ok_or("remote must be <name>=<url>")?;
            Ok(RemoteConfig {
                name: name.into(),
                url: url.into(),
                credential: None,
                policy: PushPolicy::default(),
                git_config: Vec::new(),
            })
        })
        .collect::<Result<Vec<_>, &str>>()?;
    let cfg = GateConfig::new(args[1].clone().into(), args[2].clone().into(), remotes);
    let gate = GitGate::new(cfg).await?;
    let listener = tokio::net::TcpListener::bind(&args[0]).await?;
    eprintln!("git gate listening on http://{}", listener.local_addr()?);
    gate.serve(listener).await?;
    Ok(())
}
