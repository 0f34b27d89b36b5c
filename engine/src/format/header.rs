//! The fixed 64-byte little-endian header at the start of every `.floe` file.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `b"FLOE\x00\r\n\x1a"` |
//! | 8 | 4 | format version (u32; 2 written, 1 and 2 read) |
//! | 12 | 4 | flags (u32, 0) |
//! | 16 | 8 | metadata offset |
//! | 24 | 8 | metadata length |
//! | 32 | 8 | metadata checksum (FNV-1a 64) |
//! | 40 | 8 | data section offset (64-byte aligned) |
//! | 48 | 8 | data section length |
//! | 56 | 8 | total file length |

use crate::error::{Error, Result};

pub const MAGIC: [u8; 8] = *b"FLOE\x00\r\n\x1a";
/// The format version this floe writes (and the newest it reads). Version 2 added
/// the [`TargetRecord`](super::metadata::TargetRecord) to the metadata, version 3
/// the stream spec of `floe convert --stream` to the model info; version 4 graphs
/// may hold ops older floes do not know (channels-last convs and pools), with the
/// metadata laid out as in version 3; version 5 stores `KnnAttention`'s
/// `query_prop_field_of_view` (version 4 files load with it off).
pub const FORMAT_VERSION: u32 = 5;
/// The oldest format version this floe still reads.
pub const MIN_FORMAT_VERSION: u32 = 1;
pub const HEADER_LEN: usize = 64;
/// Alignment of the data section and of every tensor in it.
pub const ALIGN: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub flags: u32,
    pub metadata_offset: u64,
    pub metadata_len: u64,
    pub metadata_checksum: u64,
    pub data_offset: u64,
    pub data_len: u64,
    pub file_len: u64,
}

/// FNV-1a, 64-bit: a fast checksum that catches corruption (not an authenticator).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Header {
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        for (i, v) in [
            self.metadata_offset,
            self.metadata_len,
            self.metadata_checksum,
            self.data_offset,
            self.data_len,
            self.file_len,
        ]
        .iter()
        .enumerate()
        {
            b[16 + 8 * i..24 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Parses and checks the header against the actual file length.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Header> {
        let bad = |m: String| Error::Invalid(format!("{what}: {m}"));
        if bytes.len() < HEADER_LEN {
            return Err(bad(format!("{} bytes is too short for a .floe file (header is {HEADER_LEN})", bytes.len())));
        }
        if bytes[0..8] != MAGIC {
            return Err(bad("not a .floe file (bad magic)".into()));
        }
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
        let version = u32_at(8);
        if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(bad(format!(
                "format version {version} is not supported: this floe reads version {FORMAT_VERSION} and \
                 older (down to {MIN_FORMAT_VERSION}){}",
                if version > FORMAT_VERSION { " (the file was written by a newer floe)" } else { "" }
            )));
        }
        let h = Header {
            version,
            flags: u32_at(12),
            metadata_offset: u64_at(16),
            metadata_len: u64_at(24),
            metadata_checksum: u64_at(32),
            data_offset: u64_at(40),
            data_len: u64_at(48),
            file_len: u64_at(56),
        };
        let len = bytes.len() as u64;
        if h.flags != 0 {
            return Err(bad(format!("unknown flags {:#x}", h.flags)));
        }
        if h.file_len != len {
            return Err(bad(format!("header says {} bytes but the file has {len} (truncated?)", h.file_len)));
        }
        let meta_end =
            h.metadata_offset.checked_add(h.metadata_len).ok_or_else(|| bad("metadata range overflows".into()))?;
        let data_end = h.data_offset.checked_add(h.data_len).ok_or_else(|| bad("data range overflows".into()))?;
        if h.metadata_offset < HEADER_LEN as u64 || meta_end > h.data_offset || data_end > len {
            return Err(bad(format!(
                "sections out of bounds: metadata {}..{meta_end}, data {}..{data_end}, file {len}",
                h.metadata_offset, h.data_offset
            )));
        }
        if !h.data_offset.is_multiple_of(ALIGN as u64) {
            return Err(bad(format!("data section offset {} is not {ALIGN}-byte aligned", h.data_offset)));
        }
        Ok(h)
    }
}
