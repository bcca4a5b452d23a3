//! OP_COMPRESSED compressors: noop, snappy, zlib and zstd (each behind its cargo feature).

use bytes::{BufMut, BytesMut};

use crate::WireError;

/// A compressor usable in OP_COMPRESSED.
///
/// `level`s only matter when encoding; decoded frames report `level: None`.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compressor {
    /// id 0: the payload is stored as is.
    Noop,
    /// id 1: snappy (raw block format). Feature `snappy`.
    Snappy,
    /// id 2: zlib (RFC 1950). Feature `zlib`.
    Zlib {
        /// 0..=9 (higher values are clamped to 9); `None` is zlib's default (6).
        level: Option<u32>,
    },
    /// id 3: zstd. Feature `zstd`.
    Zstd {
        /// zstd's level; `None` is zstd's default (3).
        level: Option<i32>,
    },
}

impl Compressor {
    /// The compressor id written in OP_COMPRESSED.
    pub fn id(&self) -> u8 {
        match self {
            Compressor::Noop => 0,
            Compressor::Snappy => 1,
            Compressor::Zlib { .. } => 2,
            Compressor::Zstd { .. } => 3,
        }
    }

    /// The name used in the handshake's `compression` list and in connection strings.
    pub fn name(&self) -> &'static str {
        match self {
            Compressor::Noop => "noop",
            Compressor::Snappy => "snappy",
            Compressor::Zlib { .. } => "zlib",
            Compressor::Zstd { .. } => "zstd",
        }
    }

    /// The compressor with this name (ASCII case-insensitive), at its default level.
    pub fn from_name(name: &str) -> Option<Compressor> {
        ["noop", "snappy", "zlib", "zstd"]
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
            .and_then(|i| Compressor::from_id(i as u8))
    }

    /// The compressor with this id, at its default level.
    pub fn from_id(id: u8) -> Option<Compressor> {
        match id {
            0 => Some(Compressor::Noop),
            1 => Some(Compressor::Snappy),
            2 => Some(Compressor::Zlib { level: None }),
            3 => Some(Compressor::Zstd { level: None }),
            _ => None,
        }
    }

    /// Whether this build can use the compressor (its cargo feature is on).
    pub fn is_available(&self) -> bool {
        match self {
            Compressor::Noop => true,
            Compressor::Snappy => cfg!(feature = "snappy"),
            Compressor::Zlib { .. } => cfg!(feature = "zlib"),
            Compressor::Zstd { .. } => cfg!(feature = "zstd"),
        }
    }

    /// Appends the compressed form of `src` to `dst`.
    pub(crate) fn compress_into(&self, src: &[u8], dst: &mut BytesMut) -> Result<(), WireError> {
        match *self {
            Compressor::Noop => {
                dst.put_slice(src);
                Ok(())
            }
            Compressor::Snappy => snappy_compress(src, dst),
            Compressor::Zlib { level } => zlib_compress(src, dst, level),
            Compressor::Zstd { level } => zstd_compress(src, dst, level),
        }
    }

    /// How much room to reserve for the output of `decompress_into`: the declared size when
    /// the format bounds it by the input (noop, snappy), otherwise (zlib, zstd) no more than
    /// a typical ratio of the input, so that a tiny frame declaring a huge size cannot make
    /// the decoder allocate it up front; the buffer grows as real output arrives.
    pub(crate) fn output_capacity(&self, compressed_len: usize, declared: usize) -> usize {
        match self {
            Compressor::Noop | Compressor::Snappy => declared,
            Compressor::Zlib { .. } | Compressor::Zstd { .. } => declared
                .min(compressed_len.saturating_mul(TYPICAL_RATIO))
                .saturating_add(1),
        }
    }

    /// Appends the decompression of `src` to `out`, producing at most `declared + 1` bytes,
    /// and checks that exactly `declared` bytes came out.
    pub(crate) fn decompress_into(
        &self,
        src: &[u8],
        declared: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), WireError> {
        let before = out.len();
        match self {
            Compressor::Noop => {
                // Never copy more than the cap, whatever the payload's size.
                let cap = declared.saturating_add(1).min(src.len());
                out.extend_from_slice(src.get(..cap).unwrap_or_default());
            }
            Compressor::Snappy => snappy_decompress(src, declared, out)?,
            Compressor::Zlib { .. } => zlib_decompress(src, declared, out)?,
            Compressor::Zstd { .. } => zstd_decompress(src, declared, out)?,
        }
        let actual = out.len().saturating_sub(before);
        if actual != declared {
            return Err(WireError::UncompressedSizeMismatch { declared, actual });
        }
        Ok(())
    }
}

/// Initial output reservation, as a multiple of the input, for zlib and zstd.
const TYPICAL_RATIO: usize = 16;

/// The most output a snappy block can produce per input byte: a 3-byte copy emits at most
/// 64 bytes.
#[cfg(feature = "snappy")]
const SNAPPY_MAX_RATIO: usize = 22;

/// Whether a command may be sent compressed. The handshake and authentication commands must
/// not be (OP_COMPRESSED spec): `hello`, `isMaster`/`ismaster`, `saslStart`,
/// `saslContinue`, `getnonce`, `authenticate`, `createUser`, `updateUser`,
/// `copydbSaslStart`, `copydbgetnonce` and `copydb`.
///
/// [`Message::encode`](crate::Message::encode) compresses whatever it is asked to; callers
/// check this (or [`Message::may_compress`](crate::Message::may_compress)) first.
pub fn may_compress(command_name: &str) -> bool {
    const NEVER: [&str; 10] = [
        "hello",
        "saslStart",
        "saslContinue",
        "getnonce",
        "authenticate",
        "createUser",
        "updateUser",
        "copydbSaslStart",
        "copydbgetnonce",
        "copydb",
    ];
    !(command_name.eq_ignore_ascii_case("ismaster") || NEVER.contains(&command_name))
}

#[cfg(feature = "snappy")]
fn snappy_compress(src: &[u8], dst: &mut BytesMut) -> Result<(), WireError> {
    let start = dst.len();
    let bound = snap::raw::max_compress_len(src.len());
    if bound == 0 {
        return Err(WireError::Compression("input too large for snappy".into()));
    }
    dst.resize(start + bound, 0);
    let written = {
        let out = dst.get_mut(start..).unwrap_or_default();
        snap::raw::Encoder::new().compress(src, out)
    };
    match written {
        Ok(n) => {
            dst.truncate(start + n);
            Ok(())
        }
        Err(e) => {
            dst.truncate(start);
            Err(WireError::Compression(e.to_string()))
        }
    }
}

#[cfg(not(feature = "snappy"))]
fn snappy_compress(_: &[u8], _: &mut BytesMut) -> Result<(), WireError> {
    Err(WireError::CompressorDisabled("snappy"))
}

#[cfg(feature = "snappy")]
fn snappy_decompress(src: &[u8], declared: usize, out: &mut Vec<u8>) -> Result<(), WireError> {
    // The snappy block starts with its own uncompressed length: check it against the declared
    // one before allocating anything for it.
    let inner =
        snap::raw::decompress_len(src).map_err(|e| WireError::Decompression(e.to_string()))?;
    if inner != declared {
        return Err(WireError::UncompressedSizeMismatch {
            declared,
            actual: inner,
        });
    }
    if declared > src.len().saturating_mul(SNAPPY_MAX_RATIO) {
        return Err(WireError::Decompression(format!(
            "a {}-byte snappy block cannot produce {declared} bytes",
            src.len()
        )));
    }
    let start = out.len();
    out.resize(start + declared, 0);
    let result = {
        let dst = out.get_mut(start..).unwrap_or_default();
        snap::raw::Decoder::new().decompress(src, dst)
    };
    match result {
        Ok(n) => {
            out.truncate(start + n);
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(WireError::Decompression(e.to_string()))
        }
    }
}

#[cfg(not(feature = "snappy"))]
fn snappy_decompress(_: &[u8], _: usize, _: &mut Vec<u8>) -> Result<(), WireError> {
    Err(WireError::CompressorDisabled("snappy"))
}

#[cfg(feature = "zlib")]
fn zlib_compress(src: &[u8], dst: &mut BytesMut, level: Option<u32>) -> Result<(), WireError> {
    use std::io::Write;
    let level = level.map_or(flate2::Compression::default(), |l| {
        flate2::Compression::new(l.min(9))
    });
    let start = dst.len();
    let result = {
        let mut enc = flate2::write::ZlibEncoder::new((&mut *dst).writer(), level);
        enc.write_all(src).and_then(|()| enc.finish().map(drop))
    };
    result.map_err(|e| {
        dst.truncate(start);
        WireError::Compression(e.to_string())
    })
}

#[cfg(not(feature = "zlib"))]
fn zlib_compress(_: &[u8], _: &mut BytesMut, _: Option<u32>) -> Result<(), WireError> {
    Err(WireError::CompressorDisabled("zlib"))
}

/// Reads `reader` to its end into `out`, stopping after `declared + 1` bytes.
#[cfg(any(feature = "zlib", feature = "zstd"))]
fn read_capped(
    reader: impl std::io::Read,
    declared: usize,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    use std::io::Read;
    let cap = u64::try_from(declared)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    reader
        .take(cap)
        .read_to_end(out)
        .map(drop)
        .map_err(|e| WireError::Decompression(e.to_string()))
}

#[cfg(feature = "zlib")]
fn zlib_decompress(src: &[u8], declared: usize, out: &mut Vec<u8>) -> Result<(), WireError> {
    read_capped(flate2::bufread::ZlibDecoder::new(src), declared, out)
}

#[cfg(not(feature = "zlib"))]
fn zlib_decompress(_: &[u8], _: usize, _: &mut Vec<u8>) -> Result<(), WireError> {
    Err(WireError::CompressorDisabled("zlib"))
}

#[cfg(feature = "zstd")]
fn zstd_compress(src: &[u8], dst: &mut BytesMut, level: Option<i32>) -> Result<(), WireError> {
    let start = dst.len();
    let bound = zstd::zstd_safe::compress_bound(src.len());
    dst.resize(start + bound, 0);
    let written = {
        let out = dst.get_mut(start..).unwrap_or_default();
        zstd::bulk::compress_to_buffer(src, out, level.unwrap_or(0))
    };
    match written {
        Ok(n) => {
            dst.truncate(start + n);
            Ok(())
        }
        Err(e) => {
            dst.truncate(start);
            Err(WireError::Compression(e.to_string()))
        }
    }
}

#[cfg(not(feature = "zstd"))]
fn zstd_compress(_: &[u8], _: &mut BytesMut, _: Option<i32>) -> Result<(), WireError> {
    Err(WireError::CompressorDisabled("zstd"))
}

#[cfg(feature = "zstd")]
fn zstd_decompress(src: &[u8], declared: usize, out: &mut Vec<u8>) -> Result<(), WireError> {
    let decoder = zstd::stream::read::Decoder::with_buffer(src)
        .map_err(|e| WireError::Decompression(e.to_string()))?;
    read_capped(decoder, declared, out)
}

#[cfg(not(feature = "zstd"))]
fn zstd_decompress(_: &[u8], _: usize, _: &mut Vec<u8>) -> Result<(), WireError> {
    Err(WireError::CompressorDisabled("zstd"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names() {
        for id in 0..4u8 {
            let c = Compressor::from_id(id).unwrap();
            assert_eq!(c.id(), id);
            assert_eq!(Compressor::from_name(c.name()), Some(c));
        }
        assert_eq!(Compressor::from_id(4), None);
        assert_eq!(
            Compressor::from_name("ZLIB"),
            Some(Compressor::Zlib { level: None })
        );
        assert_eq!(Compressor::from_name("lz4"), None);
        assert!(Compressor::Noop.is_available());
    }

    #[test]
    fn may_compress_excludes_handshake_and_auth() {
        for name in [
            "hello",
            "isMaster",
            "ismaster",
            "saslStart",
            "saslContinue",
            "getnonce",
            "authenticate",
            "createUser",
            "updateUser",
            "copydbSaslStart",
            "copydbgetnonce",
            "copydb",
        ] {
            assert!(!may_compress(name), "{name}");
        }
        for name in [
            "find",
            "aggregate",
            "getMore",
            "insert",
            "ping",
            "killCursors",
        ] {
            assert!(may_compress(name), "{name}");
        }
    }

    fn round_trip(c: Compressor) {
        let src: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut compressed = BytesMut::new();
        c.compress_into(&src, &mut compressed).unwrap();
        let mut out = vec![1, 2, 3];
        c.decompress_into(&compressed, src.len(), &mut out).unwrap();
        assert_eq!(&out[..3], &[1, 2, 3]);
        assert_eq!(&out[3..], &src[..]);
        // Declaring one byte fewer than the payload holds is a mismatch, not a bigger buffer.
        let mut out = Vec::new();
        let err = c
            .decompress_into(&compressed, src.len() - 1, &mut out)
            .unwrap_err();
        assert!(
            matches!(err, WireError::UncompressedSizeMismatch { declared, .. } if declared == src.len() - 1),
            "{err:?}"
        );
        assert!(out.len() <= src.len());
    }

    #[test]
    fn noop_round_trip() {
        round_trip(Compressor::Noop);
    }

    #[cfg(feature = "snappy")]
    #[test]
    fn snappy_round_trip() {
        round_trip(Compressor::Snappy);
    }

    #[cfg(feature = "zlib")]
    #[test]
    fn zlib_round_trip() {
        round_trip(Compressor::Zlib { level: None });
        round_trip(Compressor::Zlib { level: Some(9) });
        round_trip(Compressor::Zlib { level: Some(42) });
    }

    #[cfg(feature = "zstd")]
    #[test]
    fn zstd_round_trip() {
        round_trip(Compressor::Zstd { level: None });
        round_trip(Compressor::Zstd { level: Some(19) });
    }

    #[cfg(feature = "snappy")]
    #[test]
    fn snappy_block_too_short_for_its_length_is_refused_before_allocating() {
        // Preamble says 1_000_000 bytes; 8 bytes of input can never produce that.
        let block = [0xc0, 0x84, 0x3d, 0, 0, 0, 0, 0];
        assert_eq!(snap::raw::decompress_len(&block).unwrap(), 1_000_000);
        let mut out = Vec::new();
        let err = Compressor::Snappy
            .decompress_into(&block, 1_000_000, &mut out)
            .unwrap_err();
        assert!(matches!(err, WireError::Decompression(_)), "{err:?}");
        assert_eq!(out.capacity(), 0);
    }

    #[test]
    fn output_capacity_is_bounded_by_input_for_stream_formats() {
        let zlib = Compressor::Zlib { level: None };
        assert_eq!(zlib.output_capacity(10, 48_000_000), 161);
        assert_eq!(zlib.output_capacity(10_000, 100), 101);
        assert_eq!(Compressor::Noop.output_capacity(10, 10), 10);
    }

    #[test]
    fn garbage_is_a_decompression_error() {
        let garbage = [0xffu8; 32];
        for c in [
            Compressor::Snappy,
            Compressor::Zlib { level: None },
            Compressor::Zstd { level: None },
        ] {
            if !c.is_available() {
                continue;
            }
            let err = c
                .decompress_into(&garbage, 100, &mut Vec::new())
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    WireError::Decompression(_) | WireError::UncompressedSizeMismatch { .. }
                ),
                "{c:?}: {err:?}"
            );
        }
    }
}
