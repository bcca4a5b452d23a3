//! Integration tests of brook-wire: property-based round trips and robustness.

use brook_wire::{
    Compressor, DecodeLimits, DocumentSequence, EncodeOptions, Message, MsgFlags, SharedDoc,
    WireError, decode,
};
use bson::{Document, doc, rawdoc};
use bytes::BytesMut;
use proptest::prelude::*;

fn arb_document() -> impl Strategy<Value = Document> {
    prop::collection::vec(
        (
            "[a-z$_][a-zA-Z0-9_]{0,8}",
            prop_oneof![
                any::<i32>().prop_map(bson::Bson::Int32),
                any::<i64>().prop_map(bson::Bson::Int64),
                ".{0,24}".prop_map(bson::Bson::String),
                any::<bool>().prop_map(bson::Bson::Boolean),
                prop::collection::vec(any::<u8>(), 0..32).prop_map(|bytes| {
                    bson::Bson::Binary(bson::Binary {
                        subtype: bson::spec::BinarySubtype::Generic,
                        bytes,
                    })
                }),
            ],
        ),
        0..6,
    )
    .prop_map(|fields| fields.into_iter().collect())
}

fn arb_shared() -> impl Strategy<Value = SharedDoc> {
    arb_document().prop_map(|d| SharedDoc::from_document(&d).unwrap())
}

fn arb_sequence() -> impl Strategy<Value = DocumentSequence> {
    (
        "[a-zA-Z_.$]{0,12}",
        prop::collection::vec(arb_shared(), 0..4),
    )
        .prop_map(|(id, docs)| DocumentSequence::new(id, docs))
}

fn arb_compressor() -> impl Strategy<Value = Option<Compressor>> {
    prop_oneof![
        Just(None),
        Just(Some(Compressor::Noop)),
        Just(Some(Compressor::Snappy)),
        (proptest::option::of(0u32..=9)).prop_map(|level| Some(Compressor::Zlib { level })),
        (proptest::option::of(1i32..=5)).prop_map(|level| Some(Compressor::Zstd { level })),
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    (
        any::<i32>(),
        any::<i32>(),
        any::<bool>(),
        any::<bool>(),
        arb_shared(),
        prop::collection::vec(arb_sequence(), 0..3),
    )
        .prop_map(
            |(request_id, response_to, more, exhaust, body, sequences)| {
                let mut flags = MsgFlags::empty();
                flags.set(MsgFlags::MORE_TO_COME, more);
                flags.set(MsgFlags::EXHAUST_ALLOWED, exhaust);
                Message {
                    request_id,
                    response_to,
                    flags,
                    body,
                    sequences,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn encode_decode_round_trip(msg in arb_message(), checksum in any::<bool>(), compressor in arb_compressor()) {
        let opts = EncodeOptions { checksum, compressor, ..EncodeOptions::default() };
        let mut buf = BytesMut::new();
        msg.encode(&mut buf, &opts).unwrap();
        if compressor.is_none() {
            prop_assert_eq!(buf.len(), msg.encoded_len_with(&opts));
        }
        let decoded = decode(&mut buf, &DecodeLimits::default()).unwrap().unwrap();
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoded.compressor.map(|c| c.id()), compressor.map(|c| c.id()));
        let mut expected = msg.clone();
        expected.flags.set(MsgFlags::CHECKSUM_PRESENT, checksum);
        prop_assert_eq!(decoded.message, expected);
    }

    #[test]
    fn a_stream_fed_in_chunks_yields_every_message(
        msgs in prop::collection::vec(arb_message(), 1..4),
        compressor in arb_compressor(),
        chunk in 1usize..64,
    ) {
        let mut stream = BytesMut::new();
        for m in &msgs {
            m.encode(&mut stream, &EncodeOptions { compressor, checksum: true, ..EncodeOptions::default() }).unwrap();
        }
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in stream.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(d) = decode(&mut buf, &DecodeLimits::default()).unwrap() {
                out.push(d.message);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(out.len(), msgs.len());
        for (got, mut want) in out.into_iter().zip(msgs) {
            want.flags.insert(MsgFlags::CHECKSUM_PRESENT);
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = decode(&mut buf, &DecodeLimits::new(4096));
    }

    #[test]
    fn corrupting_a_valid_frame_never_panics(
        msg in arb_message(),
        compressor in arb_compressor(),
        at in any::<prop::sample::Index>(),
        xor in 1u8..,
    ) {
        let mut buf = BytesMut::new();
        msg.encode(&mut buf, &EncodeOptions { compressor, ..EncodeOptions::default() }).unwrap();
        let i = at.index(buf.len());
        buf[i] ^= xor;
        let _ = decode(&mut buf, &DecodeLimits::default());
    }

    #[test]
    fn corruption_is_caught_by_the_checksum(msg in arb_message(), at in any::<prop::sample::Index>(), xor in 1u8..) {
        let mut buf = BytesMut::new();
        msg.encode(&mut buf, &EncodeOptions { checksum: true, ..EncodeOptions::default() }).unwrap();
        // Leave the header and flags alone so that the checksum is what catches it.
        let i = 20 + at.index(buf.len() - 20);
        buf[i] ^= xor;
        let err = decode(&mut buf, &DecodeLimits::default()).unwrap_err();
        prop_assert!(matches!(err, WireError::ChecksumMismatch { .. }), "{:?}", err);
    }
}

#[test]
fn batch_elements_share_the_reply_buffer() {
    let reply = SharedDoc::from(rawdoc! {
        "cursor": { "id": 0_i64, "ns": "db.c", "firstBatch": [ { "_id": 1 }, { "_id": 2 } ] },
        "ok": 1.0,
    });
    let mut msg = Message::command(1, reply);
    msg.response_to = 1;
    let mut buf = BytesMut::new();
    msg.encode(&mut buf, &EncodeOptions::default()).unwrap();
    let range = buf.as_ptr_range();
    let decoded = decode(&mut buf, &DecodeLimits::default()).unwrap().unwrap();
    let body = &decoded.message.body;
    let batch = body
        .as_raw()
        .get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap();
    let shared: Vec<SharedDoc> = batch
        .into_iter()
        .map(|v| body.share(v.unwrap().as_document().unwrap()).unwrap())
        .collect();
    assert_eq!(shared.len(), 2);
    for (i, d) in shared.iter().enumerate() {
        assert!(range.contains(&d.as_bytes().as_ptr()));
        assert_eq!(d.to_document().unwrap(), doc! { "_id": i as i32 + 1 });
    }
}

#[test]
fn zlib_frame_from_another_implementation_decodes() {
    // An OP_COMPRESSED(zlib) frame assembled by hand, independent of Message::encode.
    use std::io::Write;
    let body = rawdoc! { "ok": 1.0 };
    let mut inner = Vec::new();
    inner.extend_from_slice(&0u32.to_le_bytes());
    inner.push(0);
    inner.extend_from_slice(body.as_bytes());
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&inner).unwrap();
    let payload = enc.finish().unwrap();
    let mut frame = Vec::new();
    let len = 16 + 9 + payload.len() as i32;
    for x in [len, 99, 42, 2012, 2013, inner.len() as i32] {
        frame.extend_from_slice(&x.to_le_bytes());
    }
    frame.push(2);
    frame.extend_from_slice(&payload);
    let d = decode(&mut BytesMut::from(&frame[..]), &DecodeLimits::default())
        .unwrap()
        .unwrap();
    assert_eq!(d.compressor, Some(Compressor::Zlib { level: None }));
    assert_eq!(d.message.request_id, 99);
    assert_eq!(d.message.response_to, 42);
    assert_eq!(d.message.body.as_raw().as_bytes(), body.as_bytes());
}

#[test]
fn large_message_round_trip_under_each_compressor() {
    let docs: Vec<SharedDoc> = (0..2000)
        .map(|i| SharedDoc::from(rawdoc! { "_id": i, "name": format!("document number {i}"), "pad": "x".repeat(100) }))
        .collect();
    let mut msg = Message::command(3, SharedDoc::from(rawdoc! { "insert": "c", "$db": "d" }));
    msg.sequences.push(DocumentSequence::new("documents", docs));
    for c in [
        Compressor::Noop,
        Compressor::Snappy,
        Compressor::Zlib { level: None },
        Compressor::Zstd { level: None },
    ] {
        let mut buf = BytesMut::new();
        msg.encode(
            &mut buf,
            &EncodeOptions {
                compressor: Some(c),
                ..EncodeOptions::default()
            },
        )
        .unwrap();
        if c != Compressor::Noop {
            assert!(
                buf.len() < msg.encoded_len() / 4,
                "{c:?} should compress repetitive data"
            );
        }
        let d = decode(&mut buf, &DecodeLimits::default()).unwrap().unwrap();
        assert_eq!(d.message, msg, "{c:?}");
    }
}
