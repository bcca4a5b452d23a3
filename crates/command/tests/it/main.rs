//! brook-command end to end through brook-wire's real framing: build a command, frame
//! it, decode it as a server would; frame a reply, decode it, parse it.

use brook_command::{
    Aggregate, AggregateTarget, Command, CommandError, GetMore, Insert, Reply, SharedDoc,
};
use brook_wire::{DecodeLimits, EncodeOptions, Message, decode};
use bson::{Document, Timestamp, doc};
use bytes::BytesMut;
use proptest::prelude::*;

/// Encodes `msg` and decodes it back, the way the other side of a socket would.
fn round_trip(msg: &Message) -> Message {
    let mut buf = BytesMut::new();
    msg.encode(&mut buf, &EncodeOptions::default()).unwrap();
    let decoded = decode(&mut buf, &DecodeLimits::default()).unwrap().unwrap();
    assert!(buf.is_empty());
    decoded.message
}

fn server_reply(request_id: i32, body: &Document) -> Reply {
    let msg = Message::command(request_id, SharedDoc::from_document(body).unwrap());
    Reply::from(round_trip(&msg))
}

#[test]
fn insert_goes_out_with_a_documents_sequence() {
    let docs: Vec<SharedDoc> = (0..3)
        .map(|i| SharedDoc::from_document(&doc! { "_id": i, "v": "x" }).unwrap())
        .collect();
    let cmd = Insert::new("events", docs.clone());
    let msg = cmd.build("app").unwrap().into_message(11).unwrap();
    let seen = round_trip(&msg);
    assert_eq!(seen.request_id, 11);
    assert_eq!(
        seen.body.to_document().unwrap(),
        doc! { "insert": "events", "ordered": true, "$db": "app" }
    );
    assert_eq!(seen.sequences.len(), 1);
    assert_eq!(seen.sequences[0].identifier, "documents");
    assert_eq!(seen.sequences[0].documents, docs);

    let reply = server_reply(1, &doc! { "n": 3, "ok": 1.0 });
    assert_eq!(cmd.handle_reply(reply).unwrap().n, 3);
}

#[test]
fn a_decoded_batch_points_into_the_frame_buffer() {
    let events: Vec<Document> = (0..50)
        .map(|i| doc! { "_id": { "_data": format!("82{i:04}") }, "operationType": "insert", "fullDocument": { "i": i } })
        .collect();
    let reply = server_reply(
        2,
        &doc! {
            "cursor": {
                "nextBatch": events.clone(),
                "postBatchResumeToken": { "_data": "820031" },
                "id": 99i64,
                "ns": "app.events",
            },
            "ok": 1.0,
            "operationTime": Timestamp { time: 1, increment: 1 },
        },
    );
    let frame = reply.body.bytes().clone();
    let (start, end) = (
        frame.as_ptr() as usize,
        frame.as_ptr() as usize + frame.len(),
    );
    let out = GetMore::new(99, "events").handle_reply(reply).unwrap();
    assert_eq!(out.batch.len(), 50);
    for (doc, want) in out.batch.iter().zip(&events) {
        let p = doc.bytes().as_ptr() as usize;
        assert!(p > start && p + doc.len() < end);
        assert_eq!(&doc.to_document().unwrap(), want);
    }
}

#[test]
fn getmore_and_aggregate_bodies_survive_framing() {
    let mut gm = GetMore::new(i64::MAX, "events");
    gm.max_time_ms = Some(1000);
    let seen = round_trip(&gm.build("app").unwrap().into_message(3).unwrap());
    assert_eq!(
        seen.body.to_document().unwrap(),
        doc! { "getMore": i64::MAX, "collection": "events", "maxTimeMS": 1000, "$db": "app" }
    );
    let agg = Aggregate::new(
        AggregateTarget::Database,
        vec![doc! { "$changeStream": {} }],
    );
    let seen = round_trip(&agg.build("app").unwrap().into_message(4).unwrap());
    assert_eq!(seen.body.first_key(), Some("aggregate"));
}

proptest! {
    /// Any byte string that passes framing's cheap checks parses to a value or a typed
    /// error, never a panic, for every reply parser.
    #[test]
    fn arbitrary_replies_never_panic(inner in proptest::collection::vec(any::<u8>(), 0..200)) {
        let len = i32::try_from(inner.len() + 5).unwrap();
        let mut bytes = len.to_le_bytes().to_vec();
        bytes.extend_from_slice(&inner);
        bytes.push(0);
        let body = SharedDoc::from_bytes(bytes::Bytes::from(bytes)).unwrap();
        let reply = Reply::new(body);
        let _ = GetMore::new(1, "c").handle_reply(reply.clone());
        let _ = Insert::new("c", vec![]).handle_reply(reply.clone());
        let _ = brook_command::Hello::new().handle_reply(reply.clone());
        let _ = brook_command::KillCursors::new("c", vec![1]).handle_reply(reply.clone());
        let _ = brook_command::RunCommand::new(doc! { "ping": 1 }).handle_reply(reply.clone());
        let r = brook_command::check_ok(reply.body.as_raw());
        let typed = matches!(r, Ok(()) | Err(CommandError::Server(_) | CommandError::MalformedReply { .. }));
        prop_assert!(typed, "unexpected {:?}", r);
    }

    /// Well-formed cursor replies with arbitrary batches parse back to the same documents.
    #[test]
    fn cursor_batches_round_trip(values in proptest::collection::vec(any::<i64>(), 0..20), id in any::<i64>()) {
        let batch: Vec<Document> = values.iter().map(|v| doc! { "v": *v }).collect();
        let reply = Reply::from_document(&doc! {
            "cursor": { "firstBatch": batch.clone(), "id": id, "ns": "a.b" }, "ok": 1,
        }).unwrap();
        let out = GetMore::new(1, "b").handle_reply(reply).unwrap();
        prop_assert_eq!(out.id, id);
        let got: Vec<Document> = out.batch.iter().map(|d| d.to_document().unwrap()).collect();
        prop_assert_eq!(got, batch);
    }
}
