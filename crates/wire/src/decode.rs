//! The decoder: one frame off the front of a growing buffer.

use bytes::{Bytes, BytesMut};

use crate::compress::Compressor;
use crate::doc::MIN_DOC_LEN;
use crate::header::{MsgFlags, MsgHeader, OpCode, read_i32, read_u32};
use crate::message::{CHECKSUM_LEN, COMPRESSED_PREFIX_LEN, MSG_PREFIX_LEN};
use crate::{DEFAULT_MAX_MESSAGE_SIZE, DocumentSequence, Message, SharedDoc, WireError};

/// Limits enforced while decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// The largest frame accepted, header included; also bounds the declared uncompressed
    /// size of OP_COMPRESSED frames (plus the 16-byte header).
    pub max_message_size: usize,
}

impl DecodeLimits {
    /// Limits with this maximum message size.
    pub const fn new(max_message_size: usize) -> Self {
        DecodeLimits { max_message_size }
    }
}

impl Default for DecodeLimits {
    /// [`DEFAULT_MAX_MESSAGE_SIZE`].
    fn default() -> Self {
        DecodeLimits {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The header as it came off the wire (for an OP_COMPRESSED frame: the outer header, with
    /// opcode 2012 and the compressed frame's length).
    pub header: MsgHeader,
    /// The OP_MSG (decompressed if it came in OP_COMPRESSED).
    pub message: Message,
    /// The compressor of an OP_COMPRESSED frame (levels are `None`), or `None`.
    pub compressor: Option<Compressor>,
}

/// Decodes one frame from the front of `buf`.
///
/// * `Ok(None)`: the frame is not complete yet; `buf` is untouched. Read more and call again.
/// * `Ok(Some(_))`: the frame's bytes have been split off the front of `buf` (no copy:
///   `split_to` + `freeze`), and its documents are slices of them (or of the one
///   decompressed buffer, for OP_COMPRESSED).
/// * `Err(_)`: the stream is corrupt and the connection should be dropped. Errors found in
///   the first 16 bytes (length, opcode) leave `buf` untouched; later ones consume the frame.
///
/// A declared length that is negative, below 16 or beyond `limits.max_message_size` is
/// refused as soon as its 4 bytes are present, before anything is allocated for it; so is an
/// opcode other than OP_MSG or OP_COMPRESSED as soon as the 16-byte header is present.
pub fn decode(buf: &mut BytesMut, limits: &DecodeLimits) -> Result<Option<Decoded>, WireError> {
    let Some(declared) = read_i32(buf, 0) else {
        return Ok(None);
    };
    let len = usize::try_from(declared)
        .map_err(|_| WireError::NegativeMessageLength { len: declared })?;
    if len < MsgHeader::LEN {
        return Err(WireError::MessageTooShort { len });
    }
    if len > limits.max_message_size {
        return Err(WireError::MessageTooLarge {
            len,
            max: limits.max_message_size,
        });
    }
    if let Some(op) = read_i32(buf, 12)
        && op != OpCode::Msg.as_i32()
        && op != OpCode::Compressed.as_i32()
    {
        return Err(WireError::UnsupportedOpCode(op));
    }
    if buf.len() < len {
        return Ok(None);
    }
    let frame = buf.split_to(len).freeze();
    decode_frame(frame, limits).map(Some)
}

/// Decodes one complete frame whose length and opcode `decode` has checked.
fn decode_frame(frame: Bytes, limits: &DecodeLimits) -> Result<Decoded, WireError> {
    let header = MsgHeader::parse(&frame).ok_or(WireError::MessageTooShort { len: frame.len() })?;
    if header.op_code == OpCode::Compressed.as_i32() {
        let (compressor, inner) = decompress_frame(&header, &frame, limits)?;
        let message = parse_msg(&header, inner)?;
        Ok(Decoded {
            header,
            message,
            compressor: Some(compressor),
        })
    } else if header.op_code == OpCode::Msg.as_i32() {
        let message = parse_msg(&header, frame)?;
        Ok(Decoded {
            header,
            message,
            compressor: None,
        })
    } else {
        Err(WireError::UnsupportedOpCode(header.op_code))
    }
}

/// Unwraps an OP_COMPRESSED frame into the OP_MSG it carries, header included (rebuilt with
/// the uncompressed length and opcode 2013, so that a checksum can be verified over it).
fn decompress_frame(
    header: &MsgHeader,
    frame: &[u8],
    limits: &DecodeLimits,
) -> Result<(Compressor, Bytes), WireError> {
    let too_short = WireError::CompressedFrameTooShort { len: frame.len() };
    let original = read_i32(frame, MsgHeader::LEN).ok_or_else(|| too_short.clone())?;
    let declared = read_i32(frame, MsgHeader::LEN + 4).ok_or_else(|| too_short.clone())?;
    let id = *frame.get(MsgHeader::LEN + 8).ok_or(too_short)?;
    if original != OpCode::Msg.as_i32() {
        return Err(WireError::CompressedOpCodeInvalid(original));
    }
    let declared =
        usize::try_from(declared).map_err(|_| WireError::UncompressedSizeNegative(declared))?;
    let max = limits.max_message_size;
    let total = declared
        .checked_add(MsgHeader::LEN)
        .filter(|t| *t <= max)
        .ok_or(WireError::UncompressedSizeTooLarge {
            size: declared.saturating_add(MsgHeader::LEN),
            max,
        })?;
    let total_i32 = i32::try_from(total)
        .map_err(|_| WireError::UncompressedSizeTooLarge { size: total, max })?;
    let compressor = Compressor::from_id(id).ok_or(WireError::UnknownCompressor(id))?;
    if !compressor.is_available() {
        return Err(WireError::CompressorDisabled(compressor.name()));
    }
    let payload = frame
        .get(MsgHeader::LEN + COMPRESSED_PREFIX_LEN..)
        .unwrap_or_default();
    if compressor == Compressor::Noop && payload.len() != declared {
        return Err(WireError::UncompressedSizeMismatch {
            declared,
            actual: payload.len(),
        });
    }
    let capacity = MsgHeader::LEN + compressor.output_capacity(payload.len(), declared);
    let mut out = Vec::with_capacity(capacity);
    let inner_header = MsgHeader {
        message_length: total_i32,
        request_id: header.request_id,
        response_to: header.response_to,
        op_code: OpCode::Msg.as_i32(),
    };
    out.extend_from_slice(&inner_header.to_bytes());
    compressor.decompress_into(payload, declared, &mut out)?;
    Ok((compressor, Bytes::from(out)))
}

/// Checks the document starting at `pos` lies within `..limit` and is NUL-terminated;
/// returns its end.
fn doc_end(b: &[u8], pos: usize, limit: usize) -> Result<usize, WireError> {
    let available = limit.saturating_sub(pos);
    if available < 4 {
        return Err(WireError::TruncatedDocumentLength { available });
    }
    let len_i32 = read_i32(b, pos).ok_or(WireError::TruncatedDocumentLength { available })?;
    let len = usize::try_from(len_i32)
        .ok()
        .filter(|l| *l >= MIN_DOC_LEN)
        .ok_or(WireError::InvalidDocumentLength { len: len_i32 })?;
    if len > available {
        return Err(WireError::DocumentOverrunsSection { len, available });
    }
    let end = pos + len;
    match b.get(end - 1) {
        Some(0) => Ok(end),
        _ => Err(WireError::MissingDocumentTerminator),
    }
}

/// Parses an OP_MSG: `frame` is the whole message, header included.
fn parse_msg(header: &MsgHeader, frame: Bytes) -> Result<Message, WireError> {
    let b: &[u8] = &frame;
    let flags =
        MsgFlags::from_bits_retain(read_u32(b, MsgHeader::LEN).ok_or(WireError::TruncatedFlags)?);
    if flags.unknown_required() != 0 {
        return Err(WireError::UnknownRequiredFlags(flags.unknown_required()));
    }
    let mut end = b.len();
    if flags.contains(MsgFlags::CHECKSUM_PRESENT) {
        if end < MSG_PREFIX_LEN + CHECKSUM_LEN {
            return Err(WireError::ChecksumMissingBytes);
        }
        end -= CHECKSUM_LEN;
        let expected = read_u32(b, end).ok_or(WireError::ChecksumMissingBytes)?;
        let actual = crc32c::crc32c(b.get(..end).unwrap_or_default());
        if expected != actual {
            return Err(WireError::ChecksumMismatch { expected, actual });
        }
    }

    let mut body: Option<SharedDoc> = None;
    let mut sequences = Vec::new();
    let mut pos = MSG_PREFIX_LEN;
    while pos < end {
        let remaining = end - pos;
        // The smallest section is 6 bytes (kind + empty document, or kind + size + "\0").
        if remaining < 6 {
            return Err(WireError::TrailingBytes { count: remaining });
        }
        let kind = b
            .get(pos)
            .copied()
            .ok_or(WireError::TrailingBytes { count: remaining })?;
        pos += 1;
        match kind {
            0 => {
                let doc_end = doc_end(b, pos, end)?;
                if body.is_some() {
                    return Err(WireError::DuplicateBody);
                }
                body = Some(SharedDoc::from_checked(frame.slice(pos..doc_end)));
                pos = doc_end;
            }
            1 => {
                let size_i32 =
                    read_i32(b, pos).ok_or(WireError::TrailingBytes { count: remaining })?;
                let size = usize::try_from(size_i32)
                    .ok()
                    .filter(|s| *s >= 5)
                    .ok_or(WireError::InvalidSectionSize { size: size_i32 })?;
                let available = end - pos;
                if size > available {
                    return Err(WireError::SectionOverrun { size, available });
                }
                let section_end = pos + size;
                let ident_start = pos + 4;
                let ident_area = b.get(ident_start..section_end).unwrap_or_default();
                let nul = ident_area
                    .iter()
                    .position(|c| *c == 0)
                    .ok_or(WireError::BadCString)?;
                let ident = std::str::from_utf8(ident_area.get(..nul).unwrap_or_default())
                    .map_err(|_| WireError::IdentifierNotUtf8)?;
                let mut documents = Vec::new();
                let mut doc_pos = ident_start + nul + 1;
                while doc_pos < section_end {
                    let e = doc_end(b, doc_pos, section_end)?;
                    documents.push(SharedDoc::from_checked(frame.slice(doc_pos..e)));
                    doc_pos = e;
                }
                sequences.push(DocumentSequence {
                    identifier: ident.to_owned(),
                    documents,
                });
                pos = section_end;
            }
            other => return Err(WireError::SectionKindUnknown(other)),
        }
    }
    let body = body.ok_or(WireError::MissingBody)?;
    Ok(Message {
        request_id: header.request_id,
        response_to: header.response_to,
        flags,
        body,
        sequences,
    })
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
