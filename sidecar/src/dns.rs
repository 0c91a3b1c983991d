//! The sidecar's DNS responder on the bottle's internal network. It NEVER forwards: the agent's
//! DNS is pinned to it, so a name the agent looks up reaches nothing beyond the sidecar.
//!
//! - `A` for the sidecar's own name (case-insensitive, with or without the trailing dot) → its IP,
//!   and for each of `hosts` (the model sidecars) → that address;
//! - any other type for those names → NOERROR with no answer (NODATA), so `AAAA` lookups fall back;
//! - every other name → NXDOMAIN; non-query opcodes → NOTIMP; undecodable messages → FORMERR.
//!
//! Refused names are only counted (see [`DnsStats`]); they are never written anywhere, since a
//! looked-up name can itself carry exfiltrated data. The counts go to the audit stream.

#[cfg(test)]
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bottle_protocol::events::Event;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// TTL of the answers (seconds).
pub const ANSWER_TTL: u32 = 60;
/// Idle timeout of a DNS-over-TCP connection.
pub const TCP_IDLE: Duration = Duration::from_secs(10);

/// What the responder answers and where it listens: the bootstrap's `dns` section (its name
/// lower case, without a trailing dot, as the parser leaves it).
pub use bottle_protocol::bootstrap::Dns as DnsConfig;

/// Counters of the responder (names are never kept).
#[derive(Debug, Default)]
pub struct DnsStats {
    /// Queries answered with the sidecar's address (or NODATA for its name).
    pub answered: AtomicU64,
    /// Queries for any other name (NXDOMAIN) or malformed / unsupported.
    pub refused: AtomicU64,
}

impl DnsStats {
    /// The counts as an audit-stream event (`{"event":"dns","answered":3,"refused":1}`).
    pub fn event(&self) -> Event {
        Event::Dns {
            answered: self.answered.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// Builds the response to one wire-format DNS message, or `None` when it is not worth answering
/// (shorter than a header, or itself a response).
pub fn respond(query: &[u8], cfg: &DnsConfig, stats: &DnsStats) -> Option<Vec<u8>> {
    let req = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) => {
            if query.len() < 12 || query[2] & 0x80 != 0 {
                return None;
            }
            stats.refused.fetch_add(1, Ordering::Relaxed);
            let id = u16::from_be_bytes([query[0], query[1]]);
            return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
                .to_vec()
                .ok();
        }
    };
    if req.message_type() != MessageType::Query {
        return None;
    }
    let mut resp = Message::new();
    resp.set_id(req.id())
        .set_message_type(MessageType::Response)
        .set_op_code(req.op_code())
        .set_recursion_desired(req.recursion_desired())
        .set_recursion_available(false);
    if req.op_code() != OpCode::Query {
        stats.refused.fetch_add(1, Ordering::Relaxed);
        resp.set_response_code(ResponseCode::NotImp);
        return resp.to_vec().ok();
    }
    let [q] = req.queries() else {
        stats.refused.fetch_add(1, Ordering::Relaxed);
        resp.set_response_code(ResponseCode::FormErr);
        return resp.to_vec().ok();
    };
    resp.add_query(q.clone());
    let asked = q.name().to_ascii().to_ascii_lowercase();
    let asked = asked.trim_end_matches('.');
    let found = if asked == cfg.name {
        Some(cfg.ip)
    } else {
        cfg.hosts.get(asked).copied()
    };
    if let Some(ip) = found {
        stats.answered.fetch_add(1, Ordering::Relaxed);
        resp.set_authoritative(true)
            .set_response_code(ResponseCode::NoError);
        if matches!(q.query_type(), RecordType::A | RecordType::ANY) {
            resp.add_answer(Record::from_rdata(
                q.name().clone(),
                ANSWER_TTL,
                RData::A(A(ip)),
            ));
        }
    } else {
        stats.refused.fetch_add(1, Ordering::Relaxed);
        resp.set_response_code(ResponseCode::NXDomain);
    }
    resp.to_vec().ok()
}

/// A bound responder (UDP socket and TCP listener on the same address).
pub struct DnsServer {
    cfg: Arc<DnsConfig>,
    udp: UdpSocket,
    tcp: TcpListener,
    stats: Arc<DnsStats>,
}

impl DnsServer {
    /// Binds UDP and TCP on `cfg.listen`.
    pub async fn bind(cfg: DnsConfig) -> std::io::Result<DnsServer> {
        let udp = UdpSocket::bind(cfg.listen).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("dns: binding UDP {}: {e}", cfg.listen))
        })?;
        let tcp = TcpListener::bind(cfg.listen).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("dns: binding TCP {}: {e}", cfg.listen))
        })?;
        Ok(DnsServer {
            cfg: Arc::new(cfg),
            udp,
            tcp,
            stats: Arc::new(DnsStats::default()),
        })
    }

    /// The bound UDP address (useful with port 0).
    #[cfg(test)]
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    /// The bound TCP address.
    #[cfg(test)]
    pub fn tcp_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// The counters (shared with the running server).
    pub fn stats(&self) -> Arc<DnsStats> {
        self.stats.clone()
    }

    /// Serves forever (returns only on a fatal socket error).
    pub async fn serve(self) -> std::io::Result<()> {
        let DnsServer {
            cfg,
            udp,
            tcp,
            stats,
        } = self;
        let tcp_task = {
            let (cfg, stats) = (cfg.clone(), stats.clone());
            tokio::spawn(async move {
                loop {
                    let (conn, _) = match tcp.accept().await {
                        Ok(c) => c,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let (cfg, stats) = (cfg.clone(), stats.clone());
                    tokio::spawn(async move {
                        let _ = serve_tcp(conn, &cfg, &stats).await;
                    });
                }
            })
        };
        let mut buf = vec![0u8; 4096];
        let result = loop {
            let (n, peer) = match udp.recv_from(&mut buf).await {
                Ok(x) => x,
                // ICMP errors from earlier replies surface here on Linux; keep serving.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(e) => break Err(e),
            };
            if let Some(out) = respond(&buf[..n], &cfg, &stats) {
                let _ = udp.send_to(&out, peer).await;
            }
        };
        tcp_task.abort();
        result
    }
}

async fn serve_tcp(mut conn: TcpStream, cfg: &DnsConfig, stats: &DnsStats) -> std::io::Result<()> {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, conn.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
        match tokio::time::timeout(TCP_IDLE, conn.read_exact(&mut msg)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        let Some(out) = respond(&msg, cfg, stats) else {
            return Ok(());
        };
        let Ok(out_len) = u16::try_from(out.len()) else {
            return Ok(());
        };
        conn.write_all(&out_len.to_be_bytes()).await?;
        conn.write_all(&out).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;
    use std::str::FromStr as _;

    fn cfg(listen: SocketAddr) -> DnsConfig {
        DnsConfig {
            listen,
            name: "bottle-sidecar".into(),
            ip: Ipv4Addr::new(10, 213, 0, 2),
            hosts: [("coder".to_string(), Ipv4Addr::new(10, 213, 1, 4))].into(),
        }
    }

    fn query(name: &str, t: RecordType, id: u16) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(id)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_str(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    async fn ask_udp(server: SocketAddr, q: &[u8]) -> Message {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.send_to(q, server).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), s.recv_from(&mut buf))
            .await
            .expect("no DNS answer within 5 s")
            .unwrap();
        Message::from_vec(&buf[..n]).unwrap()
    }

    async fn start() -> (SocketAddr, SocketAddr, Arc<DnsStats>) {
        let srv = DnsServer::bind(cfg("127.0.0.1:0".parse().unwrap()))
            .await
            .unwrap();
        let udp = srv.local_addr().unwrap();
        let tcp = srv.tcp_addr().unwrap();
        let stats = srv.stats();
        tokio::spawn(srv.serve());
        (udp, tcp, stats)
    }

    #[tokio::test]
    async fn own_name_gets_its_ip_over_udp() {
        let (udp, _, stats) = start().await;
        for name in ["bottle-sidecar", "bottle-sidecar.", "BOTTLE-Sidecar."] {
            let r = ask_udp(udp, &query(name, RecordType::A, 7)).await;
            assert_eq!(r.id(), 7);
            assert_eq!(r.response_code(), ResponseCode::NoError);
            assert!(r.authoritative() && !r.recursion_available());
            assert_eq!(r.answers().len(), 1, "{name}");
            assert_eq!(
                r.answers()[0].data(),
                &RData::A(A(Ipv4Addr::new(10, 213, 0, 2)))
            );
        }
        assert_eq!(stats.answered.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn model_names_get_their_addresses() {
        let (udp, _, _) = start().await;
        for name in ["coder", "Coder."] {
            let r = ask_udp(udp, &query(name, RecordType::A, 8)).await;
            assert_eq!(r.response_code(), ResponseCode::NoError, "{name}");
            assert_eq!(
                r.answers()[0].data(),
                &RData::A(A(Ipv4Addr::new(10, 213, 1, 4)))
            );
        }
        let r = ask_udp(udp, &query("coder.example.", RecordType::A, 8)).await;
        assert_eq!(r.response_code(), ResponseCode::NXDomain);
    }

    #[tokio::test]
    async fn aaaa_for_own_name_is_nodata() {
        let (udp, _, _) = start().await;
        let r = ask_udp(udp, &query("bottle-sidecar.", RecordType::AAAA, 9)).await;
        assert_eq!(r.response_code(), ResponseCode::NoError);
        assert!(r.answers().is_empty());
    }

    #[tokio::test]
    async fn everything_else_is_nxdomain_and_counted() {
        let (udp, _, stats) = start().await;
        for name in [
            "secret-data.example.com.",
            "bottle-sidecar.example.",
            "api.github.com.",
        ] {
            let r = ask_udp(udp, &query(name, RecordType::A, 1)).await;
            assert_eq!(r.response_code(), ResponseCode::NXDomain, "{name}");
            assert!(r.answers().is_empty());
        }
        assert_eq!(stats.refused.load(Ordering::Relaxed), 3);
        assert_eq!(
            stats.event().to_line(),
            "{\"event\":\"dns\",\"answered\":0,\"refused\":3}"
        );
    }

    #[tokio::test]
    async fn tcp_works_and_garbage_gets_formerr() {
        let (udp, tcp, _) = start().await;
        let mut c = TcpStream::connect(tcp).await.unwrap();
        for _ in 0..2 {
            let q = query("bottle-sidecar.", RecordType::A, 42);
            c.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
            c.write_all(&q).await.unwrap();
            let mut len = [0u8; 2];
            c.read_exact(&mut len).await.unwrap();
            let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
            c.read_exact(&mut buf).await.unwrap();
            let r = Message::from_vec(&buf).unwrap();
            assert_eq!((r.id(), r.answers().len()), (42, 1));
        }
        // 12-byte header claiming one question, then junk.
        let mut junk = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        junk.extend_from_slice(&[0xff; 5]);
        let r = ask_udp(udp, &junk).await;
        assert_eq!(r.id(), 0x1234);
        assert_eq!(r.response_code(), ResponseCode::FormErr);
        // Too short to answer, and responses, are dropped without a reply.
        let c = cfg("127.0.0.1:0".parse().unwrap());
        let st = DnsStats::default();
        assert!(respond(b"\x00\x01", &c, &st).is_none());
        let mut resp = Message::from_vec(&query("x.", RecordType::A, 3)).unwrap();
        resp.set_message_type(MessageType::Response);
        assert!(respond(&resp.to_vec().unwrap(), &c, &st).is_none());
    }
}
