//! The capture file: the aggregated model of one run (see `report::model`),
//! written when the program ends and read back by `heapsite report`.
//!
//! Layout, all integers little-endian:
//!
//! ```text
//! "HEAPSITE-CAPTURE\n"   17 bytes of magic
//! u32 version            FORMAT_VERSION
//! u64 length             bytes of payload that follow
//! u32 crc32              of the payload
//! payload                zlib-compressed JSON of `Capture`
//! ```
//!
//! Reading never trusts the file: every failure is a one-line `CaptureError`
//! naming what is wrong (foreign, truncated, corrupt, too new), never a panic.
//! The payload is aggregated (sites, not events), so files stay small.

use crate::report::model::Capture;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use flate2::Compression;
use std::io::{Read, Write};
use std::path::Path;

pub const MAGIC: &[u8] = b"HEAPSITE-CAPTURE\n";
pub const FORMAT_VERSION: u32 = 1;
const HEADER: usize = MAGIC.len() + 4 + 8 + 4;
/// A JSON payload this large is not one heapsite wrote: refuse it rather
/// than inflate without bound.
const MAX_PAYLOAD: u64 = 4 << 30;

#[derive(Debug, PartialEq)]
pub struct CaptureError(pub String);

impl std::fmt::Display for CaptureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn corrupt(what: impl std::fmt::Display) -> CaptureError {
    CaptureError(format!("corrupt heapsite capture: {what}"))
}

pub fn encode(capture: &Capture) -> Vec<u8> {
    let json = serde_json::to_vec(capture).expect("the model always serialises");
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(&json).expect("writing to memory");
    let payload = encoder.finish().expect("writing to memory");
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

pub fn decode(bytes: &[u8]) -> Result<Capture, CaptureError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        if MAGIC.starts_with(bytes) {
            return Err(CaptureError(format!(
                "truncated heapsite capture: {} bytes, not even a header",
                bytes.len()
            )));
        }
        return Err(CaptureError("not a heapsite capture file".into()));
    }
    if bytes.len() < HEADER {
        return Err(CaptureError(format!(
            "truncated heapsite capture: {} bytes, the header alone is {HEADER}",
            bytes.len()
        )));
    }
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let version = word(MAGIC.len());
    if version != FORMAT_VERSION {
        return Err(CaptureError(if version > FORMAT_VERSION {
            format!(
                "capture format {version} is newer than this heapsite reads ({FORMAT_VERSION}): upgrade heapsite"
            )
        } else {
            format!("unknown capture format {version}")
        }));
    }
    let length = u64::from_le_bytes(bytes[MAGIC.len() + 4..MAGIC.len() + 12].try_into().unwrap());
    let crc = word(MAGIC.len() + 12);
    let payload = &bytes[HEADER..];
    if (payload.len() as u64) < length {
        return Err(CaptureError(format!(
            "truncated heapsite capture: {} of {length} payload bytes",
            payload.len()
        )));
    }
    if payload.len() as u64 > length {
        return Err(corrupt(format!(
            "{} bytes after the payload",
            payload.len() as u64 - length
        )));
    }
    if crc32fast::hash(payload) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    let mut json = Vec::new();
    ZlibDecoder::new(payload)
        .take(MAX_PAYLOAD + 1)
        .read_to_end(&mut json)
        .map_err(|e| corrupt(format!("cannot inflate the payload ({e})")))?;
    if json.len() as u64 > MAX_PAYLOAD {
        return Err(corrupt("payload inflates beyond 4 GiB"));
    }
    let capture: Capture = serde_json::from_slice(&json).map_err(corrupt)?;
    capture.validate().map_err(corrupt)?;
    Ok(capture)
}

pub fn write(path: &Path, capture: &Capture) -> Result<(), CaptureError> {
    // Write beside and rename, so a reader never sees half a file.
    let partial = path.with_extension("partial");
    std::fs::write(&partial, encode(capture))
        .and_then(|()| std::fs::rename(&partial, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&partial);
            CaptureError(format!("cannot write {}: {e}", path.display()))
        })
}

pub fn read(path: &Path) -> Result<Capture, CaptureError> {
    let bytes = std::fs::read(path)
        .map_err(|e| CaptureError(format!("cannot read {}: {e}", path.display())))?;
    decode(&bytes).map_err(|e| CaptureError(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::sample;

    #[test]
    fn round_trip() {
        let capture = sample::capture();
        assert_eq!(decode(&encode(&capture)).unwrap(), capture);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = encode(&sample::capture());
        for len in 0..bytes.len() {
            let err = decode(&bytes[..len]).unwrap_err();
            assert!(
                err.0.contains("truncated") || err.0.contains("not a heapsite"),
                "{len}: {err}"
            );
        }
    }

    #[test]
    fn foreign_and_future_files() {
        assert_eq!(
            decode(b"PNG\x89 not ours").unwrap_err().0,
            "not a heapsite capture file"
        );
        let mut bytes = encode(&sample::capture());
        bytes[MAGIC.len()] = 9;
        assert!(decode(&bytes).unwrap_err().0.contains("newer"));
    }

    /// A small fuzzer: flip, overwrite and splice bytes at pseudo-random
    /// places; decoding must return Ok or a one-line error, never panic.
    #[test]
    fn mutated_files_never_panic() {
        let good = encode(&sample::capture());
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let mut bytes = good.clone();
            let edits = 1 + next() % 4;
            for _ in 0..edits {
                let at = (next() % bytes.len() as u64) as usize;
                match next() % 4 {
                    0 => bytes[at] ^= 1 << (next() % 8),
                    1 => bytes[at] = next() as u8,
                    2 => bytes.truncate(at),
                    _ => bytes.insert(at, next() as u8),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            if let Err(e) = decode(&bytes) {
                assert!(!e.0.contains('\n'), "round {round}: multi-line error {e}");
            }
        }
    }

    /// Payloads with a valid checksum but broken content: still an error.
    #[test]
    fn valid_checksum_bad_content() {
        let payload = |json: &str| {
            let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
            encoder.write_all(json.as_bytes()).unwrap();
            let payload = encoder.finish().unwrap();
            let mut out = MAGIC.to_vec();
            out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
            out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
            out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            out.extend_from_slice(&payload);
            out
        };
        assert!(decode(&payload("{}")).is_err());
        let mut capture = sample::capture();
        capture.sites[0].stack.push(99);
        let json = serde_json::to_string(&capture).unwrap();
        let err = decode(&payload(&json)).unwrap_err();
        assert!(err.0.contains("frame 99"), "{err}");
    }
}
