//! Support code for brook's benchmarks: realistic change events and the getMore replies
//! that carry them, as documents and as wire frames, and the decode path a connection
//! runs on each reply.
//!
//! The criterion codec bench lives in `benches/`; the replay server (`replay-server`) and
//! the bench driver (`brook-bench`) that `cargo xtask bench` runs side by side with the
//! official driver's (`benches/compare`) live in `src/bin/`. See `docs/BENCHMARKS.md`.
#![forbid(unsafe_code)]

use bson::oid::ObjectId;
use bson::{Bson, DateTime, Document, Timestamp, doc};
use bytes::{Bytes, BytesMut};
use serde::Deserialize;

use brook_command::{Command, CommandError, CursorReply, GetMore, Reply};
use brook_wire::{DecodeLimits, EncodeOptions, Message, MsgFlags, SharedDoc, WireError, decode};

/// The database of the generated events.
pub const DB: &str = "shop";
/// The collection of the generated events.
pub const COLL: &str = "orders";
/// The cursor id of the generated replies.
pub const CURSOR_ID: i64 = 7_311_562_894_219_550_001;

/// What can go wrong while building or reading a benchmark reply.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Encoding or decoding a frame failed.
    #[error("wire: {0}")]
    Wire(#[from] WireError),
    /// Parsing the reply failed.
    #[error("command: {0}")]
    Command(#[from] CommandError),
    /// The buffer did not hold a whole frame.
    #[error("the buffer holds no complete frame")]
    Incomplete,
}

/// A resume token's `_data`: the hex string a server writes (a KeyString of the cluster
/// time, the event's UUID and document key), unique per `i`.
pub fn resume_token_data(i: u64) -> String {
    format!(
        "8266A1B2C3{:08X}2B042C0100296E5A100446645F69640064{:024X}0004",
        i & 0xffff_ffff,
        u128::from(i) * 0x9E37_79B9
    )
}

/// An `insert` change event as a server sends it (about 300 bytes of BSON):
/// `_id {_data}`, `operationType`, `clusterTime`, `wallTime`, `fullDocument`, `ns`,
/// `documentKey`.
pub fn change_event(i: u64) -> Document {
    let oid = ObjectId::from_bytes(object_id_bytes(i));
    let secs = 1_732_560_000 + u32::try_from(i / 1000).unwrap_or(u32::MAX);
    let increment = u32::try_from(i % 1000).unwrap_or(0) + 1;
    let millis = i64::from(secs) * 1000 + i64::try_from(i % 1000).unwrap_or(0);
    doc! {
        "_id": { "_data": resume_token_data(i) },
        "operationType": "insert",
        "clusterTime": Timestamp { time: secs, increment },
        "wallTime": DateTime::from_millis(millis),
        "fullDocument": {
            "_id": oid,
            "customer": format!("c{:05}", i % 50_000),
            "total": 19.99 + (i % 100) as f64,
        },
        "ns": { "db": DB, "coll": COLL },
        "documentKey": { "_id": oid },
    }
}

/// The size of a small change event (bytes of BSON).
pub const SMALL_EVENT: usize = 300;
/// The size of a large change event (bytes of BSON).
pub const LARGE_EVENT: usize = 2048;

/// An `insert` change event like [`change_event`] whose `fullDocument` carries as many
/// order lines (`items: [{sku, qty, price}]`) as it takes to reach `size` bytes (never
/// fewer lines than zero: a `size` under ~300 gives the plain event).
pub fn change_event_sized(i: u64, size: usize) -> Document {
    let mut event = change_event(i);
    let len = |d: &Document| bson::serialize_to_vec(d).map_or(usize::MAX, |b| b.len());
    let mut items: Vec<Bson> = Vec::new();
    let mut line = 0u64;
    while len(&event) < size {
        items.push(Bson::Document(doc! {
            "sku": format!("SKU-{:06}", (i * 31 + line) % 1_000_000),
            "qty": i32::try_from(line % 7).unwrap_or(0) + 1,
            "price": 4.5 + (line % 40) as f64,
        }));
        line += 1;
        if let Ok(full) = event.get_document_mut("fullDocument") {
            full.insert("items", items.clone());
        } else {
            break;
        }
    }
    event
}

/// The order a change event's `fullDocument` holds, for typed consumers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Order {
    /// The order's id.
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// The customer's code.
    pub customer: String,
    /// The order's total.
    pub total: f64,
    /// The order lines (present in the large events only).
    #[serde(default)]
    pub items: Vec<OrderLine>,
}

/// One line of an [`Order`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OrderLine {
    /// The product's code.
    pub sku: String,
    /// How many.
    pub qty: i32,
    /// The unit price.
    pub price: f64,
}

/// The getMore request frame a floor client sends again and again: `{getMore: cursor_id,
/// collection, batchSize?, maxTimeMS: 1000, $db}` as request 1.
pub fn get_more_request_frame(cursor_id: i64) -> Result<Bytes, BenchError> {
    let mut get_more = GetMore::new(cursor_id, COLL);
    get_more.max_time_ms = Some(1000);
    let message = get_more.build(DB)?.into_message(1)?;
    let mut dst = BytesMut::new();
    message.encode(&mut dst, &EncodeOptions::default())?;
    Ok(dst.freeze())
}

fn object_id_bytes(i: u64) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&0x6744_1a00u32.to_be_bytes());
    b[4..].copy_from_slice(&i.to_be_bytes());
    b
}

/// A getMore reply carrying `events` change events, field order as a server writes it:
/// `{cursor: {nextBatch, postBatchResumeToken, id, ns}, ok, $clusterTime, operationTime}`.
pub fn get_more_reply(events: usize) -> Document {
    get_more_reply_sized(events, 0)
}

/// A getMore reply like [`get_more_reply`] whose events are [`change_event_sized`] events
/// of `size` bytes.
pub fn get_more_reply_sized(events: usize, size: usize) -> Document {
    let batch: Vec<Bson> = (0..events as u64)
        .map(|i| Bson::Document(change_event_sized(i, size)))
        .collect();
    let last = events.saturating_sub(1) as u64;
    let time = Timestamp {
        time: 1_732_560_000 + u32::try_from(last / 1000).unwrap_or(0),
        increment: 1,
    };
    doc! {
        "cursor": {
            "nextBatch": batch,
            "postBatchResumeToken": { "_data": resume_token_data(last) },
            "id": CURSOR_ID,
            "ns": format!("{DB}.{COLL}"),
        },
        "ok": 1.0,
        "$clusterTime": {
            "clusterTime": time,
            "signature": {
                "hash": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![0u8; 20] },
                "keyId": 0_i64,
            },
        },
        "operationTime": time,
    }
}

/// The reply body as a [`SharedDoc`] (serialised once).
pub fn get_more_reply_body(events: usize) -> Result<SharedDoc, BenchError> {
    Ok(SharedDoc::from_document(&get_more_reply(events))?)
}

/// The OP_MSG a server sends for a reply body, answering request 1.
pub fn reply_message(body: SharedDoc) -> Message {
    Message {
        request_id: 2,
        response_to: 1,
        flags: MsgFlags::empty(),
        body,
        sequences: Vec::new(),
    }
}

/// Encodes the reply frame for `body` into a new buffer (what a server does per reply).
pub fn encode_reply(body: &SharedDoc) -> Result<BytesMut, BenchError> {
    let mut dst = BytesMut::new();
    reply_message(body.clone()).encode(&mut dst, &EncodeOptions::default())?;
    Ok(dst)
}

/// Serialises `reply` and encodes its frame: the whole cost of building a reply from a
/// document.
pub fn serialize_and_encode_reply(reply: &Document) -> Result<BytesMut, BenchError> {
    let body = SharedDoc::from_document(reply)?;
    encode_reply(&body)
}

/// The encoded getMore reply frame carrying `events` change events.
pub fn get_more_reply_frame(events: usize) -> Result<Bytes, BenchError> {
    Ok(encode_reply(&get_more_reply_body(events)?)?.freeze())
}

/// The encoded getMore reply frame carrying `events` change events of `size` bytes.
pub fn get_more_reply_frame_sized(events: usize, size: usize) -> Result<Bytes, BenchError> {
    let body = SharedDoc::from_document(&get_more_reply_sized(events, size))?;
    Ok(encode_reply(&body)?.freeze())
}

/// What a connection does with a getMore reply: decode the frame off the front of `buf`
/// and parse the cursor reply, whose batch documents share the frame's buffer.
pub fn decode_get_more(buf: &mut BytesMut) -> Result<CursorReply, BenchError> {
    let limits = DecodeLimits::default();
    let decoded = decode(buf, &limits)?.ok_or(BenchError::Incomplete)?;
    let get_more = GetMore::new(CURSOR_ID, COLL);
    Ok(get_more.handle_reply(Reply::from(decoded.message))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_about_300_bytes() {
        for i in [0u64, 1, 999, 123_456] {
            let len = bson::serialize_to_vec(&change_event(i))
                .expect("serialises")
                .len();
            assert!((290..=330).contains(&len), "event {i} is {len} bytes");
        }
    }

    #[test]
    fn sized_events_reach_their_size_and_decode_as_orders() {
        for (size, lines) in [(SMALL_EVENT, false), (LARGE_EVENT, true)] {
            let event = change_event_sized(3, size);
            let len = bson::serialize_to_vec(&event).expect("serialises").len();
            assert!(len >= size.min(290) && len < size + 80, "{len} for {size}");
            let full = event.get_document("fullDocument").expect("fullDocument");
            let order: Order = bson::deserialize_from_document(full.clone()).expect("an order");
            assert_eq!(order.customer, "c00003");
            assert_eq!(!order.items.is_empty(), lines);
        }
    }

    #[test]
    fn the_floor_request_is_a_get_more() {
        let frame = get_more_request_frame(CURSOR_ID).expect("frame");
        let mut buf = BytesMut::from(&frame[..]);
        let decoded = decode(&mut buf, &DecodeLimits::default())
            .expect("decodes")
            .expect("whole");
        let body = decoded.message.body.as_raw();
        assert_eq!(body.get_i64("getMore").expect("getMore"), CURSOR_ID);
        assert_eq!(body.get_str("collection").expect("collection"), COLL);
        assert_eq!(body.get_str("$db").expect("$db"), DB);
    }

    #[test]
    fn events_have_distinct_resume_tokens() {
        assert_ne!(resume_token_data(1), resume_token_data(2));
        assert_eq!(resume_token_data(5), resume_token_data(5));
    }

    #[test]
    fn a_reply_frame_decodes_to_its_events_sharing_the_buffer() {
        for n in [0usize, 1, 100] {
            let frame = get_more_reply_frame(n).expect("frame");
            let mut buf = BytesMut::from(&frame[..]);
            let reply = decode_get_more(&mut buf).expect("decodes");
            assert!(buf.is_empty());
            assert_eq!(reply.batch.len(), n);
            assert_eq!(reply.id, CURSOR_ID);
            assert_eq!(reply.ns.db, DB);
            assert_eq!(reply.ns.coll, COLL);
            assert!(!reply.first_batch);
            let token = reply.post_batch_resume_token.expect("token");
            let data = token.as_raw().get_str("_data").expect("_data");
            assert_eq!(data, resume_token_data(n.saturating_sub(1) as u64));
            for (i, event) in reply.batch.iter().enumerate() {
                let op = event
                    .as_raw()
                    .get_str("operationType")
                    .expect("operationType");
                assert_eq!(op, "insert");
                let id = event.as_raw().get_document("_id").expect("_id");
                assert_eq!(
                    id.get_str("_data").expect("_data"),
                    resume_token_data(i as u64)
                );
            }
        }
    }

    #[test]
    fn encode_paths_agree() {
        let doc = get_more_reply(3);
        let a = serialize_and_encode_reply(&doc).expect("encodes");
        let b = encode_reply(&SharedDoc::from_document(&doc).expect("doc")).expect("encodes");
        assert_eq!(a, b);
    }

    #[test]
    fn a_partial_frame_is_incomplete() {
        let frame = get_more_reply_frame(2).expect("frame");
        let mut buf = BytesMut::from(&frame[..frame.len() - 1]);
        assert!(matches!(
            decode_get_more(&mut buf),
            Err(BenchError::Incomplete)
        ));
    }
}
