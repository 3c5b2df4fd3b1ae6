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
/// A stored payload larger than this is not one heapsite wrote; refused
/// before it is read (the file may be a device that never ends).
const MAX_STORED: u64 = 1 << 30;
/// How far a payload may inflate: heapsite's JSON compresses 20-40 times
/// (deep recursive stacks the most), so a payload inflating further (up to
/// deflate's 1032 times: a decompression bomb) is refused. The JSON is
/// parsed as it inflates, never held whole, so memory stays that of the
/// capture read.
const MAX_RATIO: u64 = 256;
const MIN_INFLATE_LIMIT: u64 = 64 << 20;

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
    // The JSON goes straight into the compressor: written out whole first,
    // it was most of what a capture at exit added to a program's peak
    // (about 250 bytes a site at 16 frames, twice over as the Vec grew).
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
    let mut json = std::io::BufWriter::new(&mut encoder);
    serde_json::to_writer(&mut json, capture).expect("the model always serialises");
    json.flush().expect("writing to memory");
    drop(json);
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
    let json = std::io::BufReader::new(Inflating {
        decoder: ZlibDecoder::new(payload),
        left: inflate_limit(length),
    });
    let capture: Capture = serde_json::from_reader(json).map_err(corrupt)?;
    capture.validate().map_err(corrupt)?;
    Ok(capture)
}

pub fn write(path: &Path, capture: &Capture) -> Result<(), CaptureError> {
    crate::report::output::write(path, &encode(capture)).map_err(CaptureError)
}

/// The payload's JSON as it inflates; an error once past the limit.
struct Inflating<'a> {
    decoder: ZlibDecoder<&'a [u8]>,
    left: u64,
}

impl Read for Inflating<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.decoder.read(buf).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot inflate the payload ({e})"))
        })?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            std::io::Error::other("the payload inflates further than any capture of its size")
        })?;
        Ok(n)
    }
}

/// The most JSON a payload of `stored` bytes may inflate to.
fn inflate_limit(stored: u64) -> u64 {
    MIN_INFLATE_LIMIT.max(stored.saturating_mul(MAX_RATIO))
}

/// The header, then no more than the payload length it states (and one byte
/// to tell trailing bytes): a device, a FIFO or a huge foreign file is never
/// read whole.
fn read_bounded(path: &Path) -> Result<Vec<u8>, CaptureError> {
    let cannot = |e: std::io::Error| CaptureError(format!("cannot read {}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(cannot)?;
    let mut bytes = Vec::new();
    (&mut file)
        .take(HEADER as u64)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() < HEADER || !bytes.starts_with(MAGIC) {
        return Ok(bytes);
    }
    let at = MAGIC.len() + 4;
    let length = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    if length > MAX_STORED {
        return Err(CaptureError(format!(
            "{}: corrupt heapsite capture: a payload of {length} bytes, more than heapsite writes",
            path.display()
        )));
    }
    file.take(length + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    Ok(bytes)
}

pub fn read(path: &Path) -> Result<Capture, CaptureError> {
    let bytes = read_bounded(path)?;
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

    /// A small payload inflating far (a decompression bomb) is refused as it
    /// inflates, not after.
    #[test]
    fn decompression_bombs_are_refused() {
        let mut encoder = ZlibEncoder::new(Vec::new(), Compression::best());
        let spaces = vec![b' '; 1 << 20];
        for _ in 0..(MIN_INFLATE_LIMIT >> 20) + 1 {
            encoder.write_all(&spaces).unwrap();
        }
        let payload = encoder.finish().unwrap();
        assert!(inflate_limit(payload.len() as u64) == MIN_INFLATE_LIMIT);
        let err = decode(&container(&payload)).unwrap_err();
        assert!(err.0.contains("inflates further"), "{err}");
    }

    /// A capture file around a (compressed) payload, its header right.
    fn container(payload: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// Payloads with a valid checksum but broken content: still an error.
    #[test]
    fn valid_checksum_bad_content() {
        let payload = |json: &str| {
            let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
            encoder.write_all(json.as_bytes()).unwrap();
            container(&encoder.finish().unwrap())
        };
        assert!(decode(&payload("{}")).is_err());
        let mut capture = sample::capture();
        capture.sites[0].stack.push(99);
        let json = serde_json::to_string(&capture).unwrap();
        let err = decode(&payload(&json)).unwrap_err();
        assert!(err.0.contains("frame 99"), "{err}");
    }
}
