//! Minimal pkt-line framing: what the gate writes itself (the service header of a v0
//! advertisement and `ERR` lines). Everything else is git's own output.

/// Encodes one pkt-line carrying `payload` (at most 65516 bytes; longer payloads are cut).
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(65516)];
    let mut out = format!("{:04x}", payload.len() + 4).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// The flush packet `0000`.
pub const FLUSH: &[u8] = b"0000";

/// The `# service=<service>` header and flush that precede a v0/v1 smart-HTTP advertisement.
pub fn service_header(service: &str) -> Vec<u8> {
    let mut out = encode(format!("# service={service}\n").as_bytes());
    out.extend_from_slice(FLUSH);
    out
}

/// An `ERR <message>` pkt-line: git clients print it as `remote error: <message>` and stop.
/// Newlines in `message` are folded into spaces so it stays one line.
pub fn err_line(message: &str) -> Vec<u8> {
    let one_line: String = message
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    encode(format!("ERR {one_line}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_lengths_in_hex_including_the_prefix() {
        assert_eq!(encode(b"a\n"), b"0006a\n");
        assert_eq!(
            service_header("git-upload-pack"),
            b"001e# service=git-upload-pack\n0000".to_vec()
        );
    }

    #[test]
    fn err_line_is_one_line() {
        assert_eq!(err_line("bad\nthing"), b"0012ERR bad thing\n".to_vec());
    }

    #[test]
    fn oversized_payload_is_cut_to_the_maximum() {
        let big = vec![b'x'; 70000];
        let line = encode(&big);
        assert_eq!(&line[..4], b"fff0");
        assert_eq!(line.len(), 65520);
    }
}
