//! `wsecho`: the WebSocket echo upstream of `bench/proxy/run.sh` (nginx cannot echo).
//!
//! TLS (rustls, the upstream's own certificate and key, HTTP/1.1 ALPN) on `--listen`; any
//! request path with a valid RFC 6455 upgrade (`Sec-WebSocket-Key`) gets a `101` without
//! extensions, then every text or binary message is sent back unchanged, one frame per
//! message, until the client closes. Pings are answered by tungstenite.
//! Usage: `wsecho --listen 127.0.0.1:18444 --cert leaf.pem --key leaf.key [--threads 2]`.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::Message;

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;

#[derive(Parser)]
#[command(
    name = "wsecho",
    about = "TLS WebSocket echo server for the proxy benchmark"
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:18444")]
    listen: SocketAddr,
    /// Certificate chain (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// Private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(serve(cli))
}

async fn serve(cli: Cli) -> Result<()> {
    let certs = rustls_pemfile::certs(&mut std::fs::read(&cli.cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: invalid PEM", cli.cert.display()))?;
    let key = rustls_pemfile::private_key(&mut std::fs::read(&cli.key)?.as_slice())
        .with_context(|| format!("{}: invalid PEM", cli.key.display()))?
        .with_context(|| format!("{}: no private key", cli.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    eprintln!("wsecho: listening on {}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            if let Ok(tls) = acceptor.accept(tcp).await {
                if let Err(e) = echo(tls).await {
                    eprintln!("wsecho: connection: {e:#}");
                }
            }
        });
    }
}

/// Answers the upgrade, then echoes messages until the client closes.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let end = loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if head.len() > MAX_HEAD {
            bail!("request head over {MAX_HEAD} bytes");
        }
    };
    if end != head.len() {
        bail!("client sent data before the 101");
    }
    let text = String::from_utf8_lossy(&head[..end]);
    let key = text.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim().to_owned())
    });
    let Some(key) = key else {
        s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await?;
        return Ok(());
    };
    let accept = bottle_proxy::websocket::accept_key(key.as_bytes());
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    s.write_all(resp.as_bytes()).await?;
    s.flush().await?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20));
    let mut ws = WebSocketStream::from_raw_socket(s, Role::Server, Some(config)).await;
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                if ws.send(m).await.is_err() {
                    break;
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let _ = ws.close(None).await;
    Ok(())
}
