//! Archives inside files: zip (and jar, apk, …), tar and gzip-compressed tar, unpacked within
//! limits and every member scanned like a file ([`super::scan_file`]), nested archives too.
//!
//! A limit that is hit is an error, never a silent skip: a gate must refuse what it cannot
//! scan whole (a zip bomb, a million members, an archive nested too deep).

use std::io::Read;

use super::text::scan_file;
use crate::{Finding, Scanner};

/// Bounds of archive unpacking.
#[derive(Clone, Copy, Debug)]
pub struct ArchiveLimits {
    /// Total bytes unpacked from one file, all members and nesting levels together.
    pub max_total_bytes: u64,
    /// Members of one file, all nesting levels together.
    pub max_members: usize,
    /// Archives inside archives (1 = members are scanned but not unpacked further).
    pub max_depth: usize,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        ArchiveLimits {
            max_total_bytes: 256 << 20,
            max_members: 10_000,
            max_depth: 3,
        }
    }
}

/// Why an archive could not be scanned whole.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// More bytes than [`ArchiveLimits::max_total_bytes`] would be unpacked.
    #[error("unpacking it would exceed the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// More members than [`ArchiveLimits::max_members`].
    #[error("it has more than {limit} members")]
    TooManyMembers {
        /// The limit.
        limit: usize,
    },
    /// Nested deeper than [`ArchiveLimits::max_depth`].
    #[error("archives are nested more than {limit} deep")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// The archive is malformed or uses a feature the unpacker lacks (e.g. encryption).
    #[error("it cannot be unpacked: {0}")]
    Unreadable(String),
}

/// The archive format of `data`, by magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Zip,
    Tar,
    Gzip,
}

fn kind_of(data: &[u8]) -> Option<Kind> {
    if data.starts_with(b"PK\x03\x04") || data.starts_with(b"PK\x05\x06") {
        Some(Kind::Zip)
    } else if data.len() > 262 && &data[257..262] == b"ustar" {
        Some(Kind::Tar)
    } else if data.starts_with(&[0x1f, 0x8b]) {
        Some(Kind::Gzip)
    } else {
        None
    }
}

/// Scans `data` as a file ([`scan_file`]) and, if it is an archive, every member as well, with
/// the member's path as the finding's location (`zip:dir/a.txt`, `tar:…`, nested as
/// `zip:inner.zip/zip:key.txt`) and its offset inside the member.
pub fn scan_file_deep(
    scanner: &Scanner,
    data: &[u8],
    limits: &ArchiveLimits,
) -> Result<Vec<Finding>, ArchiveError> {
    let mut out = scan_file(scanner, data);
    let mut budget = Budget {
        bytes: 0,
        members: 0,
        limits: *limits,
    };
    members(scanner, data, 1, "", &mut budget, &mut out)?;
    Ok(out)
}

struct Budget {
    bytes: u64,
    members: usize,
    limits: ArchiveLimits,
}

impl Budget {
    fn member(&mut self) -> Result<(), ArchiveError> {
        self.members += 1;
        if self.members > self.limits.max_members {
            return Err(ArchiveError::TooManyMembers {
                limit: self.limits.max_members,
            });
        }
        Ok(())
    }

    /// Reads `r` whole, counting against the byte budget.
    fn read(&mut self, r: impl Read) -> Result<Vec<u8>, ArchiveError> {
        let left = self.limits.max_total_bytes.saturating_sub(self.bytes);
        let mut buf = Vec::new();
        r.take(left + 1)
            .read_to_end(&mut buf)
            .map_err(|e| ArchiveError::Unreadable(e.to_string()))?;
        if buf.len() as u64 > left {
            return Err(ArchiveError::TooLarge {
                limit: self.limits.max_total_bytes,
            });
        }
        self.bytes += buf.len() as u64;
        Ok(buf)
    }
}

/// Scans the members of `data` (if it is an archive) at nesting `depth`.
fn members(
    scanner: &Scanner,
    data: &[u8],
    depth: usize,
    prefix: &str,
    budget: &mut Budget,
    out: &mut Vec<Finding>,
) -> Result<(), ArchiveError> {
    let Some(kind) = kind_of(data) else {
        return Ok(());
    };
    if depth > budget.limits.max_depth {
        return Err(ArchiveError::TooDeep {
            limit: budget.limits.max_depth,
        });
    }
    let mut found: Vec<(String, Vec<u8>)> = Vec::new();
    match kind {
        Kind::Zip => {
            let mut z = zip::ZipArchive::new(std::io::Cursor::new(data))
                .map_err(|e| ArchiveError::Unreadable(e.to_string()))?;
            for i in 0..z.len() {
                budget.member()?;
                let f = z
                    .by_index(i)
                    .map_err(|e| ArchiveError::Unreadable(e.to_string()))?;
                if f.is_dir() {
                    continue;
                }
                let member = f
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|_| "?".into());
                let name = format!("{prefix}zip:{member}");
                let bytes = budget.read(f)?;
                found.push((name, bytes));
            }
        }
        Kind::Tar => {
            let mut t = tar::Archive::new(std::io::Cursor::new(data));
            let entries = t
                .entries()
                .map_err(|e| ArchiveError::Unreadable(e.to_string()))?;
            for e in entries {
                budget.member()?;
                let e = e.map_err(|e| ArchiveError::Unreadable(e.to_string()))?;
                if !e.header().entry_type().is_file() {
                    continue;
                }
                let name = format!(
                    "{prefix}tar:{}",
                    e.path()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|_| "?".into())
                );
                let bytes = budget.read(e)?;
                found.push((name, bytes));
            }
        }
        Kind::Gzip => {
            // scan_file already scans the inflated bytes; unpack them only if they are a tar.
            let inner = budget.read(flate2::read::MultiGzDecoder::new(data))?;
            if kind_of(&inner) == Some(Kind::Tar) {
                return members(scanner, &inner, depth, &format!("{prefix}gz:"), budget, out);
            }
            return Ok(());
        }
    }
    for (name, bytes) in found {
        for f in scan_file(scanner, &bytes) {
            out.push(f.at(format!("{name}:")));
        }
        members(scanner, &bytes, depth + 1, &format!("{name}/"), budget, out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const TOKEN: &str = "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8";

    fn scanner() -> Scanner {
        Scanner::builder().default_rules(true).build().unwrap()
    }

    fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, data) in files {
            w.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn a_token_in_a_zip_member_is_found_with_the_member_path() {
        let z = zip_of(&[("a.txt", b"nothing"), ("conf/key.txt", TOKEN.as_bytes())]);
        assert!(
            scan_file(&scanner(), &z).is_empty(),
            "deflated: invisible raw"
        );
        let f = scan_file_deep(&scanner(), &z, &ArchiveLimits::default()).unwrap();
        assert!(
            f.iter()
                .any(|f| f.location.as_deref() == Some("zip:conf/key.txt:")),
            "{f:?}"
        );
    }

    #[test]
    fn tar_gz_and_nested_archives_are_unpacked() {
        let t = tar_of(&[("deep/key.env", format!("T={TOKEN}\n").as_bytes())]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&t).unwrap();
        let tgz = gz.finish().unwrap();
        let f = scan_file_deep(&scanner(), &tgz, &ArchiveLimits::default()).unwrap();
        assert!(
            f.iter()
                .any(|f| f.location.as_deref() == Some("gz:tar:deep/key.env:")),
            "{f:?}"
        );
        let outer = zip_of(&[("inner.tar.gz", &tgz)]);
        let f = scan_file_deep(&scanner(), &outer, &ArchiveLimits::default()).unwrap();
        assert!(
            f.iter().any(|f| f
                .location
                .as_deref()
                .is_some_and(|l| l.starts_with("zip:inner.tar.gz/gz:tar:deep/key.env"))),
            "{f:?}"
        );
    }

    #[test]
    fn limits_are_errors_not_skips() {
        let bomb = zip_of(&[("zeros", &vec![0u8; 1 << 20])]);
        let small = ArchiveLimits {
            max_total_bytes: 64 << 10,
            ..Default::default()
        };
        assert!(matches!(
            scan_file_deep(&scanner(), &bomb, &small),
            Err(ArchiveError::TooLarge { .. })
        ));
        let many: Vec<(String, Vec<u8>)> =
            (0..20).map(|i| (format!("f{i}"), b"x".to_vec())).collect();
        let refs: Vec<(&str, &[u8])> = many
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        let few = ArchiveLimits {
            max_members: 10,
            ..Default::default()
        };
        assert!(matches!(
            scan_file_deep(&scanner(), &zip_of(&refs), &few),
            Err(ArchiveError::TooManyMembers { limit: 10 })
        ));
        let mut nested = zip_of(&[("k", TOKEN.as_bytes())]);
        for _ in 0..4 {
            nested = zip_of(&[("n.zip", &nested)]);
        }
        assert!(matches!(
            scan_file_deep(&scanner(), &nested, &ArchiveLimits::default()),
            Err(ArchiveError::TooDeep { limit: 3 })
        ));
        // Not an archive after all: just the file scan.
        assert!(scan_file_deep(&scanner(), b"PK\x03\x04junk", &ArchiveLimits::default()).is_err());
        assert!(
            scan_file_deep(&scanner(), b"plain", &ArchiveLimits::default())
                .unwrap()
                .is_empty()
        );
    }
}
