//! DNS + SSRF floor + dialing: resolve a decided name once, classify every address, refuse
//! private classes the route does not allow (any one bad answer refuses the lot — no
//! cherry-picking), refuse the proxy's own listen addresses (loop guard), and dial only the
//! vetted IPs. Nothing downstream ever re-resolves a name.
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use tokio::net::TcpStream;

use crate::canon::Host;
use crate::policy::{Deny, DenyReason, Route};
use crate::ssrf::classify;

/// A boxed future returned by [`Resolve::resolve`].
pub type ResolveFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>>;

/// A DNS resolver. The proxy calls it exactly once per connection (or per absolute-form
/// request) with a canonical name; tests inject static answers.
pub trait Resolve: Send + Sync + 'static {
    /// All addresses for `name` (a canonical DNS name without trailing dot).
    fn resolve<'a>(&'a self, name: &'a str) -> ResolveFuture<'a>;
}

/// The production resolver: hickory-resolver configured from the system
/// (`/etc/resolv.conf`), with its own cache.
pub struct HickoryResolver {
    inner: hickory_resolver::TokioResolver,
}

impl std::fmt::Debug for HickoryResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HickoryResolver")
    }
}

impl HickoryResolver {
    /// Builds a resolver from the system configuration.
    pub fn from_system_conf() -> io::Result<Self> {
        let builder = hickory_resolver::Resolver::builder_tokio().map_err(|e| {
            io::Error::other(format!(
                "reading the system DNS configuration (/etc/resolv.conf): {e}"
            ))
        })?;
        Ok(HickoryResolver {
            inner: builder.build(),
        })
    }
}

impl Resolve for HickoryResolver {
    fn resolve<'a>(&'a self, name: &'a str) -> ResolveFuture<'a> {
        Box::pin(async move {
            // A fully-qualified query: never expanded with resolv.conf search domains.
            let fqdn = format!("{name}.");
            let lookup = self
                .inner
                .lookup_ip(fqdn.as_str())
                .await
                .map_err(|e| io::Error::other(e.to_string()))?;
            Ok(lookup.iter().collect())
        })
    }
}

/// A resolver with fixed answers, for tests and for hosts files. Each name has a queue of
/// answers: every lookup takes the next one, and the last answer repeats forever (so a
/// test can make a name flip from a public to a private address — DNS rebinding).
#[derive(Debug, Default)]
pub struct StaticResolver {
    answers: Mutex<HashMap<String, VecDeque<Vec<IpAddr>>>>,
    queried: Mutex<Vec<String>>,
}

impl StaticResolver {
    /// An empty resolver (every lookup fails with "no such host").
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a constant answer for `name`.
    pub fn with(self, name: &str, addrs: &[IpAddr]) -> Self {
        self.push(name, addrs);
        self
    }

    /// Every name looked up so far, in order (tests assert what never reached DNS).
    pub fn queried(&self) -> Vec<String> {
        self.queried.lock().map(|q| q.clone()).unwrap_or_default()
    }

    /// Queues one more answer for `name`.
    pub fn push(&self, name: &str, addrs: &[IpAddr]) {
        if let Ok(mut m) = self.answers.lock() {
            m.entry(name.to_owned())
                .or_default()
                .push_back(addrs.to_vec());
        }
    }
}

impl Resolve for StaticResolver {
    fn resolve<'a>(&'a self, name: &'a str) -> ResolveFuture<'a> {
        if let Ok(mut q) = self.queried.lock() {
            q.push(name.to_owned());
        }
        let answer = self.answers.lock().ok().and_then(|mut m| {
            let q = m.get_mut(name)?;
            if q.len() > 1 {
                q.pop_front()
            } else {
                q.front().cloned()
            }
        });
        Box::pin(async move {
            answer.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"))
        })
    }
}

/// Resolves, vets and dials upstream addresses.
pub struct Connector {
    resolver: std::sync::Arc<dyn Resolve>,
    connect_timeout: Duration,
    own_addrs: RwLock<Vec<SocketAddr>>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// A connector using `resolver` and the upstream TCP `connect_timeout`.
    pub fn new(resolver: std::sync::Arc<dyn Resolve>, connect_timeout: Duration) -> Self {
        Connector {
            resolver,
            connect_timeout,
            own_addrs: RwLock::new(Vec::new()),
        }
    }

    /// Registers an address the proxy listens on (loop guard).
    pub fn add_own_addr(&self, addr: SocketAddr) {
        if let Ok(mut v) = self.own_addrs.write() {
            v.push(addr);
        }
    }

    fn is_own(&self, target: SocketAddr) -> bool {
        let Ok(own) = self.own_addrs.read() else {
            return false;
        };
        own.iter().any(|l| {
            if l.port() != target.port() {
                return false;
            }
            let t = target.ip();
            l.ip() == t
                || (l.ip().is_unspecified() && (t.is_loopback() || t.is_unspecified()))
                || t.is_unspecified()
        })
    }

    /// Resolves `host` once (IP literals are used as is), classifies every address and
    /// applies the route's `allow_private` and the loop guard. Returns the vetted socket
    /// addresses, in resolver order.
    pub async fn vet(
        &self,
        route: &Route,
        host: &Host,
        port: u16,
    ) -> Result<Vec<SocketAddr>, Deny> {
        let ips = match host {
            Host::Ip(ip) => vec![*ip],
            Host::Name(name) => match self.resolver.resolve(name).await {
                Ok(ips) if !ips.is_empty() => ips,
                Ok(_) => {
                    return Err(Deny::new(
                        DenyReason::Dns,
                        format!("DNS lookup for {name} returned no addresses"),
                    ))
                }
                Err(e) => {
                    return Err(Deny::new(
                        DenyReason::Dns,
                        format!("DNS lookup for {name} failed: {e}"),
                    ))
                }
            },
        };
        let mut out = Vec::with_capacity(ips.len());
        for ip in ips {
            let class = classify(ip);
            if !class.is_public() && !route.allows_private(ip) {
                return Err(Deny::new(
                    DenyReason::PrivateAddress,
                    format!(
                        "{host} resolved to {ip}, a {} address, and route `{}` does not allow it in allow_private",
                        class.code(),
                        route.id
                    ),
                ));
            }
            let sa = SocketAddr::new(ip, port);
            if self.is_own(sa) {
                return Err(Deny::new(
                    DenyReason::Loop,
                    format!("{host}:{port} is this proxy's own listen address"),
                ));
            }
            out.push(sa);
        }
        Ok(out)
    }

    /// Dials the first reachable vetted address, each attempt bounded by the connect
    /// timeout. Returns the stream and the address used.
    pub async fn dial(&self, addrs: &[SocketAddr]) -> Result<(TcpStream, SocketAddr), Deny> {
        let mut last = String::from("no address to dial");
        for &addr in addrs {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return Ok((s, addr));
                }
                Ok(Err(e)) => last = format!("connecting to {addr}: {e}"),
                Err(_) => {
                    last = format!(
                        "connecting to {addr}: connect timeout after {}",
                        fmt_duration(self.connect_timeout)
                    )
                }
            }
        }
        Err(Deny::new(DenyReason::Upstream, last))
    }
}

/// `10s`, `250ms`.
pub fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_resolver_flips_and_repeats_last() {
        let r = StaticResolver::new();
        r.push("a.test", &["203.0.113.5".parse().unwrap()]);
        r.push("a.test", &["127.0.0.1".parse().unwrap()]);
        assert_eq!(
            r.resolve("a.test").await.unwrap()[0].to_string(),
            "203.0.113.5"
        );
        assert_eq!(
            r.resolve("a.test").await.unwrap()[0].to_string(),
            "127.0.0.1"
        );
        assert_eq!(
            r.resolve("a.test").await.unwrap()[0].to_string(),
            "127.0.0.1"
        );
        assert!(r.resolve("b.test").await.is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(fmt_duration(Duration::from_secs(10)), "10s");
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
    }
}
