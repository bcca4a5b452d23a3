//! Byte-literal tests of the decoder: every error variant and every valid shape.

use super::*;
use crate::{EncodeOptions, peek_header};
use bson::doc;

/// `{}`
const EMPTY: &[u8] = b"\x05\0\0\0\0";
/// `{ a: 1 }` (int32)
const DOC_A: &[u8] = b"\x0c\0\0\0\x10a\0\x01\0\0\0\0";
/// `{ b: 2 }` (int32)
const DOC_B: &[u8] = b"\x0c\0\0\0\x10b\0\x02\0\0\0\0";

/// A frame: header (request 7, responseTo 9, `op`) then `rest`.
fn frame(op: i32, rest: &[u8]) -> Vec<u8> {
    let len = i32::try_from(16 + rest.len()).unwrap();
    let mut v = Vec::new();
    for x in [len, 7, 9, op] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.extend_from_slice(rest);
    v
}

/// An OP_MSG with these flag bits and section bytes.
fn msg(flags: u32, sections: &[u8]) -> Vec<u8> {
    let mut rest = flags.to_le_bytes().to_vec();
    rest.extend_from_slice(sections);
    frame(2013, &rest)
}

/// An OP_MSG with `CHECKSUM_PRESENT` (plus `extra` bits) and a correct CRC-32C.
fn msg_with_crc(extra: u32, sections: &[u8]) -> Vec<u8> {
    let mut rest = (1 | extra).to_le_bytes().to_vec();
    rest.extend_from_slice(sections);
    rest.extend_from_slice(&[0; 4]);
    let mut v = frame(2013, &rest);
    let n = v.len() - 4;
    let crc = crc32c::crc32c(&v[..n]);
    v[n..].copy_from_slice(&crc.to_le_bytes());
    v
}

/// Concatenates byte pieces.
fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A kind-1 section named `id` with `docs`.
fn seq(id: &str, docs: &[&[u8]]) -> Vec<u8> {
    let body: Vec<u8> = docs.concat();
    let size = i32::try_from(4 + id.len() + 1 + body.len()).unwrap();
    cat(&[b"\x01", &size.to_le_bytes(), id.as_bytes(), b"\0", &body])
}

fn dec(bytes: &[u8]) -> Result<Option<Decoded>, WireError> {
    decode(&mut BytesMut::from(bytes), &DecodeLimits::default())
}

fn dec_err(bytes: &[u8]) -> WireError {
    dec(bytes).expect_err("should fail")
}

fn dec_ok(bytes: &[u8]) -> Decoded {
    let mut buf = BytesMut::from(bytes);
    let d = decode(&mut buf, &DecodeLimits::default())
        .unwrap()
        .expect("a whole frame");
    assert!(buf.is_empty(), "the frame must be consumed");
    d
}

// ---- valid shapes ----

#[test]
fn body_only() {
    let d = dec_ok(&msg(0, &cat(&[b"\0", DOC_A])));
    assert_eq!(
        d.header,
        MsgHeader {
            message_length: 33,
            request_id: 7,
            response_to: 9,
            op_code: 2013
        }
    );
    assert_eq!(d.compressor, None);
    assert_eq!(d.message.request_id, 7);
    assert_eq!(d.message.response_to, 9);
    assert_eq!(d.message.flags, MsgFlags::empty());
    assert_eq!(d.message.body.as_bytes(), DOC_A);
    assert_eq!(d.message.body.to_document().unwrap(), doc! { "a": 1 });
    assert!(d.message.sequences.is_empty());
}

#[test]
fn body_and_two_sequences_share_the_frame_buffer() {
    let bytes = msg(
        0,
        &cat(&[
            b"\0",
            EMPTY,
            &seq("documents", &[DOC_A, DOC_B]),
            &seq("u", &[]),
        ]),
    );
    let mut buf = BytesMut::from(&bytes[..]);
    let base = buf.as_ptr() as usize;
    let d = decode(&mut buf, &DecodeLimits::default()).unwrap().unwrap();
    let m = d.message;
    assert_eq!(m.body.as_bytes(), EMPTY);
    assert_eq!(m.sequences.len(), 2);
    assert_eq!(m.sequences[0].identifier, "documents");
    let docs: Vec<&[u8]> = m.sequences[0]
        .documents
        .iter()
        .map(SharedDoc::as_bytes)
        .collect();
    assert_eq!(docs, vec![DOC_A, DOC_B]);
    assert_eq!(m.sequences[1].identifier, "u");
    assert!(m.sequences[1].documents.is_empty());
    // No copies: every document points into the buffer the frame arrived in.
    assert_eq!(m.body.as_bytes().as_ptr() as usize, base + 21);
    let first = m.sequences[0].documents[0].as_bytes().as_ptr() as usize;
    assert_eq!(first, base + 21 + 5 + 1 + 4 + "documents\0".len());
}

#[test]
fn body_may_follow_a_sequence() {
    let d = dec_ok(&msg(0, &cat(&[&seq("d", &[DOC_B]), b"\0", DOC_A])));
    assert_eq!(d.message.body.as_bytes(), DOC_A);
    assert_eq!(d.message.sequences[0].documents[0].as_bytes(), DOC_B);
}

#[test]
fn checksum_present_and_verified() {
    let d = dec_ok(&msg_with_crc(0, &cat(&[b"\0", DOC_A])));
    assert!(d.message.flags.contains(MsgFlags::CHECKSUM_PRESENT));
    assert_eq!(d.message.body.as_bytes(), DOC_A);
}

#[test]
fn more_to_come() {
    let d = dec_ok(&msg(2, &cat(&[b"\0", DOC_A])));
    assert_eq!(d.message.flags, MsgFlags::MORE_TO_COME);
}

#[test]
fn exhaust_allowed() {
    let d = dec_ok(&msg(1 << 16, &cat(&[b"\0", DOC_A])));
    assert_eq!(d.message.flags, MsgFlags::EXHAUST_ALLOWED);
}

#[test]
fn unknown_optional_bit_ignored() {
    let d = dec_ok(&msg(1 << 20 | 1 << 31, &cat(&[b"\0", DOC_A])));
    assert_eq!(d.message.flags.bits(), 1 << 20 | 1 << 31);
    assert_eq!(d.message.body.as_bytes(), DOC_A);
}

#[test]
fn partial_frame_at_every_split_point() {
    let bytes = msg_with_crc(0, &cat(&[b"\0", DOC_A, &seq("d", &[DOC_B])]));
    for split in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..split]);
        assert!(
            decode(&mut buf, &DecodeLimits::default())
                .unwrap()
                .is_none(),
            "split {split}"
        );
        assert_eq!(
            &buf[..],
            &bytes[..split],
            "buffer untouched at split {split}"
        );
        buf.extend_from_slice(&bytes[split..]);
        let d = decode(&mut buf, &DecodeLimits::default()).unwrap().unwrap();
        assert_eq!(d.message.body.as_bytes(), DOC_A);
        assert!(buf.is_empty());
    }
}

#[test]
fn two_frames_in_one_buffer() {
    let one = msg(0, &cat(&[b"\0", DOC_A]));
    let two = msg(0, &cat(&[b"\0", DOC_B]));
    let mut buf = BytesMut::from(&cat(&[&one, &two, &two[..5]])[..]);
    let limits = DecodeLimits::default();
    assert_eq!(
        decode(&mut buf, &limits)
            .unwrap()
            .unwrap()
            .message
            .body
            .as_bytes(),
        DOC_A
    );
    assert_eq!(
        decode(&mut buf, &limits)
            .unwrap()
            .unwrap()
            .message
            .body
            .as_bytes(),
        DOC_B
    );
    assert!(decode(&mut buf, &limits).unwrap().is_none());
    assert_eq!(&buf[..], &two[..5]);
}

#[test]
fn noop_compressed_by_hand() {
    let inner = cat(&[&0u32.to_le_bytes(), b"\0", DOC_A]);
    let rest = cat(&[
        &2013i32.to_le_bytes(),
        &(inner.len() as i32).to_le_bytes(),
        b"\0",
        &inner,
    ]);
    let d = dec_ok(&frame(2012, &rest));
    assert_eq!(d.compressor, Some(Compressor::Noop));
    assert_eq!(d.header.op_code, 2012);
    assert_eq!(d.message.request_id, 7);
    assert_eq!(d.message.response_to, 9);
    assert_eq!(d.message.body.as_bytes(), DOC_A);
}

fn compressor_round_trip(c: Compressor) {
    let body = SharedDoc::from_bytes(Bytes::from_static(DOC_A)).unwrap();
    let mut m = Message::command(11, body);
    m.response_to = 4;
    m.flags = MsgFlags::EXHAUST_ALLOWED;
    m.sequences.push(DocumentSequence::new(
        "documents",
        vec![SharedDoc::from_bytes(Bytes::from_static(DOC_B)).unwrap(); 50],
    ));
    for checksum in [false, true] {
        let mut buf = BytesMut::new();
        m.encode(
            &mut buf,
            &EncodeOptions {
                checksum,
                compressor: Some(c),
                ..EncodeOptions::default()
            },
        )
        .unwrap();
        let h = peek_header(&buf).unwrap();
        assert_eq!(h.op_code, 2012);
        assert_eq!(h.message_length as usize, buf.len());
        let d = decode(&mut buf, &DecodeLimits::default()).unwrap().unwrap();
        assert_eq!(d.compressor.map(|c| c.id()), Some(c.id()));
        let mut expected = m.clone();
        expected.flags.set(MsgFlags::CHECKSUM_PRESENT, checksum);
        assert_eq!(d.message, expected);
        assert!(buf.is_empty());
    }
}

#[test]
fn noop_round_trip() {
    compressor_round_trip(Compressor::Noop);
}

#[cfg(feature = "snappy")]
#[test]
fn snappy_round_trip() {
    compressor_round_trip(Compressor::Snappy);
}

#[cfg(feature = "zlib")]
#[test]
fn zlib_round_trip() {
    compressor_round_trip(Compressor::Zlib { level: None });
    compressor_round_trip(Compressor::Zlib { level: Some(1) });
}

#[cfg(feature = "zstd")]
#[test]
fn zstd_round_trip() {
    compressor_round_trip(Compressor::Zstd { level: None });
    compressor_round_trip(Compressor::Zstd { level: Some(7) });
}

// ---- header errors ----

#[test]
fn negative_length() {
    assert_eq!(
        dec_err(b"\xff\xff\xff\xff"),
        WireError::NegativeMessageLength { len: -1 }
    );
}

#[test]
fn length_below_header() {
    assert_eq!(
        dec_err(b"\x0f\0\0\0"),
        WireError::MessageTooShort { len: 15 }
    );
}

#[test]
fn huge_declared_length_fails_at_once() {
    let mut bytes = msg(0, &cat(&[b"\0", EMPTY]));
    bytes[..4].copy_from_slice(&0x7fff_ffffi32.to_le_bytes());
    let mut buf = BytesMut::from(&bytes[..16]);
    let cap = buf.capacity();
    let err = decode(&mut buf, &DecodeLimits::default()).unwrap_err();
    assert_eq!(
        err,
        WireError::MessageTooLarge {
            len: 0x7fff_ffff,
            max: DEFAULT_MAX_MESSAGE_SIZE
        }
    );
    assert_eq!(buf.len(), 16);
    assert_eq!(buf.capacity(), cap);
    // Four bytes are enough to know.
    let err = decode(&mut BytesMut::from(&bytes[..4]), &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, WireError::MessageTooLarge { .. }));
}

#[test]
fn length_over_custom_limit() {
    let bytes = msg(0, &cat(&[b"\0", DOC_A]));
    let err = decode(&mut BytesMut::from(&bytes[..]), &DecodeLimits::new(32)).unwrap_err();
    assert_eq!(err, WireError::MessageTooLarge { len: 33, max: 32 });
    assert!(
        decode(&mut BytesMut::from(&bytes[..]), &DecodeLimits::new(33))
            .unwrap()
            .is_some()
    );
}

#[test]
fn unsupported_opcode_fails_with_only_the_header() {
    let mut bytes = frame(2004, &[0; 100]);
    bytes.truncate(16);
    assert_eq!(dec_err(&bytes), WireError::UnsupportedOpCode(2004));
    assert_eq!(
        dec_err(&frame(1, &[0; 10])),
        WireError::UnsupportedOpCode(1)
    );
}

// ---- OP_MSG errors ----

#[test]
fn truncated_flags() {
    assert_eq!(dec_err(&frame(2013, b"\0\0\0")), WireError::TruncatedFlags);
}

#[test]
fn unknown_required_flag() {
    assert_eq!(
        dec_err(&msg(1 << 2, &cat(&[b"\0", DOC_A]))),
        WireError::UnknownRequiredFlags(1 << 2)
    );
    assert_eq!(
        dec_err(&msg(1 << 15 | 1 << 16, &cat(&[b"\0", DOC_A]))),
        WireError::UnknownRequiredFlags(1 << 15)
    );
}

#[test]
fn checksum_missing_bytes() {
    assert_eq!(dec_err(&msg(1, b"\0\0\0")), WireError::ChecksumMissingBytes);
}

#[test]
fn checksum_mismatch() {
    let mut bytes = msg_with_crc(0, &cat(&[b"\0", DOC_A]));
    let n = bytes.len();
    let good = u32::from_le_bytes(bytes[n - 4..].try_into().unwrap());
    bytes[25] ^= 0x01; // flip a bit of the body: the carried checksum no longer matches
    let actual = crc32c::crc32c(&bytes[..n - 4]);
    assert_eq!(
        dec_err(&bytes),
        WireError::ChecksumMismatch {
            expected: good,
            actual
        }
    );
}

#[test]
fn unknown_section_kind() {
    assert_eq!(
        dec_err(&msg(0, &cat(&[b"\x02", EMPTY]))),
        WireError::SectionKindUnknown(2)
    );
}

#[test]
fn missing_body() {
    assert_eq!(dec_err(&msg(0, b"")), WireError::MissingBody);
    assert_eq!(
        dec_err(&msg(0, &seq("d", &[DOC_A]))),
        WireError::MissingBody
    );
}

#[test]
fn duplicate_body() {
    assert_eq!(
        dec_err(&msg(0, &cat(&[b"\0", DOC_A, b"\0", EMPTY]))),
        WireError::DuplicateBody
    );
}

#[test]
fn invalid_section_size() {
    let bad = cat(&[b"\x01", &4i32.to_le_bytes(), b"\0\0"]);
    assert_eq!(
        dec_err(&msg(0, &cat(&[b"\0", EMPTY, &bad]))),
        WireError::InvalidSectionSize { size: 4 }
    );
    let neg = cat(&[b"\x01", &(-8i32).to_le_bytes(), b"d\0"]);
    assert_eq!(
        dec_err(&msg(0, &cat(&[b"\0", EMPTY, &neg]))),
        WireError::InvalidSectionSize { size: -8 }
    );
}

#[test]
fn sequence_overruns_message() {
    let s = cat(&[b"\x01", &100i32.to_le_bytes(), b"d\0", DOC_A]);
    assert_eq!(
        dec_err(&msg(0, &cat(&[b"\0", EMPTY, &s]))),
        WireError::SectionOverrun {
            size: 100,
            available: 4 + 2 + 12
        }
    );
}

#[test]
fn sequence_overrunning_into_the_checksum() {
    // The size field counts the 4 checksum bytes as its own.
    let s = cat(&[b"\x01", &(4 + 2 + 12 + 4i32).to_le_bytes(), b"d\0", DOC_A]);
    assert_eq!(
        dec_err(&msg_with_crc(0, &cat(&[b"\0", EMPTY, &s]))),
        WireError::SectionOverrun {
            size: 22,
            available: 18
        }
    );
}

#[test]
fn unterminated_identifier() {
    let s = cat(&[b"\x01", &8i32.to_le_bytes(), b"abcd"]);
    assert_eq!(
        dec_err(&msg(0, &cat(&[b"\0", EMPTY, &s]))),
        WireError::BadCString
    );
}

#[test]
fn identifier_not_utf8() {
    let s = cat(&[b"\x01", &6i32.to_le_bytes(), b"\xff\0"]);
    assert_eq!(
        dec_err(&msg(0, &cat(&[b"\0", EMPTY, &s]))),
        WireError::IdentifierNotUtf8
    );
}

#[test]
fn truncated_document_length_in_sequence() {
    let s = cat(&[b"\x01", &8i32.to_le_bytes(), b"d\0", b"\x05\0"]);
    assert_eq!(
        dec_err(&msg(0, &cat(&[b"\0", EMPTY, &s]))),
        WireError::TruncatedDocumentLength { available: 2 }
    );
}

#[test]
fn invalid_document_length() {
    assert_eq!(
        dec_err(&msg(0, b"\0\x04\0\0\0\0")),
        WireError::InvalidDocumentLength { len: 4 }
    );
    assert_eq!(
        dec_err(&msg(0, b"\0\xfe\xff\xff\xff\0")),
        WireError::InvalidDocumentLength { len: -2 }
    );
}

#[test]
fn body_overruns_message() {
    assert_eq!(
        dec_err(&msg(0, b"\0\x06\0\0\0\0")),
        WireError::DocumentOverrunsSection {
            len: 6,
            available: 5
        }
    );
}

#[test]
fn sequence_document_overruns_its_section() {
    // The document claims 12 bytes but its section ends after 8 of them; a body follows, so
    // the message itself has enough bytes.
    let s = cat(&[b"\x01", &(4 + 2 + 8i32).to_le_bytes(), b"d\0", &DOC_A[..8]]);
    let bytes = msg(0, &cat(&[&s, b"\0", EMPTY]));
    assert_eq!(
        dec_err(&bytes),
        WireError::DocumentOverrunsSection {
            len: 12,
            available: 8
        }
    );
}

#[test]
fn missing_document_terminator() {
    assert_eq!(
        dec_err(&msg(0, b"\0\x05\0\0\0\x01")),
        WireError::MissingDocumentTerminator
    );
    let s = seq("d", &[b"\x05\0\0\0\x07"]);
    assert_eq!(
        dec_err(&msg(0, &cat(&[b"\0", EMPTY, &s]))),
        WireError::MissingDocumentTerminator
    );
}

#[test]
fn trailing_bytes_that_are_not_a_checksum() {
    // Looks like a checksum, but the flag is not set.
    let bytes = msg(0, &cat(&[b"\0", DOC_A, b"\x12\x34\x56\x78"]));
    assert_eq!(dec_err(&bytes), WireError::TrailingBytes { count: 4 });
    assert_eq!(
        dec_err(&msg(0, &cat(&[b"\0", DOC_A, b"\0"]))),
        WireError::TrailingBytes { count: 1 }
    );
}

// ---- OP_COMPRESSED errors ----

/// An OP_COMPRESSED frame with these fields and payload.
fn compressed(original: i32, size: i32, id: u8, payload: &[u8]) -> Vec<u8> {
    frame(
        2012,
        &cat(&[&original.to_le_bytes(), &size.to_le_bytes(), &[id], payload]),
    )
}

#[test]
fn compressed_frame_too_short() {
    assert_eq!(
        dec_err(&frame(2012, &2013i32.to_le_bytes())),
        WireError::CompressedFrameTooShort { len: 20 }
    );
}

#[test]
fn compressed_wrapping_something_else() {
    assert_eq!(
        dec_err(&compressed(2004, 10, 0, &[0; 10])),
        WireError::CompressedOpCodeInvalid(2004)
    );
    assert_eq!(
        dec_err(&compressed(2012, 10, 0, &[0; 10])),
        WireError::CompressedOpCodeInvalid(2012)
    );
}

#[test]
fn unknown_compressor() {
    assert_eq!(
        dec_err(&compressed(2013, 10, 9, &[0; 10])),
        WireError::UnknownCompressor(9)
    );
}

#[test]
fn negative_uncompressed_size() {
    assert_eq!(
        dec_err(&compressed(2013, -1, 0, &[0; 10])),
        WireError::UncompressedSizeNegative(-1)
    );
}

#[test]
fn uncompressed_size_over_limit() {
    let bytes = compressed(2013, 1000, 0, &[0; 10]);
    let err = decode(&mut BytesMut::from(&bytes[..]), &DecodeLimits::new(1000)).unwrap_err();
    assert_eq!(
        err,
        WireError::UncompressedSizeTooLarge {
            size: 1016,
            max: 1000
        }
    );
    assert_eq!(
        dec_err(&compressed(2013, i32::MAX, 0, &[0; 10])),
        WireError::UncompressedSizeTooLarge {
            size: i32::MAX as usize + 16,
            max: DEFAULT_MAX_MESSAGE_SIZE
        }
    );
}

#[test]
fn noop_size_mismatch() {
    let inner = cat(&[&0u32.to_le_bytes(), b"\0", DOC_A]);
    assert_eq!(
        dec_err(&compressed(2013, 16, 0, &inner)),
        WireError::UncompressedSizeMismatch {
            declared: 16,
            actual: 17
        }
    );
}

#[test]
fn inner_message_errors_surface_through_compression() {
    let inner = cat(&[&4u32.to_le_bytes(), b"\0", DOC_A]);
    assert_eq!(
        dec_err(&compressed(2013, 17, 0, &inner)),
        WireError::UnknownRequiredFlags(4)
    );
    // A checksum over the inner message must match the rebuilt header.
    let mut good = msg_with_crc(0, &cat(&[b"\0", DOC_A]));
    let payload = good.split_off(16);
    let ok = dec_ok(&compressed(2013, payload.len() as i32, 0, &payload));
    assert!(ok.message.flags.contains(MsgFlags::CHECKSUM_PRESENT));
    let mut bad = payload.clone();
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    assert!(matches!(
        dec_err(&compressed(2013, bad.len() as i32, 0, &bad)),
        WireError::ChecksumMismatch { .. }
    ));
}

#[cfg(feature = "zlib")]
#[test]
fn zlib_bomb_is_refused() {
    use std::io::Write;
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&vec![0u8; 8 << 20]).unwrap();
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 64 << 10);
    let err = dec_err(&compressed(2013, 100, 2, &bomb));
    assert_eq!(
        err,
        WireError::UncompressedSizeMismatch {
            declared: 100,
            actual: 101
        }
    );
    // Declaring its real size is bounded by the limit instead.
    let bytes = compressed(2013, 8 << 20, 2, &bomb);
    let err = decode(&mut BytesMut::from(&bytes[..]), &DecodeLimits::new(1 << 20)).unwrap_err();
    assert!(matches!(err, WireError::UncompressedSizeTooLarge { .. }));
}

#[cfg(feature = "zlib")]
#[test]
fn zlib_short_output_is_a_mismatch() {
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut enc, &[0u8; 10]).unwrap();
    let small = enc.finish().unwrap();
    assert_eq!(
        dec_err(&compressed(2013, 50, 2, &small)),
        WireError::UncompressedSizeMismatch {
            declared: 50,
            actual: 10
        }
    );
}

#[cfg(feature = "zlib")]
#[test]
fn zlib_garbage_is_a_decompression_error() {
    assert!(matches!(
        dec_err(&compressed(2013, 50, 2, &[0xab; 20])),
        WireError::Decompression(_)
    ));
}

#[cfg(feature = "snappy")]
#[test]
fn snappy_inner_length_must_match_declared() {
    let block = snap::raw::Encoder::new().compress_vec(&[1u8; 64]).unwrap();
    assert_eq!(
        dec_err(&compressed(2013, 32, 1, &block)),
        WireError::UncompressedSizeMismatch {
            declared: 32,
            actual: 64
        }
    );
}

#[cfg(feature = "zstd")]
#[test]
fn zstd_bomb_is_refused() {
    let bomb = zstd::bulk::compress(&vec![0u8; 4 << 20], 3).unwrap();
    assert_eq!(
        dec_err(&compressed(2013, 1000, 3, &bomb)),
        WireError::UncompressedSizeMismatch {
            declared: 1000,
            actual: 1001
        }
    );
}

#[cfg(not(feature = "snappy"))]
#[test]
fn snappy_disabled() {
    assert_eq!(
        dec_err(&compressed(2013, 10, 1, &[0; 10])),
        WireError::CompressorDisabled("snappy")
    );
}

#[cfg(not(feature = "zlib"))]
#[test]
fn zlib_disabled() {
    assert_eq!(
        dec_err(&compressed(2013, 10, 2, &[0; 10])),
        WireError::CompressorDisabled("zlib")
    );
    let m = Message::command(1, SharedDoc::from_bytes(Bytes::from_static(EMPTY)).unwrap());
    let opts = EncodeOptions {
        compressor: Some(Compressor::Zlib { level: None }),
        ..EncodeOptions::default()
    };
    assert_eq!(
        m.encode(&mut BytesMut::new(), &opts),
        Err(WireError::CompressorDisabled("zlib"))
    );
}

#[cfg(not(feature = "zstd"))]
#[test]
fn zstd_disabled() {
    assert_eq!(
        dec_err(&compressed(2013, 10, 3, &[0; 10])),
        WireError::CompressorDisabled("zstd")
    );
}
