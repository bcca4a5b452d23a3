//! The OP_MSG message model and its encoder.

use bytes::{BufMut, BytesMut};

use crate::compress::{Compressor, may_compress};
use crate::header::{MsgFlags, MsgHeader, OpCode};
use crate::{DEFAULT_MAX_MESSAGE_SIZE, SharedDoc, WireError};

/// Bytes of an OP_MSG before its sections: the header and the flag bits.
pub(crate) const MSG_PREFIX_LEN: usize = MsgHeader::LEN + 4;
/// Bytes of the OP_COMPRESSED fields after the header: originalOpcode, uncompressedSize,
/// compressorId.
pub(crate) const COMPRESSED_PREFIX_LEN: usize = 9;
/// Bytes of a CRC-32C checksum.
pub(crate) const CHECKSUM_LEN: usize = 4;

/// A kind-1 section: a named sequence of documents (e.g. the `documents` of an `insert`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentSequence {
    /// The sequence's identifier (the command field it stands for). Must not contain NUL.
    pub identifier: String,
    /// The documents, in order.
    pub documents: Vec<SharedDoc>,
}

impl DocumentSequence {
    /// A sequence named `identifier` holding `documents`.
    pub fn new(identifier: impl Into<String>, documents: Vec<SharedDoc>) -> Self {
        DocumentSequence {
            identifier: identifier.into(),
            documents,
        }
    }

    /// The section's size field: itself (4), the identifier and its NUL, the documents.
    fn section_size(&self) -> usize {
        4 + self.identifier.len() + 1 + self.documents.iter().map(SharedDoc::len).sum::<usize>()
    }
}

/// One OP_MSG section.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Section {
    /// Kind 0: the body document.
    Body(SharedDoc),
    /// Kind 1: a document sequence.
    Sequence(DocumentSequence),
}

/// A decoded or to-be-encoded OP_MSG.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The sender's identifier for this message.
    pub request_id: i32,
    /// The request this message answers (0 in requests).
    pub response_to: i32,
    /// The flag bits. On decode, `CHECKSUM_PRESENT` means a checksum was present and verified,
    /// and unknown optional bits (16–31) are kept as they came. On encode, setting
    /// `CHECKSUM_PRESENT` asks for a checksum just like [`EncodeOptions::checksum`].
    pub flags: MsgFlags,
    /// The one kind-0 section.
    pub body: SharedDoc,
    /// The kind-1 sections, in order.
    pub sequences: Vec<DocumentSequence>,
}

/// How to encode a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Append a CRC-32C and set `CHECKSUM_PRESENT`.
    pub checksum: bool,
    /// Wrap the message in OP_COMPRESSED with this compressor. Applied to any message: check
    /// [`may_compress`] first for handshake and authentication commands.
    pub compressor: Option<Compressor>,
    /// Refuse (with [`WireError::MessageTooLarge`]) to encode a frame larger than this, before
    /// or after compression.
    pub max_message_size: usize,
}

impl Default for EncodeOptions {
    /// No checksum, no compression, [`DEFAULT_MAX_MESSAGE_SIZE`].
    fn default() -> Self {
        EncodeOptions {
            checksum: false,
            compressor: None,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

impl Message {
    /// A request with no sequences and no flags, answering nothing.
    pub fn command(request_id: i32, body: SharedDoc) -> Message {
        Message {
            request_id,
            response_to: 0,
            flags: MsgFlags::empty(),
            body,
            sequences: Vec::new(),
        }
    }

    /// Builds a message from its sections, which must hold exactly one body.
    pub fn from_sections(
        request_id: i32,
        response_to: i32,
        flags: MsgFlags,
        sections: impl IntoIterator<Item = Section>,
    ) -> Result<Message, WireError> {
        let mut body = None;
        let mut sequences = Vec::new();
        for section in sections {
            match section {
                Section::Body(doc) => {
                    if body.replace(doc).is_some() {
                        return Err(WireError::DuplicateBody);
                    }
                }
                Section::Sequence(seq) => sequences.push(seq),
            }
        }
        let body = body.ok_or(WireError::MissingBody)?;
        Ok(Message {
            request_id,
            response_to,
            flags,
            body,
            sequences,
        })
    }

    /// The sections in the order they are encoded: the body, then the sequences.
    pub fn into_sections(self) -> Vec<Section> {
        let mut out = Vec::with_capacity(1 + self.sequences.len());
        out.push(Section::Body(self.body));
        out.extend(self.sequences.into_iter().map(Section::Sequence));
        out
    }

    /// The command name: the body's first key.
    pub fn command_name(&self) -> Option<&str> {
        self.body.first_key()
    }

    /// Whether this message may be sent compressed (see [`may_compress`]); a body with no
    /// readable first key may not.
    pub fn may_compress(&self) -> bool {
        self.command_name().is_some_and(may_compress)
    }

    /// The length of the uncompressed frame, with a checksum iff `flags` has
    /// `CHECKSUM_PRESENT`.
    pub fn encoded_len(&self) -> usize {
        self.frame_len(self.flags.contains(MsgFlags::CHECKSUM_PRESENT))
    }

    /// The length of the uncompressed frame `encode` would write with `opts` (the
    /// OP_COMPRESSED frame's length depends on the compressor's output).
    pub fn encoded_len_with(&self, opts: &EncodeOptions) -> usize {
        self.frame_len(self.wants_checksum(opts))
    }

    fn wants_checksum(&self, opts: &EncodeOptions) -> bool {
        opts.checksum || self.flags.contains(MsgFlags::CHECKSUM_PRESENT)
    }

    fn frame_len(&self, checksum: bool) -> usize {
        let sequences: usize = self.sequences.iter().map(|s| 1 + s.section_size()).sum();
        MSG_PREFIX_LEN + 1 + self.body.len() + sequences + if checksum { CHECKSUM_LEN } else { 0 }
    }

    /// Appends the encoded frame to `dst`.
    ///
    /// The body and documents are copied with `put_slice` from their buffers, after one exact
    /// `reserve`. With a compressor, everything after the 16-byte header (flags, sections,
    /// checksum) is compressed and wrapped in OP_COMPRESSED (originalOpcode 2013); the
    /// checksum, if any, covers the uncompressed message, as the server computes it.
    ///
    /// On error `dst` is left as it was.
    pub fn encode(&self, dst: &mut BytesMut, opts: &EncodeOptions) -> Result<(), WireError> {
        let checksum = self.wants_checksum(opts);
        let mut flags = self.flags;
        flags.set(MsgFlags::CHECKSUM_PRESENT, checksum);
        if flags.unknown_required() != 0 {
            return Err(WireError::UnknownRequiredFlags(flags.unknown_required()));
        }
        if let Some(seq) = self
            .sequences
            .iter()
            .find(|s| s.identifier.as_bytes().contains(&0))
        {
            return Err(WireError::IdentifierContainsNul(seq.identifier.clone()));
        }
        let len = self.frame_len(checksum);
        let max = opts.max_message_size;
        if len > max {
            return Err(WireError::MessageTooLarge { len, max });
        }
        let len_i32 = i32_len(len)?;
        match opts.compressor {
            None => {
                dst.reserve(len);
                self.write_uncompressed(dst, len_i32, flags, checksum);
                Ok(())
            }
            Some(compressor) => {
                if !compressor.is_available() {
                    return Err(WireError::CompressorDisabled(compressor.name()));
                }
                let mut scratch = BytesMut::with_capacity(len);
                self.write_uncompressed(&mut scratch, len_i32, flags, checksum);
                let payload = scratch.get(MsgHeader::LEN..).unwrap_or_default();
                self.write_compressed(dst, compressor, payload, max)
            }
        }
    }

    /// Writes the OP_MSG frame; `len` has been computed by `frame_len(checksum)`.
    fn write_uncompressed(&self, dst: &mut BytesMut, len: i32, flags: MsgFlags, checksum: bool) {
        let start = dst.len();
        MsgHeader {
            message_length: len,
            request_id: self.request_id,
            response_to: self.response_to,
            op_code: OpCode::Msg.as_i32(),
        }
        .write_to(dst);
        dst.put_u32_le(flags.bits());
        dst.put_u8(0);
        dst.put_slice(self.body.as_bytes());
        for seq in &self.sequences {
            dst.put_u8(1);
            // Cannot truncate: the whole frame's length fits in an i32.
            dst.put_i32_le(seq.section_size() as i32);
            dst.put_slice(seq.identifier.as_bytes());
            dst.put_u8(0);
            for doc in &seq.documents {
                dst.put_slice(doc.as_bytes());
            }
        }
        if checksum {
            let crc = crc32c::crc32c(&dst[start..]);
            dst.put_u32_le(crc);
        }
    }

    /// Writes an OP_COMPRESSED frame around `payload` (an OP_MSG without its header).
    fn write_compressed(
        &self,
        dst: &mut BytesMut,
        compressor: Compressor,
        payload: &[u8],
        max: usize,
    ) -> Result<(), WireError> {
        let start = dst.len();
        dst.reserve(MsgHeader::LEN + COMPRESSED_PREFIX_LEN + payload.len());
        MsgHeader {
            message_length: 0, // patched below
            request_id: self.request_id,
            response_to: self.response_to,
            op_code: OpCode::Compressed.as_i32(),
        }
        .write_to(dst);
        dst.put_i32_le(OpCode::Msg.as_i32());
        dst.put_i32_le(i32_len(payload.len())?);
        dst.put_u8(compressor.id());
        if let Err(e) = compressor.compress_into(payload, dst) {
            dst.truncate(start);
            return Err(e);
        }
        let frame_len = dst.len() - start;
        let frame_len_i32 = match i32_len(frame_len) {
            Ok(l) if frame_len <= max => l,
            _ => {
                dst.truncate(start);
                return Err(WireError::MessageTooLarge {
                    len: frame_len,
                    max,
                });
            }
        };
        dst[start..start + 4].copy_from_slice(&frame_len_i32.to_le_bytes());
        Ok(())
    }
}

/// A length as the wire's `i32`, or `MessageTooLarge`.
fn i32_len(len: usize) -> Result<i32, WireError> {
    i32::try_from(len).map_err(|_| WireError::MessageTooLarge {
        len,
        max: i32::MAX as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::rawdoc;

    fn doc(d: bson::RawDocumentBuf) -> SharedDoc {
        SharedDoc::from(d)
    }

    #[test]
    fn encode_body_only_exact_bytes() {
        let msg = Message::command(7, doc(rawdoc! {}));
        let mut dst = BytesMut::from(&b"prefix"[..]);
        msg.encode(&mut dst, &EncodeOptions::default()).unwrap();
        let expected: &[u8] = b"prefix\
            \x1a\0\0\0\x07\0\0\0\0\0\0\0\xdd\x07\0\0\
            \0\0\0\0\
            \0\x05\0\0\0\0";
        assert_eq!(&dst[..], expected);
        assert_eq!(msg.encoded_len(), 26);
    }

    #[test]
    fn encode_sequence_exact_bytes() {
        let mut msg = Message::command(1, doc(rawdoc! {}));
        msg.sequences.push(DocumentSequence::new(
            "d",
            vec![doc(rawdoc! {}), doc(rawdoc! {})],
        ));
        let mut dst = BytesMut::new();
        msg.encode(&mut dst, &EncodeOptions::default()).unwrap();
        let expected: &[u8] = b"\x2b\0\0\0\x01\0\0\0\0\0\0\0\xdd\x07\0\0\
            \0\0\0\0\
            \0\x05\0\0\0\0\
            \x01\x10\0\0\0d\0\x05\0\0\0\0\x05\0\0\0\0";
        assert_eq!(&dst[..], expected);
        assert_eq!(msg.encoded_len(), expected.len());
    }

    #[test]
    fn encode_checksum_sets_flag_and_appends_crc() {
        let msg = Message::command(1, doc(rawdoc! { "ping": 1 }));
        let mut dst = BytesMut::new();
        let opts = EncodeOptions {
            checksum: true,
            ..EncodeOptions::default()
        };
        msg.encode(&mut dst, &opts).unwrap();
        assert_eq!(dst.len(), msg.encoded_len_with(&opts));
        assert_eq!(dst.len(), msg.encoded_len() + 4);
        assert_eq!(&dst[16..20], &1u32.to_le_bytes());
        let (content, crc) = dst.split_at(dst.len() - 4);
        assert_eq!(crc, &crc32c::crc32c(content).to_le_bytes());
    }

    #[test]
    fn encode_refuses_too_large() {
        let msg = Message::command(1, doc(rawdoc! { "x": "a fairly long string value" }));
        let mut dst = BytesMut::from(&b"keep"[..]);
        let opts = EncodeOptions {
            max_message_size: 30,
            ..EncodeOptions::default()
        };
        let err = msg.encode(&mut dst, &opts).unwrap_err();
        assert_eq!(
            err,
            WireError::MessageTooLarge {
                len: msg.encoded_len(),
                max: 30
            }
        );
        assert_eq!(&dst[..], b"keep");
    }

    #[test]
    fn encode_refuses_compressed_frame_over_limit() {
        // Noop adds 9 bytes, so a message that fits uncompressed can overflow once wrapped.
        let msg = Message::command(1, doc(rawdoc! {}));
        let opts = EncodeOptions {
            compressor: Some(Compressor::Noop),
            max_message_size: msg.encoded_len(),
            ..EncodeOptions::default()
        };
        let mut dst = BytesMut::new();
        let err = msg.encode(&mut dst, &opts).unwrap_err();
        assert_eq!(
            err,
            WireError::MessageTooLarge {
                len: msg.encoded_len() + 9,
                max: msg.encoded_len()
            }
        );
        assert!(dst.is_empty());
    }

    #[test]
    fn encode_noop_compressed_exact_bytes() {
        let msg = Message::command(5, doc(rawdoc! {}));
        let mut dst = BytesMut::new();
        let opts = EncodeOptions {
            compressor: Some(Compressor::Noop),
            ..EncodeOptions::default()
        };
        msg.encode(&mut dst, &opts).unwrap();
        let expected: &[u8] = b"\x23\0\0\0\x05\0\0\0\0\0\0\0\xdc\x07\0\0\
            \xdd\x07\0\0\x0a\0\0\0\0\
            \0\0\0\0\0\x05\0\0\0\0";
        assert_eq!(&dst[..], expected);
    }

    #[test]
    fn encode_refuses_unknown_required_flag_and_nul_identifier() {
        let mut msg = Message::command(1, doc(rawdoc! {}));
        msg.flags = MsgFlags::from_bits_retain(1 << 3);
        let err = msg
            .encode(&mut BytesMut::new(), &EncodeOptions::default())
            .unwrap_err();
        assert_eq!(err, WireError::UnknownRequiredFlags(1 << 3));

        let mut msg = Message::command(1, doc(rawdoc! {}));
        msg.sequences.push(DocumentSequence::new("a\0b", vec![]));
        let err = msg
            .encode(&mut BytesMut::new(), &EncodeOptions::default())
            .unwrap_err();
        assert_eq!(err, WireError::IdentifierContainsNul("a\0b".into()));
    }

    #[test]
    fn sections_round_trip() {
        let body = doc(rawdoc! { "insert": "c" });
        let seq = DocumentSequence::new("documents", vec![doc(rawdoc! { "a": 1 })]);
        let msg = Message::from_sections(
            3,
            0,
            MsgFlags::empty(),
            [Section::Sequence(seq.clone()), Section::Body(body.clone())],
        )
        .unwrap();
        assert_eq!(msg.body, body);
        assert_eq!(msg.command_name(), Some("insert"));
        assert!(msg.may_compress());
        assert_eq!(
            msg.clone().into_sections(),
            vec![Section::Body(body.clone()), Section::Sequence(seq)]
        );
        let err = Message::from_sections(
            1,
            0,
            MsgFlags::empty(),
            [Section::Body(body.clone()), Section::Body(body)],
        )
        .unwrap_err();
        assert_eq!(err, WireError::DuplicateBody);
        let err = Message::from_sections(1, 0, MsgFlags::empty(), []).unwrap_err();
        assert_eq!(err, WireError::MissingBody);
    }

    #[test]
    fn hello_may_not_be_compressed() {
        let msg = Message::command(1, doc(rawdoc! { "hello": 1 }));
        assert!(!msg.may_compress());
        let empty = Message::command(1, doc(rawdoc! {}));
        assert!(!empty.may_compress());
    }
}
