//! Opening HTTPS connections to the benchmark upstream, directly or through an
//! explicit proxy (`CONNECT host:port`, then TLS through the tunnel).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::RootCertStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Largest CONNECT response head we accept from a proxy.
const MAX_CONNECT_RESPONSE: usize = 16 * 1024;

/// Where and how to reach the upstream: the URL, an optional proxy and the
/// trust anchors the client accepts (the upstream CA for direct runs, the
/// proxy's CA for bumped runs).
#[derive(Clone)]
pub struct Target {
    authority: String,
    path: String,
    dial: SocketAddr,
    proxy: Option<SocketAddr>,
    server_name: ServerName<'static>,
    tls: TlsConnector,
}

impl Target {
    /// Builds a target from an `https://host:port/path` URL, an optional proxy
    /// address and PEM files holding the trust anchors.
    pub async fn new(url: &str, proxy: Option<SocketAddr>, cas: &[PathBuf]) -> Result<Self> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("--url {url:?} is not a valid URL"))?;
        if uri.scheme_str() != Some("https") {
            bail!("--url {url:?} must start with https://");
        }
        let host = uri
            .host()
            .ok_or_else(|| anyhow!("--url {url:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        // Resolve once, so direct runs do not pay a lookup per connection.
        let dial = tokio::net::lookup_host((host.as_str(), port))
            .await
            .with_context(|| format!("cannot resolve {host:?} from --url"))?
            .next()
            .ok_or_else(|| anyhow!("{host:?} from --url resolved to no address"))?;
        let server_name = ServerName::try_from(host.clone())
            .with_context(|| format!("{host:?} is not a valid TLS server name"))?;
        let tls = TlsConnector::from(Arc::new(client_config(cas)?));
        Ok(Self {
            authority,
            path,
            dial,
            proxy,
            server_name,
            tls,
        })
    }

    /// Opens TCP (plus a CONNECT tunnel when proxied) and completes a full TLS
    /// handshake (session resumption is disabled).
    pub async fn connect(&self) -> Result<TlsStream<TcpStream>> {
        let tcp = match self.proxy {
            Some(proxy) => {
                let mut s = TcpStream::connect(proxy)
                    .await
                    .with_context(|| format!("cannot connect to proxy {proxy}"))?;
                s.set_nodelay(true)?;
                tunnel(&mut s, &self.authority).await?;
                s
            }
            None => {
                let s = TcpStream::connect(self.dial)
                    .await
                    .with_context(|| format!("cannot connect to {}", self.dial))?;
                s.set_nodelay(true)?;
                s
            }
        };
        self.tls
            .connect(self.server_name.clone(), tcp)
            .await
            .context("TLS handshake failed")
    }

    /// Connects and performs the HTTP/1.1 handshake; the connection task is
    /// spawned on the current runtime.
    pub async fn open(&self) -> Result<SendRequest<Empty<Bytes>>> {
        let tls = self.connect().await?;
        let (sender, conn) = http1::handshake(TokioIo::new(tls))
            .await
            .context("HTTP/1.1 handshake failed")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// The request path (with query) of the URL.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `host:port` of the URL, as sent in `CONNECT` and `Host`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// A GET request for the target path with the right `Host`.
    pub fn request(&self) -> Result<Request<Empty<Bytes>>> {
        Request::get(self.path.as_str())
            .header(http::header::HOST, self.authority.as_str())
            .body(Empty::new())
            .context("cannot build request")
    }
}

/// Sends one request on `sender` and reads the whole response body,
/// returning the body length. A non-2xx status is an error that names the
/// status and any `X-Bottle-Deny` code.
pub async fn fetch(
    sender: &mut SendRequest<Empty<Bytes>>,
    req: Request<Empty<Bytes>>,
) -> Result<u64> {
    sender.ready().await.context("connection closed")?;
    let resp = sender.send_request(req).await.context("request failed")?;
    let status = resp.status();
    if !status.is_success() {
        let deny = resp
            .headers()
            .get("x-bottle-deny")
            .and_then(|v| v.to_str().ok())
            .map(|v| format!(" (X-Bottle-Deny: {v})"))
            .unwrap_or_default();
        bail!("upstream answered {status}{deny}");
    }
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.context("response body failed")?.into_data() {
            n += data.len() as u64;
        }
    }
    Ok(n)
}

/// Sends `CONNECT authority` and checks for a 2xx answer.
async fn tunnel(s: &mut TcpStream, authority: &str) -> Result<()> {
    let head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    s.write_all(head.as_bytes())
        .await
        .context("writing CONNECT")?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        let n = s
            .read(&mut chunk)
            .await
            .context("reading CONNECT response")?;
        if n == 0 {
            bail!("proxy closed the connection during CONNECT");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if pos + 4 != buf.len() {
                bail!("proxy sent data after its CONNECT response");
            }
            break;
        }
        if buf.len() > MAX_CONNECT_RESPONSE {
            bail!("CONNECT response head exceeds {MAX_CONNECT_RESPONSE} bytes");
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let status_line = text.lines().next().unwrap_or_default();
    let code = status_line.split_whitespace().nth(1).unwrap_or_default();
    if !code.starts_with('2') {
        let deny = text
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("x-bottle-deny:"))
            .map(|l| format!(" ({l})"))
            .unwrap_or_default();
        bail!("proxy refused CONNECT {authority}: {status_line}{deny}");
    }
    Ok(())
}

/// A rustls client config trusting only the given PEM files, HTTP/1.1 ALPN,
/// and no session resumption (every connection is a full handshake).
fn client_config(cas: &[PathBuf]) -> Result<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    for path in cas {
        for cert in read_certs(path)? {
            roots.add(cert).with_context(|| {
                format!(
                    "{}: certificate not usable as a trust anchor",
                    path.display()
                )
            })?;
        }
    }
    if roots.is_empty() {
        bail!("no trust anchors: pass --ca with a PEM certificate file");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("rustls protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

fn read_certs(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    let pem =
        std::fs::read(path).with_context(|| format!("cannot read --ca {}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: invalid PEM", path.display()))?;
    if certs.is_empty() {
        bail!("{}: no CERTIFICATE block found", path.display());
    }
    Ok(certs)
}
