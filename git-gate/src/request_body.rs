//! Reading a request body within a size limit, decoding `Content-Encoding: gzip`.

use std::io::Read;

use bytes::Bytes;
use http_body_util::BodyExt;

use crate::error::GateError;

/// Collects `body` (at most `limit` bytes) and, when `encoding` is `gzip`/`x-gzip`, inflates it
/// (again at most `limit` bytes). Any other encoding is refused.
pub async fn read<B>(body: B, encoding: Option<&str>, limit: u64) -> Result<Bytes, GateError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limited = http_body_util::Limited::new(body, limit as usize);
    let raw = match limited.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(GateError::TooLarge { limit });
            }
            return Err(GateError::BadRequest(format!(
                "cannot read request body: {e}"
            )));
        }
    };
    decode(raw, encoding, limit)
}

/// Decodes an already collected body (see [`read`]).
pub fn decode(raw: Bytes, encoding: Option<&str>, limit: u64) -> Result<Bytes, GateError> {
    match encoding.map(|e| e.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("identity") => Ok(raw),
        Some("gzip") | Some("x-gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&raw[..])
                .take(limit + 1)
                .read_to_end(&mut out)
                .map_err(|e| {
                    GateError::BadRequest(format!("request body is not valid gzip: {e}"))
                })?;
            if out.len() as u64 > limit {
                return Err(GateError::TooLarge { limit });
            }
            Ok(Bytes::from(out))
        }
        Some(other) => Err(GateError::BadRequest(format!(
            "unsupported Content-Encoding {other:?} (only gzip)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8]) -> Bytes {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        Bytes::from(e.finish().unwrap())
    }

    #[test]
    fn inflates_gzip() {
        assert_eq!(
            &decode(gz(b"0000"), Some("gzip"), 100).unwrap()[..],
            b"0000"
        );
    }

    #[test]
    fn gzip_bomb_hits_the_limit() {
        let bomb = gz(&vec![0u8; 1 << 20]);
        assert!(bomb.len() < 10_000);
        let e = decode(bomb, Some("gzip"), 4096).unwrap_err();
        assert!(matches!(e, GateError::TooLarge { limit: 4096 }), "{e}");
    }

    #[test]
    fn garbage_gzip_and_unknown_encodings_are_errors() {
        assert!(decode(Bytes::from_static(b"nope"), Some("gzip"), 100).is_err());
        let e = decode(Bytes::from_static(b"x"), Some("br"), 100).unwrap_err();
        assert!(e.to_string().contains("br"));
    }

    #[tokio::test]
    async fn raw_body_over_the_limit_is_refused() {
        let body = http_body_util::Full::new(Bytes::from(vec![1u8; 200]));
        let e = read(body, None, 100).await.unwrap_err();
        assert!(matches!(e, GateError::TooLarge { limit: 100 }), "{e}");
    }
}
