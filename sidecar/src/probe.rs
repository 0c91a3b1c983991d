//! `bottle-sidecar probe URL`: one HTTP GET from inside the bottle network, for the launcher's
//! model readiness check (it runs it with `docker exec` in the sidecar, the one container of
//! the bottle bottle builds itself; the launcher on the host cannot reach the `--internal`
//! network, and a model image may have no curl).
//!
//! Prints the response body (at most [`MAX_BODY`] bytes) on stdout. Exit status: 0 for a 2xx
//! answer, 1 for any other HTTP answer (the server is up, not ready), 2 when nothing answers.
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest body printed.
pub const MAX_BODY: usize = 1 << 20;

/// Splits `http://host:port/path` into (host, port, path).
pub fn parse_url(url: &str) -> Option<(String, u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (hostport, 80),
    };
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port, path))
}

/// The status code of an HTTP response head.
fn status_of(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Runs the subcommand; returns the exit status.
pub fn command(args: &[String]) -> i32 {
    let [url] = args else {
        eprintln!("usage: bottle-sidecar probe http://HOST:PORT/PATH");
        return 2;
    };
    let Some((host, port, path)) = parse_url(url) else {
        eprintln!("bottle-sidecar probe: {url:?} is not an http://host:port/path URL");
        return 2;
    };
    match get(&host, port, &path) {
        Ok((status, body)) => {
            let _ = std::io::stdout().write_all(&body);
            if (200..300).contains(&status) {
                0
            } else {
                eprintln!("HTTP {status}");
                1
            }
        }
        Err(e) => {
            eprintln!("{e}");
            2
        }
    }
}

fn get(host: &str, port: u16, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let addr = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{host}: no address")))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(3)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    if let Err(e) = s.take((MAX_BODY + 64 * 1024) as u64).read_to_end(&mut buf) {
        // A server that resets the connection after its answer still answered.
        if buf.is_empty() {
            return Err(e);
        }
    }
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP response head"))?;
    let status =
        status_of(&buf[..end]).ok_or_else(|| std::io::Error::other("not an HTTP response"))?;
    let mut body = buf.split_off(end + 4);
    body.truncate(MAX_BODY);
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_status_lines() {
        assert_eq!(
            parse_url("http://10.0.0.4:8000/v1/models"),
            Some(("10.0.0.4".into(), 8000, "/v1/models".into()))
        );
        assert_eq!(parse_url("http://m"), Some(("m".into(), 80, "/".into())));
        assert_eq!(parse_url("https://m/"), None);
        assert_eq!(status_of(b"HTTP/1.0 503 Service Unavailable"), Some(503));
        assert_eq!(status_of(b"SSH-2.0"), None);
    }

    #[test]
    fn gets_from_a_local_server() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            // Read the whole request head before answering (closing with unread input
            // would reset the connection).
            let mut head = Vec::new();
            let mut b = [0u8; 512];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = c.read(&mut b).unwrap();
                assert!(n > 0, "request head");
                head.extend_from_slice(&b[..n]);
            }
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
        });
        let (status, body) = get("127.0.0.1", port, "/v1/models").unwrap();
        t.join().unwrap();
        assert_eq!((status, body.as_slice()), (200, b"ok".as_slice()));
    }
}
