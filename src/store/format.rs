//! The bytes of one entry file, and everything that can be wrong with them.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "IRTS"
//!      4     2  format version (u16 LE), this build reads and writes 1
//!      6     2  flags (u16 LE): bit 0 = payload is raw deflate; other bits must be 0
//!      8     4  header length H (u32 LE), at most 64 KiB
//!     12     8  stored payload length P (u64 LE), P <= R
//!     20     8  raw payload length R (u64 LE), at most 1 GiB; R == P when not compressed
//!     28    32  SHA-256 of bytes 0..28, the header and the stored payload
//!     60     H  header: JSON {"key": {...}, "meta": {...}}
//!   60+H     P  payload: JSON array of tag strings, deflated when R > 4 KiB and it helps
//! ```
//!
//! The header names the key, so a file found under another key's name is refused. The
//! checksum covers every byte except itself, so a flipped bit anywhere is caught.
//!
//! Fields added to the header's `meta` since version 1 (`pull_secrets`) are optional and
//! left out when empty: files without them still read, and files without such values are
//! byte for byte what earlier builds wrote, so the version stays 1.

use std::fmt;
use std::io::{self, Read};

use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Entry, EntryMeta, ObjectKey, StoreError};

const MAGIC: [u8; 4] = *b"IRTS";
pub(super) const VERSION: u16 = 1;
const FLAG_DEFLATE: u16 = 1;
const FIXED_LEN: usize = 28;
pub(super) const PREFIX_LEN: usize = FIXED_LEN + 32;
/// Payloads larger than this are deflated (when that makes them smaller).
pub(super) const COMPRESS_ABOVE: usize = 4096;
const MAX_HEADER_LEN: u32 = 64 * 1024;
const MAX_RAW_LEN: u64 = 1 << 30;

/// What an entry file says about itself before the tags.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Header {
    pub key: ObjectKey,
    pub meta: EntryMeta,
}

/// Why an entry file cannot be trusted. The store logs it, removes the file and treats
/// the object as never scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Corruption {
    Empty,
    ShorterThanPrefix { len: u64 },
    BadMagic { found: [u8; 4] },
    UnknownVersion { found: u16 },
    UnknownFlags { flags: u16 },
    ImplausibleLengths { header: u32, payload: u64, raw: u64 },
    Truncated { expected: u64, actual: u64 },
    ShrankWhileReading,
    TrailingBytes { expected: u64, actual: u64 },
    ChecksumMismatch { recorded: String, computed: String },
    BadHeader { reason: String },
    WrongKey { file_is_for: String },
    BadPayload { reason: String },
    TagCountMismatch { header: u64, payload: u64 },
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "the file is empty"),
            Self::ShorterThanPrefix { len } => write!(
                f,
                "truncated: {len} bytes, shorter than the {PREFIX_LEN}-byte fixed header"
            ),
            Self::BadMagic { found } => write!(
                f,
                "not a tag store entry: starts with {found:02x?}, expected \"IRTS\""
            ),
            Self::UnknownVersion { found } => write!(
                f,
                "unknown format version {found}; this build reads version {VERSION}"
            ),
            Self::UnknownFlags { flags } => write!(f, "unknown flags {flags:#06x}"),
            Self::ImplausibleLengths {
                header,
                payload,
                raw,
            } => write!(
                f,
                "implausible lengths: header {header}, stored payload {payload}, raw payload {raw}"
            ),
            Self::Truncated { expected, actual } => {
                write!(
                    f,
                    "truncated: {actual} bytes, the header promises {expected}"
                )
            }
            Self::ShrankWhileReading => write!(f, "truncated: the file shrank while being read"),
            Self::TrailingBytes { expected, actual } => write!(
                f,
                "{actual} bytes, the header promises {expected}: trailing bytes"
            ),
            Self::ChecksumMismatch { recorded, computed } => write!(
                f,
                "checksum mismatch: recorded sha256 {recorded}, computed {computed}"
            ),
            Self::BadHeader { reason } => write!(f, "unreadable header: {reason}"),
            Self::WrongKey { file_is_for } => write!(
                f,
                "the file is named for another object; its header says {file_is_for}"
            ),
            Self::BadPayload { reason } => write!(f, "unreadable tags: {reason}"),
            Self::TagCountMismatch { header, payload } => write!(
                f,
                "the header counts {header} tags, the payload holds {payload}"
            ),
        }
    }
}

/// Reading an entry fails either because the file is bad or because the disk is.
#[derive(Debug)]
pub(crate) enum ReadFailure {
    Corrupt(Corruption),
    Io(io::Error),
}

impl From<Corruption> for ReadFailure {
    fn from(c: Corruption) -> Self {
        Self::Corrupt(c)
    }
}

impl From<io::Error> for ReadFailure {
    fn from(e: io::Error) -> Self {
        // The file shrank under us between stat and read: that is a truncation.
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Self::Corrupt(Corruption::ShrankWhileReading)
        } else {
            Self::Io(e)
        }
    }
}

/// The fixed-size start of a file, validated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prefix {
    deflated: bool,
    header_len: u32,
    payload_len: u64,
    raw_len: u64,
}

/// Serialises an entry into the complete bytes of its file, refusing one this format
/// (or a later read) would not accept.
pub(crate) fn encode(key: &ObjectKey, entry: &Entry) -> Result<Vec<u8>, StoreError> {
    let header = serde_json::to_vec(&HeaderRef {
        key,
        meta: &entry.meta,
    })
    .map_err(|source| StoreError::Encode {
        key: key.to_string(),
        source,
    })?;
    let header_len = u32::try_from(header.len())
        .ok()
        .filter(|len| *len <= MAX_HEADER_LEN)
        .ok_or_else(|| StoreError::TooLarge {
            key: key.to_string(),
            what: "metadata (uid, image name, revision, spec fingerprint) in JSON",
            len: header.len() as u64,
            max: u64::from(MAX_HEADER_LEN),
        })?;
    let raw = serde_json::to_vec(&entry.tags).map_err(|source| StoreError::Encode {
        key: key.to_string(),
        source,
    })?;
    if raw.len() as u64 > MAX_RAW_LEN {
        return Err(StoreError::TooLarge {
            key: key.to_string(),
            what: "tag list in JSON",
            len: raw.len() as u64,
            max: MAX_RAW_LEN,
        });
    }
    let (flags, payload) = if raw.len() > COMPRESS_ABOVE {
        match deflate(&raw) {
            Some(compressed) if compressed.len() < raw.len() => (FLAG_DEFLATE, compressed),
            _ => (0, raw.clone()),
        }
    } else {
        (0, raw.clone())
    };
    let mut out = Vec::with_capacity(PREFIX_LEN + header.len() + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&(raw.len() as u64).to_le_bytes());
    let mut hasher = Sha256::new();
    hasher.update(&out[..FIXED_LEN]);
    hasher.update(&header);
    hasher.update(&payload);
    out.extend_from_slice(&hasher.finalize());
    out.extend_from_slice(&header);
    out.extend_from_slice(&payload);
    Ok(out)
}

#[derive(Serialize)]
struct HeaderRef<'a> {
    key: &'a ObjectKey,
    meta: &'a EntryMeta,
}

fn deflate(raw: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut encoder = DeflateEncoder::new(Vec::with_capacity(raw.len() / 4), Compression::fast());
    encoder.write_all(raw).ok()?;
    encoder.finish().ok()
}

/// Reads and verifies a whole file of `file_len` bytes from `r`: fixed prefix, header,
/// payload, checksum. The stored payload is kept only when `keep_payload` (reading tags);
/// otherwise it is streamed through the hash with a fixed buffer (opening the store).
pub(crate) fn read_verified(
    r: &mut impl Read,
    file_len: u64,
    keep_payload: bool,
) -> Result<(Header, Prefix, Option<Vec<u8>>), ReadFailure> {
    if file_len == 0 {
        return Err(Corruption::Empty.into());
    }
    if file_len < PREFIX_LEN as u64 {
        return Err(Corruption::ShorterThanPrefix { len: file_len }.into());
    }
    let mut fixed = [0u8; PREFIX_LEN];
    r.read_exact(&mut fixed)?;
    let prefix = parse_prefix(&fixed)?;
    let expected = PREFIX_LEN as u64 + u64::from(prefix.header_len) + prefix.payload_len;
    if file_len < expected {
        return Err(Corruption::Truncated {
            expected,
            actual: file_len,
        }
        .into());
    }
    if file_len > expected {
        return Err(Corruption::TrailingBytes {
            expected,
            actual: file_len,
        }
        .into());
    }
    let mut hasher = Sha256::new();
    hasher.update(&fixed[..FIXED_LEN]);
    let mut header = vec![0u8; prefix.header_len as usize];
    r.read_exact(&mut header)?;
    hasher.update(&header);
    let payload = if keep_payload {
        // payload_len <= file_len, which was read from the file system: safe to allocate.
        let mut payload = vec![0u8; usize::try_from(prefix.payload_len).unwrap_or(usize::MAX)];
        r.read_exact(&mut payload)?;
        hasher.update(&payload);
        Some(payload)
    } else {
        let mut left = prefix.payload_len;
        let mut buf = [0u8; 64 * 1024];
        while left > 0 {
            let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            r.read_exact(&mut buf[..want])?;
            hasher.update(&buf[..want]);
            left -= want as u64;
        }
        None
    };
    let computed = hasher.finalize();
    if computed.as_slice() != &fixed[FIXED_LEN..PREFIX_LEN] {
        return Err(Corruption::ChecksumMismatch {
            recorded: hex::encode(&fixed[FIXED_LEN..PREFIX_LEN]),
            computed: hex::encode(computed),
        }
        .into());
    }
    let header: Header = serde_json::from_slice(&header).map_err(|e| Corruption::BadHeader {
        reason: e.to_string(),
    })?;
    Ok((header, prefix, payload))
}

fn parse_prefix(fixed: &[u8; PREFIX_LEN]) -> Result<Prefix, Corruption> {
    let magic = [fixed[0], fixed[1], fixed[2], fixed[3]];
    if magic != MAGIC {
        return Err(Corruption::BadMagic { found: magic });
    }
    let version = u16::from_le_bytes([fixed[4], fixed[5]]);
    if version != VERSION {
        return Err(Corruption::UnknownVersion { found: version });
    }
    let flags = u16::from_le_bytes([fixed[6], fixed[7]]);
    if flags & !FLAG_DEFLATE != 0 {
        return Err(Corruption::UnknownFlags { flags });
    }
    let header_len = u32::from_le_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]);
    let mut word = [0u8; 8];
    word.copy_from_slice(&fixed[12..20]);
    let payload_len = u64::from_le_bytes(word);
    word.copy_from_slice(&fixed[20..28]);
    let raw_len = u64::from_le_bytes(word);
    let deflated = flags & FLAG_DEFLATE != 0;
    let plausible = header_len <= MAX_HEADER_LEN
        && raw_len <= MAX_RAW_LEN
        && payload_len <= raw_len
        && (deflated || payload_len == raw_len);
    if !plausible {
        return Err(Corruption::ImplausibleLengths {
            header: header_len,
            payload: payload_len,
            raw: raw_len,
        });
    }
    Ok(Prefix {
        deflated,
        header_len,
        payload_len,
        raw_len,
    })
}

/// Reads, verifies and decodes a whole file of `file_len` bytes: what
/// [`TagStore::get`](super::TagStore::get) returns for it. With `key`, a file whose header
/// names another object is refused before its tags are decoded.
pub(crate) fn read_entry(
    r: &mut impl Read,
    file_len: u64,
    key: Option<&ObjectKey>,
) -> Result<(ObjectKey, Entry), ReadFailure> {
    let (header, prefix, payload) = read_verified(r, file_len, true)?;
    if let Some(key) = key
        && header.key != *key
    {
        return Err(Corruption::WrongKey {
            file_is_for: header.key.to_string(),
        }
        .into());
    }
    let tags = decode_tags(prefix, payload.unwrap_or_default(), header.meta.tag_count)?;
    Ok((
        header.key,
        Entry {
            meta: header.meta,
            tags,
        },
    ))
}

/// Turns a verified stored payload back into tags, checking the counts agree.
fn decode_tags(
    prefix: Prefix,
    stored: Vec<u8>,
    expected_count: u64,
) -> Result<Vec<String>, Corruption> {
    let raw = if prefix.deflated {
        // raw_len is only what the file claims (up to MAX_RAW_LEN): reserve no more than the
        // stored bytes can plausibly inflate to, and let the vector grow past that. Read one
        // byte more than promised to notice a longer stream.
        let mut raw = Vec::with_capacity(inflate_reservation(prefix.raw_len, stored.len()));
        DeflateDecoder::new(stored.as_slice())
            .take(prefix.raw_len + 1)
            .read_to_end(&mut raw)
            .map_err(|e| Corruption::BadPayload {
                reason: format!("deflate: {e}"),
            })?;
        if raw.len() as u64 != prefix.raw_len {
            return Err(Corruption::BadPayload {
                reason: format!(
                    "inflates to {} bytes, the header promises {}",
                    raw.len(),
                    prefix.raw_len
                ),
            });
        }
        raw
    } else {
        stored
    };
    let tags: Vec<String> = serde_json::from_slice(&raw).map_err(|e| Corruption::BadPayload {
        reason: e.to_string(),
    })?;
    if tags.len() as u64 != expected_count {
        return Err(Corruption::TagCountMismatch {
            header: expected_count,
            payload: tags.len() as u64,
        });
    }
    Ok(tags)
}

/// The bytes reserved before inflating `stored_len` bytes that claim to inflate to
/// `raw_len`: the claim, but at most eight times the stored size (tag lists deflate about
/// 5:1), so a forged length costs no memory the payload cannot fill.
pub(super) fn inflate_reservation(raw_len: u64, stored_len: usize) -> usize {
    usize::try_from(raw_len)
        .unwrap_or(usize::MAX)
        .min(stored_len.saturating_mul(8))
}

/// Reads the flags field of an encoded file (tests: was it compressed?).
#[cfg(test)]
pub(super) fn is_deflated(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && u16::from_le_bytes([bytes[6], bytes[7]]) & FLAG_DEFLATE != 0
}

/// Recomputes the checksum of an encoded file in place (tests and fuzzing: forge a file
/// whose only fault is the one under test). Shorter than the fixed prefix: unchanged.
pub(crate) fn reseal(bytes: &mut [u8]) {
    if bytes.len() < PREFIX_LEN {
        return;
    }
    let mut hasher = Sha256::new();
    hasher.update(&bytes[..FIXED_LEN]);
    hasher.update(&bytes[PREFIX_LEN..]);
    let sum = hasher.finalize();
    bytes[FIXED_LEN..PREFIX_LEN].copy_from_slice(&sum);
}
