//! The seed corpus as tests.
//!
//! * [`replay_every_seed`] runs every committed seed through its target's check (and
//!   through every other check: they must all hold on any input), so the seeds are a
//!   regression suite that runs on stable with `cargo test`.
//! * [`write_handmade_seeds`] (ignored; run with `cargo test -- --ignored`) writes the
//!   hand-made seeds: one frame per malformed shape the decoder must refuse, one reply
//!   per error shape the parsers must read, and a few valid but unusual frames. They are
//!   built byte by byte here, without brook-wire's encoder.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use bson::{Bson, Document, Timestamp, doc};

use crate::{compressed, event, frame, reply, roundtrip};

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds")
}

const TARGETS: [&str; 5] = [
    "frame_decode",
    "message_roundtrip",
    "compressed_frame",
    "reply_parse",
    "event_decode",
];

fn check(target: &str, data: &[u8]) {
    match target {
        "frame_decode" => frame::check_frame_decode(data),
        "message_roundtrip" => roundtrip::check_roundtrip(data),
        "compressed_frame" => compressed::check_compressed(data),
        "reply_parse" => reply::check_reply(data),
        "event_decode" => event::check_event_decode(data),
        other => panic!("unknown target {other}"),
    }
}

#[test]
fn replay_every_seed() {
    let mut count = 0;
    for target in TARGETS {
        let dir = seeds_dir().join(target);
        let mut entries: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        assert!(
            entries.len() >= 10,
            "{target} has only {} seeds",
            entries.len()
        );
        for path in entries {
            let data = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for t in TARGETS {
                let result = std::panic::catch_unwind(|| check(t, &data));
                assert!(
                    result.is_ok(),
                    "check {t} failed on seed {}",
                    path.display()
                );
            }
            count += 1;
        }
    }
    assert!(count >= 100, "only {count} seeds");
}

// ---- byte builders (little-endian, as the wire has it) ----

fn le(v: i32) -> [u8; 4] {
    v.to_le_bytes()
}

fn bson_bytes(d: &Document) -> Vec<u8> {
    bson::serialize_to_vec(d).unwrap_or_else(|e| panic!("seed document does not serialise: {e}"))
}

/// A whole frame: header with the true length, then `payload`.
fn frame_of(request_id: i32, response_to: i32, op: i32, payload: &[u8]) -> Vec<u8> {
    let len = i32::try_from(16 + payload.len()).unwrap_or(i32::MAX);
    let mut out = Vec::new();
    for v in [len, request_id, response_to, op] {
        out.extend_from_slice(&le(v));
    }
    out.extend_from_slice(payload);
    out
}

enum Sec<'a> {
    Body(&'a [u8]),
    Seq(&'a str, Vec<Vec<u8>>),
    Raw(Vec<u8>),
}

/// An OP_MSG payload (after the header): flags, sections, optional checksum space.
fn msg_payload(flags: u32, sections: &[Sec<'_>]) -> Vec<u8> {
    let mut out = flags.to_le_bytes().to_vec();
    for s in sections {
        match s {
            Sec::Body(d) => {
                out.push(0);
                out.extend_from_slice(d);
            }
            Sec::Seq(id, docs) => {
                out.push(1);
                let size = 4 + id.len() + 1 + docs.iter().map(Vec::len).sum::<usize>();
                out.extend_from_slice(&le(i32::try_from(size).unwrap_or(i32::MAX)));
                out.extend_from_slice(id.as_bytes());
                out.push(0);
                for d in docs {
                    out.extend_from_slice(d);
                }
            }
            Sec::Raw(bytes) => out.extend_from_slice(bytes),
        }
    }
    out
}

fn op_msg(request_id: i32, response_to: i32, flags: u32, sections: &[Sec<'_>]) -> Vec<u8> {
    frame_of(request_id, response_to, 2013, &msg_payload(flags, sections))
}

/// An OP_MSG with bit 0 set and a correct CRC-32C appended.
fn op_msg_checksummed(
    request_id: i32,
    response_to: i32,
    flags: u32,
    sections: &[Sec<'_>],
) -> Vec<u8> {
    let mut payload = msg_payload(flags | 1, sections);
    payload.extend_from_slice(&[0; 4]);
    let mut f = frame_of(request_id, response_to, 2013, &payload);
    let n = f.len() - 4;
    let crc = crc32c::crc32c(f.get(..n).unwrap_or_default());
    f.truncate(n);
    f.extend_from_slice(&crc.to_le_bytes());
    f
}

fn op_compressed(request_id: i32, original_op: i32, declared: i32, id: u8, data: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&le(original_op));
    payload.extend_from_slice(&le(declared));
    payload.push(id);
    payload.extend_from_slice(data);
    frame_of(request_id, 0, 2012, &payload)
}

/// Wraps a whole OP_MSG frame in OP_COMPRESSED with compressor `id`.
fn compress_frame(msg_frame: &[u8], id: u8) -> Vec<u8> {
    let inner = msg_frame.get(16..).unwrap_or_default();
    let data = compressed::compress(id, inner).unwrap_or_else(|| inner.to_vec());
    let rid = i32::from_le_bytes([msg_frame[4], msg_frame[5], msg_frame[6], msg_frame[7]]);
    op_compressed(
        rid,
        2013,
        i32::try_from(inner.len()).unwrap_or(i32::MAX),
        id,
        &data,
    )
}

fn reply(d: &Document) -> Vec<u8> {
    op_msg(900, 12, 0, &[Sec::Body(&bson_bytes(d))])
}

fn change_event(i: i64) -> Document {
    doc! {
        "_id": { "_data": format!("8263A1B2C3000000{i:02X}2B022C0100296E5A1004A1B2C3D4E5F6071829304152637485964463C6F7065726174696F6E54797065003C696E736572740046646F63756D656E744B65790046645F6964006463A1B2C3D4E5F60718293041000004") },
        "operationType": "insert",
        "clusterTime": Timestamp { time: 1_700_000_000, increment: u32::try_from(i).unwrap_or(0) },
        "wallTime": bson::DateTime::from_millis(1_700_000_000_000 + i),
        "fullDocument": { "_id": i, "user": "ada", "n": i * 3, "tags": ["a", "b"], "nested": { "ok": true } },
        "ns": { "db": "brook", "coll": "events" },
        "documentKey": { "_id": i },
    }
}

fn cluster_time() -> Document {
    doc! {
        "clusterTime": Timestamp { time: 1_700_000_000, increment: 7 },
        "signature": { "hash": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![0; 20] }, "keyId": 0_i64 },
    }
}

/// Every hand-made seed, by target and name.
fn handmade() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out: Vec<(&'static str, String, Vec<u8>)> = Vec::new();
    let body = bson_bytes(&doc! { "ping": 1, "$db": "admin" });
    let d1 = bson_bytes(&doc! { "_id": 1, "x": "one" });
    let d2 = bson_bytes(&doc! { "_id": 2, "x": "two" });
    let ok = reply(&doc! { "ok": 1.0 });

    // ---- frame shapes: valid but unusual, then every refusal ----
    let mut frames: Vec<(&str, Vec<u8>)> = vec![
        ("valid-body-only", op_msg(1, 0, 0, &[Sec::Body(&body)])),
        (
            "valid-sequence-first",
            op_msg(
                2,
                0,
                0,
                &[
                    Sec::Seq("documents", vec![d1.clone(), d2.clone()]),
                    Sec::Body(&body),
                ],
            ),
        ),
        (
            "valid-two-sequences",
            op_msg(
                3,
                0,
                0,
                &[
                    Sec::Body(&body),
                    Sec::Seq("documents", vec![d1.clone()]),
                    Sec::Seq("updates", vec![d2.clone()]),
                ],
            ),
        ),
        (
            "valid-empty-sequence",
            op_msg(4, 0, 0, &[Sec::Body(&body), Sec::Seq("documents", vec![])]),
        ),
        (
            "valid-checksum",
            op_msg_checksummed(5, 0, 0, &[Sec::Body(&body)]),
        ),
        (
            "valid-checksum-sequence",
            op_msg_checksummed(
                6,
                0,
                0,
                &[Sec::Body(&body), Sec::Seq("documents", vec![d1.clone()])],
            ),
        ),
        (
            "valid-more-to-come",
            op_msg(7, 0, 1 << 1, &[Sec::Body(&body)]),
        ),
        (
            "valid-exhaust-allowed",
            op_msg(8, 0, 1 << 16, &[Sec::Body(&body)]),
        ),
        (
            "valid-unknown-optional-bit",
            op_msg(9, 0, 1 << 24, &[Sec::Body(&body)]),
        ),
        (
            "err-unknown-required-bit",
            op_msg(10, 0, 1 << 2, &[Sec::Body(&body)]),
        ),
        (
            "err-unknown-required-bit15",
            op_msg(11, 0, 1 << 15, &[Sec::Body(&body)]),
        ),
        (
            "err-section-kind-2",
            op_msg(
                12,
                0,
                0,
                &[Sec::Body(&body), Sec::Raw(vec![2, 5, 0, 0, 0, 0])],
            ),
        ),
        (
            "err-missing-body",
            op_msg(13, 0, 0, &[Sec::Seq("documents", vec![d1.clone()])]),
        ),
        ("err-no-sections", op_msg(14, 0, 0, &[])),
        (
            "err-duplicate-body",
            op_msg(15, 0, 0, &[Sec::Body(&body), Sec::Body(&body)]),
        ),
        (
            "err-section-overrun",
            op_msg(
                16,
                0,
                0,
                &[
                    Sec::Body(&body),
                    Sec::Raw([vec![1], le(4000).to_vec(), b"documents\0".to_vec()].concat()),
                ],
            ),
        ),
        (
            "err-section-size-too-small",
            op_msg(
                17,
                0,
                0,
                &[
                    Sec::Body(&body),
                    Sec::Raw([vec![1], le(3).to_vec(), b"x\0".to_vec()].concat()),
                ],
            ),
        ),
        (
            "err-section-size-negative",
            op_msg(
                18,
                0,
                0,
                &[
                    Sec::Body(&body),
                    Sec::Raw([vec![1], le(-8).to_vec(), b"x\0".to_vec()].concat()),
                ],
            ),
        ),
        (
            "err-identifier-no-nul",
            op_msg(
                19,
                0,
                0,
                &[
                    Sec::Body(&body),
                    Sec::Raw([vec![1], le(13).to_vec(), b"documents".to_vec()].concat()),
                ],
            ),
        ),
        (
            "err-identifier-not-utf8",
            op_msg(
                20,
                0,
                0,
                &[
                    Sec::Body(&body),
                    Sec::Raw([vec![1], le(8).to_vec(), vec![0xff, 0xfe, 0xc3, 0]].concat()),
                ],
            ),
        ),
        (
            "err-doc-length-too-small",
            op_msg(
                21,
                0,
                0,
                &[Sec::Raw([vec![0], le(4).to_vec(), vec![0; 4]].concat())],
            ),
        ),
        (
            "err-doc-length-negative",
            op_msg(
                22,
                0,
                0,
                &[Sec::Raw([vec![0], le(-1).to_vec(), vec![0; 4]].concat())],
            ),
        ),
        (
            "err-doc-overruns",
            op_msg(
                23,
                0,
                0,
                &[Sec::Raw([vec![0], le(400).to_vec(), vec![0; 8]].concat())],
            ),
        ),
        (
            "err-doc-no-terminator",
            op_msg(
                24,
                0,
                0,
                &[Sec::Raw([vec![0], le(5).to_vec(), vec![7]].concat())],
            ),
        ),
        (
            "err-doc-in-sequence-overruns",
            op_msg(
                25,
                0,
                0,
                &[
                    Sec::Body(&body),
                    Sec::Raw(
                        [
                            vec![1],
                            le(4 + 2 + 9).to_vec(),
                            b"d\0".to_vec(),
                            le(300).to_vec(),
                            vec![0; 5],
                        ]
                        .concat(),
                    ),
                ],
            ),
        ),
        (
            "err-truncated-doc-length",
            op_msg(26, 0, 0, &[Sec::Raw(vec![0, 5, 0])]),
        ),
        (
            "err-trailing-bytes",
            op_msg(27, 0, 0, &[Sec::Body(&body), Sec::Raw(vec![0xab, 0xcd])]),
        ),
        ("err-truncated-flags", frame_of(28, 0, 2013, &[0, 0])),
        (
            "err-op-query",
            frame_of(29, 0, 2004, &msg_payload(0, &[Sec::Body(&body)])),
        ),
        (
            "err-op-reply",
            frame_of(30, 0, 1, &msg_payload(0, &[Sec::Body(&body)])),
        ),
        (
            "err-opcode-unknown",
            frame_of(31, 0, 9999, &msg_payload(0, &[Sec::Body(&body)])),
        ),
    ];
    let mut bad_crc = op_msg_checksummed(32, 0, 0, &[Sec::Body(&body)]);
    if let Some(last) = bad_crc.last_mut() {
        *last ^= 0x5a;
    }
    frames.push(("err-checksum-mismatch", bad_crc));
    frames.push((
        "err-checksum-missing-bytes",
        op_msg(33, 0, 1, &[Sec::Raw(vec![0, 5, 0])]),
    ));
    // Headers alone: lengths the decoder must refuse before allocating.
    let header = |len: i32, op: i32| [le(len), le(34), le(0), le(op)].concat();
    frames.push(("err-length-too-short", header(8, 2013)));
    frames.push(("err-length-zero", header(0, 2013)));
    frames.push(("err-length-negative", header(-16, 2013)));
    frames.push(("err-length-over-limit", header(1 << 20, 2013)));
    frames.push(("err-length-i32-max", header(i32::MAX, 2013)));
    frames.push(("need-more-header-only", header(64, 2013)));
    frames.push((
        "need-more-partial",
        op_msg(35, 0, 0, &[Sec::Body(&body)])
            .get(..30)
            .unwrap_or_default()
            .to_vec(),
    ));
    frames.push((
        "stream-three-frames",
        [
            ok.clone(),
            op_msg(36, 0, 0, &[Sec::Body(&body)]),
            ok.clone(),
        ]
        .concat(),
    ));
    frames.push((
        "stream-frame-then-partial",
        [ok.clone(), ok.get(..20).unwrap_or_default().to_vec()].concat(),
    ));
    frames.push((
        "stream-frame-then-garbage",
        [ok.clone(), header(3, 2013)].concat(),
    ));

    // ---- OP_COMPRESSED shapes ----
    let inner = op_msg(
        40,
        0,
        0,
        &[Sec::Body(&bson_bytes(
            &doc! { "find": "events", "filter": {}, "$db": "brook" },
        ))],
    );
    let inner_len = i32::try_from(inner.len() - 16).unwrap_or(0);
    let inner_payload = inner.get(16..).unwrap_or_default().to_vec();
    let zlib = compressed::compress(2, &inner_payload).unwrap_or_default();
    let zeros = vec![0u8; 1 << 20];
    let mut comp: Vec<(&str, Vec<u8>)> = vec![
        ("valid-noop", compress_frame(&inner, 0)),
        ("valid-snappy", compress_frame(&inner, 1)),
        ("valid-zlib", compress_frame(&inner, 2)),
        ("valid-zstd", compress_frame(&inner, 3)),
        (
            "valid-zstd-checksum",
            compress_frame(&op_msg_checksummed(41, 0, 0, &[Sec::Body(&body)]), 3),
        ),
        (
            "valid-snappy-sequence",
            compress_frame(
                &op_msg(
                    42,
                    0,
                    0,
                    &[
                        Sec::Body(&body),
                        Sec::Seq("documents", vec![d1.clone(), d2.clone()]),
                    ],
                ),
                1,
            ),
        ),
        (
            "err-compressed-too-short",
            frame_of(43, 0, 2012, &[0x0d, 0x07, 0, 0]),
        ),
        (
            "err-compressed-wraps-compressed",
            op_compressed(44, 2012, inner_len, 2, &zlib),
        ),
        (
            "err-compressed-wraps-query",
            op_compressed(45, 2004, inner_len, 2, &zlib),
        ),
        (
            "err-unknown-compressor",
            op_compressed(46, 2013, inner_len, 7, &zlib),
        ),
        (
            "err-declared-negative",
            op_compressed(47, 2013, -1, 2, &zlib),
        ),
        (
            "err-declared-over-limit",
            op_compressed(48, 2013, i32::MAX, 2, &zlib),
        ),
        (
            "err-declared-too-big",
            op_compressed(49, 2013, inner_len + 10, 2, &zlib),
        ),
        (
            "err-declared-too-small",
            op_compressed(50, 2013, inner_len - 10, 2, &zlib),
        ),
        (
            "err-declared-zero",
            op_compressed(
                51,
                2013,
                0,
                1,
                &compressed::compress(1, &inner_payload).unwrap_or_default(),
            ),
        ),
        (
            "err-corrupt-zlib",
            op_compressed(
                52,
                2013,
                inner_len,
                2,
                &[0x78, 0x9c, 0xff, 0xff, 0x00, 0x12],
            ),
        ),
        (
            "err-corrupt-snappy",
            op_compressed(
                53,
                2013,
                inner_len,
                1,
                &[0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x02],
            ),
        ),
        (
            "err-corrupt-zstd",
            op_compressed(
                54,
                2013,
                inner_len,
                3,
                &[0x28, 0xb5, 0x2f, 0xfd, 0x64, 0xff, 0xff, 0xff, 0x7f, 0, 0],
            ),
        ),
        (
            "err-bomb-zlib",
            op_compressed(
                55,
                2013,
                1 << 20,
                2,
                &compressed::compress(2, &zeros).unwrap_or_default(),
            ),
        ),
        (
            "err-bomb-zstd-small-declared",
            op_compressed(
                56,
                2013,
                1000,
                3,
                &compressed::compress(3, &zeros).unwrap_or_default(),
            ),
        ),
        (
            "err-bomb-snappy",
            op_compressed(
                57,
                2013,
                1 << 20,
                1,
                &compressed::compress(1, &zeros).unwrap_or_default(),
            ),
        ),
        (
            "err-valid-zlib-not-op-msg",
            op_compressed(
                58,
                2013,
                24,
                2,
                &compressed::compress(2, b"this is not an OP_MSG!!!").unwrap_or_default(),
            ),
        ),
    ];
    for (name, f) in &comp {
        frames.push((name, f.clone()));
    }

    // ---- replies: every error shape, cursor replies, hello replies ----
    let events: Vec<Bson> = (1..=3).map(|i| Bson::Document(change_event(i))).collect();
    let pbrt = doc! { "_data": "8263A1B2C30000000B2B022C0100296E5A1004" };
    let replies: Vec<(&str, Document)> = vec![
        ("ok-double", doc! { "ok": 1.0 }),
        ("ok-int32", doc! { "ok": 1 }),
        ("ok-int64", doc! { "ok": 1_i64 }),
        ("ok-bool", doc! { "ok": true }),
        ("ok-missing", doc! { "n": 1 }),
        ("ok-string", doc! { "ok": "1" }),
        ("ok-two", doc! { "ok": 2.0 }),
        (
            "err-basic",
            doc! { "ok": 0.0, "errmsg": "no such command: 'frob'", "code": 59, "codeName": "CommandNotFound" },
        ),
        (
            "err-ok-int32",
            doc! { "ok": 0, "errmsg": "x", "code": 2, "codeName": "BadValue" },
        ),
        (
            "err-ok-false",
            doc! { "ok": false, "errmsg": "x", "code": 2 },
        ),
        ("err-ok-int64", doc! { "ok": 0_i64, "errmsg": "x" }),
        (
            "err-no-code",
            doc! { "ok": 0.0, "errmsg": "something failed" },
        ),
        ("err-no-errmsg", doc! { "ok": 0.0, "code": 8000 }),
        (
            "err-code-double",
            doc! { "ok": 0.0, "errmsg": "x", "code": 43.0 },
        ),
        (
            "err-code-fraction",
            doc! { "ok": 0.0, "errmsg": "x", "code": 43.5 },
        ),
        (
            "err-code-string",
            doc! { "ok": 0.0, "errmsg": "x", "code": "43" },
        ),
        (
            "err-code-int64-huge",
            doc! { "ok": 0.0, "errmsg": "x", "code": i64::MAX },
        ),
        (
            "err-errmsg-not-string",
            doc! { "ok": 0.0, "errmsg": 12, "code": 1 },
        ),
        (
            "err-legacy-dollar-err",
            doc! { "ok": 0.0, "$err": "legacy", "code": 13435 },
        ),
        (
            "err-cursor-not-found",
            doc! { "ok": 0.0, "errmsg": "cursor id 42 not found", "code": 43, "codeName": "CursorNotFound" },
        ),
        (
            "err-resumable-label",
            doc! { "ok": 0.0, "errmsg": "interrupted", "code": 11602, "codeName": "InterruptedDueToReplStateChange", "errorLabels": ["ResumableChangeStreamError", "RetryableWriteError"] },
        ),
        (
            "err-labels-not-strings",
            doc! { "ok": 0.0, "errmsg": "x", "code": 6, "errorLabels": [1, null, { "a": 1 }, "ResumableChangeStreamError"] },
        ),
        (
            "err-labels-not-array",
            doc! { "ok": 0.0, "errmsg": "x", "code": 6, "errorLabels": "ResumableChangeStreamError" },
        ),
        (
            "err-history-lost",
            doc! { "ok": 0.0, "errmsg": "resume point no longer in oplog", "code": 286, "codeName": "ChangeStreamHistoryLost" },
        ),
        (
            "err-fatal-280",
            doc! { "ok": 0.0, "errmsg": "_id field removed", "code": 280, "codeName": "ChangeStreamFatalError" },
        ),
        (
            "err-election",
            doc! { "ok": 0.0, "errmsg": "election", "code": 216, "codeName": "ElectionInProgress" },
        ),
        (
            "err-not-primary",
            doc! { "ok": 0.0, "errmsg": "not primary", "code": 10107, "codeName": "NotWritablePrimary", "topologyVersion": { "processId": bson::oid::ObjectId::from_bytes([1; 12]), "counter": 3_i64 } },
        ),
        (
            "err-with-cluster-time",
            doc! { "ok": 0.0, "errmsg": "x", "code": 63, "$clusterTime": cluster_time(), "operationTime": Timestamp { time: 1, increment: 2 } },
        ),
        (
            "write-errors",
            doc! { "ok": 1.0, "n": 1, "writeErrors": [{ "index": 1, "code": 11000, "codeName": "DuplicateKey", "errmsg": "E11000 duplicate key", "errInfo": { "keyValue": { "_id": 1 } } }] },
        ),
        (
            "write-errors-bad-shapes",
            doc! { "ok": 1.0, "n": 0, "writeErrors": [1, { "index": "a" }, { "index": -1, "code": 2 }, { "index": 99, "code": 2, "errmsg": "x" }] },
        ),
        (
            "write-concern-error",
            doc! { "ok": 1.0, "n": 2, "writeConcernError": { "code": 64, "codeName": "WriteConcernFailed", "errmsg": "waiting for replication timed out", "errInfo": { "wtimeout": true }, "errorLabels": ["RetryableWriteError"] } },
        ),
        (
            "write-both-errors",
            doc! { "ok": 1.0, "n": 1, "writeErrors": [{ "index": 0, "code": 121, "errmsg": "validation" }], "writeConcernError": { "code": 91, "errmsg": "shutdown" } },
        ),
        (
            "update-upserted",
            doc! { "ok": 1.0, "n": 2, "nModified": 1, "upserted": [{ "index": 1, "_id": 77 }] },
        ),
        (
            "update-upserted-bad",
            doc! { "ok": 1.0, "n": 2, "nModified": "one", "upserted": [{ "_id": 77 }, 5] },
        ),
        (
            "kill-cursors",
            doc! { "ok": 1.0, "cursorsKilled": [1_i64], "cursorsNotFound": [2_i64], "cursorsAlive": [3], "cursorsUnknown": [] },
        ),
        (
            "kill-cursors-bad",
            doc! { "ok": 1.0, "cursorsKilled": ["1"], "cursorsNotFound": 2 },
        ),
        (
            "cursor-first-batch",
            doc! { "ok": 1.0, "cursor": { "id": 123_i64, "ns": "brook.events", "firstBatch": [{ "_id": 1 }, { "_id": 2 }] } },
        ),
        (
            "cursor-id-int32",
            doc! { "ok": 1.0, "cursor": { "id": 5, "ns": "brook.events", "nextBatch": [] } },
        ),
        (
            "cursor-id-double",
            doc! { "ok": 1.0, "cursor": { "id": 5.0, "ns": "brook.events", "nextBatch": [] } },
        ),
        (
            "cursor-id-fraction",
            doc! { "ok": 1.0, "cursor": { "id": 5.5, "ns": "brook.events", "nextBatch": [] } },
        ),
        (
            "cursor-id-string",
            doc! { "ok": 1.0, "cursor": { "id": "5", "ns": "brook.events", "nextBatch": [] } },
        ),
        (
            "cursor-no-id",
            doc! { "ok": 1.0, "cursor": { "ns": "brook.events", "nextBatch": [] } },
        ),
        (
            "cursor-no-ns",
            doc! { "ok": 1.0, "cursor": { "id": 0_i64, "nextBatch": [] } },
        ),
        (
            "cursor-ns-no-dot",
            doc! { "ok": 1.0, "cursor": { "id": 0_i64, "ns": "events", "nextBatch": [] } },
        ),
        (
            "cursor-ns-dotted-coll",
            doc! { "ok": 1.0, "cursor": { "id": 0_i64, "ns": "brook.system.buckets.events", "nextBatch": [] } },
        ),
        (
            "cursor-no-batch",
            doc! { "ok": 1.0, "cursor": { "id": 0_i64, "ns": "brook.events" } },
        ),
        (
            "cursor-batch-not-array",
            doc! { "ok": 1.0, "cursor": { "id": 0_i64, "ns": "brook.events", "nextBatch": { "0": { "a": 1 } } } },
        ),
        (
            "cursor-batch-not-docs",
            doc! { "ok": 1.0, "cursor": { "id": 0_i64, "ns": "brook.events", "nextBatch": [1, "two", null, [3]] } },
        ),
        (
            "cursor-both-batches",
            doc! { "ok": 1.0, "cursor": { "id": 9_i64, "ns": "brook.events", "firstBatch": [{ "a": 1 }], "nextBatch": [{ "b": 2 }] } },
        ),
        ("cursor-not-doc", doc! { "ok": 1.0, "cursor": [1, 2] }),
        (
            "cursor-pbrt-not-doc",
            doc! { "ok": 1.0, "cursor": { "id": 0_i64, "ns": "brook.events", "nextBatch": [], "postBatchResumeToken": "tok" } },
        ),
        (
            "cursor-optime-wrong-type",
            doc! { "ok": 1.0, "operationTime": 5, "$clusterTime": 7, "cursor": { "id": 0_i64, "ns": "brook.events", "nextBatch": [] } },
        ),
        (
            "change-stream-first",
            doc! { "ok": 1.0, "cursor": { "id": 7_000_000_001_i64, "ns": "brook.events", "firstBatch": [], "postBatchResumeToken": pbrt.clone() }, "operationTime": Timestamp { time: 1_700_000_000, increment: 1 }, "$clusterTime": cluster_time() },
        ),
        (
            "change-stream-next",
            doc! { "ok": 1.0, "cursor": { "id": 7_000_000_001_i64, "ns": "brook.events", "nextBatch": events, "postBatchResumeToken": pbrt }, "operationTime": Timestamp { time: 1_700_000_000, increment: 3 }, "$clusterTime": cluster_time() },
        ),
        (
            "change-stream-invalidate",
            doc! { "ok": 1.0, "cursor": { "id": 0_i64, "ns": "brook.events", "nextBatch": [{ "_id": { "_data": "82FF" }, "operationType": "invalidate", "clusterTime": Timestamp { time: 1, increment: 1 } }] } },
        ),
        (
            "hello-primary",
            doc! { "ok": 1.0, "isWritablePrimary": true, "helloOk": true, "topologyVersion": { "processId": bson::oid::ObjectId::from_bytes([2; 12]), "counter": 0_i64 }, "maxBsonObjectSize": 16_777_216, "maxMessageSizeBytes": 48_000_000, "maxWriteBatchSize": 100_000, "localTime": bson::DateTime::from_millis(0), "logicalSessionTimeoutMinutes": 30, "connectionId": 7, "minWireVersion": 0, "maxWireVersion": 25, "readOnly": false, "compression": ["zstd", "zlib", "snappy"], "saslSupportedMechs": ["SCRAM-SHA-256"] },
        ),
        (
            "hello-secondary",
            doc! { "ok": 1.0, "isWritablePrimary": false, "secondary": true, "setName": "rs0", "setVersion": 1, "hosts": ["a:27017", "b:27017"], "primary": "a:27017", "me": "b:27017", "electionId": bson::oid::ObjectId::from_bytes([3; 12]), "minWireVersion": 0, "maxWireVersion": 21 },
        ),
        (
            "hello-mongos",
            doc! { "ok": 1.0, "ismaster": true, "msg": "isdbgrid", "maxWireVersion": 25, "minWireVersion": 0 },
        ),
        (
            "hello-legacy-ismaster",
            doc! { "ok": 1.0, "ismaster": true, "maxWireVersion": 6, "minWireVersion": 0 },
        ),
        (
            "hello-wrong-types",
            doc! { "ok": 1.0, "isWritablePrimary": "yes", "maxWireVersion": "25", "maxBsonObjectSize": -1, "maxMessageSizeBytes": 1e300, "logicalSessionTimeoutMinutes": null, "compression": "zlib", "hosts": [1, 2], "connectionId": 1.5 },
        ),
        (
            "hello-no-wire-versions",
            doc! { "ok": 1.0, "isWritablePrimary": true },
        ),
    ];

    for (name, f) in &frames {
        out.push(("frame_decode", format!("handmade-{name}.bin"), f.clone()));
    }
    for (name, f) in frames.iter().filter(|(n, _)| n.starts_with("valid")) {
        out.push((
            "message_roundtrip",
            format!("handmade-{name}.bin"),
            f.clone(),
        ));
    }
    for (name, f) in comp.drain(..) {
        out.push(("compressed_frame", format!("handmade-{name}.bin"), f));
    }
    for (name, d) in &replies {
        let r = reply(d);
        out.push(("reply_parse", format!("handmade-{name}.bin"), r.clone()));
        if name.starts_with("err")
            || name.starts_with("change-stream")
            || name.starts_with("cursor-first")
        {
            out.push(("frame_decode", format!("handmade-reply-{name}.bin"), r));
        }
    }
    // A reply compressed, and a checksummed one, for the parser target too.
    let cs = reply(
        &replies
            .iter()
            .find(|(n, _)| *n == "change-stream-next")
            .map(|(_, d)| d.clone())
            .unwrap_or_default(),
    );
    out.push((
        "reply_parse",
        "handmade-change-stream-next-zstd.bin".to_owned(),
        compress_frame(&cs, 3),
    ));
    out.push((
        "compressed_frame",
        "handmade-change-stream-next-zlib.bin".to_owned(),
        compress_frame(&cs, 2),
    ));
    let err = bson_bytes(&doc! { "ok": 0.0, "errmsg": "x", "code": 43 });
    out.push((
        "reply_parse",
        "handmade-err-checksummed.bin".to_owned(),
        op_msg_checksummed(901, 12, 0, &[Sec::Body(&err)]),
    ));
    out
}

#[test]
#[ignore = "writes fuzz/seeds/*/handmade-*.bin; run on purpose with --ignored"]
fn write_handmade_seeds() {
    for (target, name, bytes) in handmade() {
        let dir = seeds_dir().join(target);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let path = dir.join(&name);
        let mut f = fs::File::create(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        f.write_all(&bytes)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

#[test]
fn handmade_shapes_are_decided_as_named() {
    use brook_wire::{DecodeLimits, decode};
    let limits = DecodeLimits {
        max_message_size: frame::FRAME_LIMIT,
    };
    for (target, name, bytes) in handmade() {
        if target != "frame_decode" && target != "compressed_frame" {
            continue;
        }
        let mut buf = bytes::BytesMut::from(&bytes[..]);
        let result = decode(&mut buf, &limits);
        if name.starts_with("handmade-err-") {
            assert!(result.is_err(), "{target}/{name} decoded: {result:?}");
        } else if name.starts_with("handmade-valid-") || name.starts_with("handmade-stream-") {
            assert!(matches!(result, Ok(Some(_))), "{target}/{name}: {result:?}");
        } else if name.starts_with("handmade-need-more-") {
            assert!(matches!(result, Ok(None)), "{target}/{name}: {result:?}");
        }
    }
}
