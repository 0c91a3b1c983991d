//! The model egress proxy ([`bottle_protocol::bootstrap::ModelEgress`]): one listener on the
//! sidecar's models-network address serving each model sidecar its own route set.
//!
//! Each model gets a [`bottle_proxy::Proxy`] of its own — its policy (the bottle's settings and
//! the model's routes only), the secrets its routes inject and no other, DLP against every
//! bottle secret — writing to the bottle's one audit stream with `"client":"model:<name>"`.
//! Connections are told apart by source address: models have static addresses and no
//! capability to forge another (every capability is dropped, `NET_RAW` included). Any other
//! peer — the agent shares that network — is refused before a byte is read, and audited.
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use bottle_protocol::bootstrap::{Bootstrap, ModelEgress};
use bottle_proxy::audit::{AuditLog, AuditRecord};
use bottle_proxy::Proxy;

use crate::bootstrap::RunError;

/// The audit reason of a connection from an address that is not one of the models.
pub const REFUSED: &str = "client_refused";

/// The models' proxies, by source address.
pub struct ModelProxies {
    listen: SocketAddr,
    by_ip: HashMap<IpAddr, Proxy>,
    audit: AuditLog,
}

/// Builds one proxy per model of `section`, sharing the bottle's audit log.
pub fn build(
    section: &ModelEgress,
    b: &Bootstrap,
    audit: &AuditLog,
) -> Result<ModelProxies, RunError> {
    let all: HashMap<String, String> = b
        .secrets
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().to_owned()))
        .collect();
    let mut by_ip = HashMap::new();
    for c in &section.clients {
        let what = format!("model {}", c.name);
        let policy = bottle_proxy::policy::Policy::from_toml_str(&c.policy_toml, &what)
            .map_err(|e| RunError::Policy(format!("{what}: {e}")))?;
        let own: HashMap<String, String> = c
            .secrets
            .iter()
            .filter_map(|n| all.get(n).map(|v| (n.clone(), v.clone())))
            .collect();
        // DLP knows every bottle secret (a model holds none of the agent's, and must not
        // send one); injection and reflection know only the model's own.
        let inspector = bottle_proxy::dlp::DlpInspector::for_bottle(
            &policy.settings,
            &all,
            b.ca_key_pem.as_str(),
        )
        .map_err(|e| RunError::Proxy(format!("{what}: {e}")))?;
        let proxy = Proxy::builder()
            .inspector(inspector)
            .policy(policy)
            .ca(b.ca_cert_pem.as_str(), b.ca_key_pem.as_str())
            .secrets(own)
            .audit_log(audit.for_client(&format!("model:{}", c.name)))
            .build()
            .map_err(|e| RunError::Proxy(format!("{what}: {e}")))?;
        proxy.add_listener_addr(section.listen);
        by_ip.insert(IpAddr::V4(c.ip), proxy);
    }
    Ok(ModelProxies {
        listen: section.listen,
        by_ip,
        audit: audit.clone(),
    })
}

/// Binds `addr` even though the address is not configured yet (`IP_FREEBIND`): the sidecar
/// joins the models network only after it started, and no model starts before that.
pub fn bind_free(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a c_int option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_FREEBIND,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl ModelProxies {
    /// Where the listener is bound.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// Accepts connections until the task is dropped, handing each model's to its proxy and
    /// refusing (and auditing) every other.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("bottle-sidecar: model egress accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            match self.by_ip.get(&peer.ip()) {
                Some(proxy) => proxy.serve_connection(stream, peer),
                None => {
                    drop(stream);
                    self.audit.record(refused(peer));
                }
            }
        }
    }
}

/// The audit record of a refused connection: nothing was read, the peer's address in `client`.
fn refused(peer: SocketAddr) -> AuditRecord {
    AuditRecord::deny_unread(REFUSED, Some(format!("unknown:{}", peer.ip()).into()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use bottle_protocol::bootstrap::ModelClient;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use zeroize::Zeroizing;

    use super::*;

    /// A bootstrap document with one secret and one model client at `client`.
    fn doc(listen: SocketAddr, client: Ipv4Addr) -> Bootstrap {
        let ca = bottle_proxy::ca::CertificateAuthority::generate("t", Duration::from_secs(3600))
            .unwrap();
        let models = ModelEgress {
            listen,
            clients: vec![ModelClient {
                name: "coder".into(),
                ip: client,
                policy_toml: "[[route]]\nid = \"hf\"\nhost = \"huggingface.co\"\n".into(),
                secrets: vec![],
            }],
        };
        Bootstrap {
            policy_toml: "[[route]]\nhost = \"example.com\"\n".into(),
            ca_cert_pem: ca.cert_pem,
            ca_key_pem: Zeroizing::new(ca.key_pem),
            secrets: BTreeMap::from([("GH_TOKEN".into(), Zeroizing::new("ghp_x".repeat(8)))]),
            listen: "127.0.0.1:0".parse().unwrap(),
            dns: None,
            lifeline: false,
            git: None,
            models: Some(models),
        }
    }

    /// Sends one proxy request for a host no route allows and returns the status line.
    async fn ask(to: SocketAddr) -> String {
        let mut s = tokio::net::TcpStream::connect(to).await.unwrap();
        s.write_all(b"GET http://elsewhere.test/ HTTP/1.1\r\nHost: elsewhere.test\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    async fn audited(served_from: Ipv4Addr) -> (String, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let b = doc(addr, served_from);
        let (w, mut r) = tokio::io::duplex(1 << 16);
        let audit = AuditLog::spawn(w);
        let proxies = build(b.models.as_ref().unwrap(), &b, &audit).unwrap();
        let task = tokio::spawn(proxies.serve(listener));
        let status = ask(addr).await;
        audit.sync().await;
        let mut buf = vec![0u8; 4096];
        let n = r.read(&mut buf).await.unwrap();
        task.abort();
        (status, String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    #[tokio::test]
    async fn a_model_gets_its_own_routes_and_anyone_else_is_refused() {
        // From the model's address: its proxy answers (a deny: no route for that host), and
        // the record names the model.
        let (status, log) = audited(Ipv4Addr::LOCALHOST).await;
        assert!(status.starts_with("HTTP/1.1 403"), "{status}");
        let rec: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
        assert_eq!(rec["client"], "model:coder", "{log}");
        assert_eq!(rec["host"], "elsewhere.test", "{log}");
        // From any other address (the agent, say): closed unread, audited as refused.
        let (status, log) = audited(Ipv4Addr::new(127, 0, 0, 9)).await;
        assert_eq!(status, "", "no answer at all");
        let rec: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
        assert_eq!(rec["reason"], REFUSED, "{log}");
        assert_eq!(rec["client"], "unknown:127.0.0.1", "{log}");
    }

    #[tokio::test]
    async fn an_address_that_is_not_here_yet_can_be_bound() {
        // 192.0.2.1 (TEST-NET-1) is on no interface of the test machine.
        let l = bind_free("192.0.2.1:0".parse().unwrap()).unwrap();
        assert_eq!(l.local_addr().unwrap().ip().to_string(), "192.0.2.1");
    }
}
