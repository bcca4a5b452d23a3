//! Putting split events back together.
//!
//! A change stream whose pipeline ends with `{$changeStreamSplitLargeEvent: {}}` (MongoDB
//! 7.0, 6.0.9) returns an event over 16 MiB as fragments: documents with their own `_id`
//! (a resume token per fragment), `splitEvent: {fragment: k, of: n}` (counted from 1),
//! and a share of the event's top-level fields, in the event's order. They arrive in
//! order, possibly across batches. [`Reassembler`] takes every document the stream
//! receives: a whole event passes through; fragments are held until the last one, then
//! one event comes out, with every fragment's fields in order, without `splitEvent`, and
//! the last fragment's `_id` (resuming after it continues with the next event).
//!
//! Anything but that sequence is an error, never a guess: a fragment out of order, a
//! change of `of`, a first fragment other than 1, a whole event in the middle of a split
//! one, a field repeated across fragments, a malformed `splitEvent`, a fragment without
//! `_id`, and an event growing beyond [`MAX_REASSEMBLED_SIZE`]. After an error nothing is
//! held.

// The change stream wires this in; until then only the tests call it.
#![allow(dead_code)]

use std::collections::HashSet;

use brook_changestream::ChangeStreamError;
use brook_wire::SharedDoc;
use bson::raw::{RawBsonRef, RawDocument, RawDocumentBuf};
use bytes::Bytes;

use crate::Error;
use crate::error::ErrorKind;

/// The largest event reassembled (64 MiB: four fragments' worth of 16 MiB; a server
/// refuses messages over 48,000,000 bytes, so one event's images rarely come near it).
/// Beyond it, the fragments are dropped and the push fails, rather than growing without
/// bound on a stream that never sends its last fragment.
pub(crate) const MAX_REASSEMBLED_SIZE: usize = 64 * 1024 * 1024;

/// Collects the fragments of split events (see the module's documentation).
#[derive(Debug)]
pub(crate) struct Reassembler {
    pending: Option<Pending>,
    max_size: usize,
}

/// The fragments of one event received so far.
#[derive(Debug)]
struct Pending {
    /// `splitEvent.of` of every fragment.
    of: i32,
    /// The fragment number expected next.
    next: i32,
    /// Every field so far, but `_id` and `splitEvent`, in order.
    fields: RawDocumentBuf,
    /// Their names, to refuse a field repeated across fragments.
    keys: HashSet<String>,
    /// Their total BSON size.
    size: usize,
}

/// Where the split of a fragment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Split {
    fragment: i32,
    of: i32,
}

impl Default for Reassembler {
    fn default() -> Self {
        Reassembler::new()
    }
}

impl Reassembler {
    /// A reassembler bounded by [`MAX_REASSEMBLED_SIZE`].
    pub(crate) fn new() -> Reassembler {
        Reassembler::with_max_size(MAX_REASSEMBLED_SIZE)
    }

    /// A reassembler whose events may grow up to `max_size` bytes of fields.
    pub(crate) fn with_max_size(max_size: usize) -> Reassembler {
        Reassembler {
            pending: None,
            max_size,
        }
    }

    /// Whether fragments of an event are held, waiting for the rest.
    pub(crate) fn in_progress(&self) -> bool {
        self.pending.is_some()
    }

    /// Drops the fragments held (e.g. when the stream resumes: it resumes after the last
    /// complete event's token, so the fragments come again).
    pub(crate) fn reset(&mut self) {
        self.pending = None;
    }

    /// Takes the next document of the stream: `Some(event)` for a whole event (one
    /// that was not split passes through untouched), `None` while fragments are held.
    /// On an error nothing is held any more.
    pub(crate) fn push(&mut self, doc: SharedDoc) -> Result<Option<SharedDoc>, Error> {
        let result = self.push_inner(doc);
        if result.is_err() {
            self.pending = None;
        }
        result
    }

    fn push_inner(&mut self, doc: SharedDoc) -> Result<Option<SharedDoc>, Error> {
        let raw = doc.as_raw();
        let Some(split) = split_of(raw)? else {
            if let Some(p) = &self.pending {
                return Err(malformed(format!(
                    "a whole event arrived after fragment {} of {} of a split event",
                    p.next - 1,
                    p.of
                )));
            }
            return Ok(Some(doc));
        };
        let pending = match self.pending.take() {
            None if split.fragment != 1 => {
                return Err(malformed(format!(
                    "fragment {} of {} of a split event arrived without fragment 1",
                    split.fragment, split.of
                )));
            }
            None => Pending {
                of: split.of,
                next: 1,
                fields: RawDocumentBuf::new(),
                keys: HashSet::new(),
                size: 0,
            },
            Some(p) if split.of != p.of => {
                return Err(malformed(format!(
                    "fragment {} says the split event has {} fragments, earlier ones said {}",
                    split.fragment, split.of, p.of
                )));
            }
            Some(p) if split.fragment != p.next => {
                return Err(malformed(format!(
                    "fragment {} of {} of a split event arrived where fragment {} was expected",
                    split.fragment, split.of, p.next
                )));
            }
            Some(p) => p,
        };
        let mut pending = pending;
        let mut id = None;
        for element in raw.iter_elements() {
            let element = element.map_err(Error::bson)?;
            let key = element.key().as_str();
            match key {
                "_id" => {
                    id = match element.value().map_err(Error::bson)? {
                        RawBsonRef::Document(token) => Some(token),
                        _ => None,
                    };
                    continue;
                }
                "splitEvent" => continue,
                _ => {}
            }
            let size = element.size();
            let total = pending.size.saturating_add(size);
            if total > self.max_size {
                return Err(malformed(format!(
                    "the split event grows beyond {} bytes at fragment {} of {}",
                    self.max_size, split.fragment, split.of
                )));
            }
            if !pending.keys.insert(key.to_owned()) {
                return Err(malformed(format!(
                    "field `{key}` appears twice in the fragments of a split event"
                )));
            }
            pending
                .fields
                .append(element.key(), element.value().map_err(Error::bson)?);
            pending.size = total;
        }
        let Some(id) = id else {
            return Err(malformed(format!(
                "fragment {} of {} of a split event has no `_id` document",
                split.fragment, split.of
            )));
        };
        if split.fragment < split.of {
            pending.next = split.fragment + 1;
            self.pending = Some(pending);
            return Ok(None);
        }
        assemble(id, &pending.fields).map(Some)
    }
}

/// The event: `{_id: <last fragment's token>, <every field>}`.
fn assemble(id: &RawDocument, fields: &RawDocumentBuf) -> Result<SharedDoc, Error> {
    let fields = fields.as_bytes();
    // A document is an i32 length, its elements, and a 0 byte; the `_id` element is its
    // type (0x03), `_id\0`, and the token document.
    let elements = fields.get(4..fields.len().saturating_sub(1)).unwrap_or(&[]);
    let len = 4 + 1 + 4 + id.as_bytes().len() + elements.len() + 1;
    let declared =
        i32::try_from(len).map_err(|_| malformed("the split event is too large".to_owned()))?;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&declared.to_le_bytes());
    out.push(0x03);
    out.extend_from_slice(b"_id\0");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(elements);
    out.push(0);
    SharedDoc::from_bytes(Bytes::from(out)).map_err(Error::bson)
}

/// The `splitEvent` of a fragment; `None` for a whole event.
fn split_of(raw: &RawDocument) -> Result<Option<Split>, Error> {
    let split = match raw.get("splitEvent").map_err(Error::bson)? {
        None => return Ok(None),
        Some(RawBsonRef::Document(split)) => split,
        Some(_) => return Err(malformed("`splitEvent` is not a document".to_owned())),
    };
    let number = |field: &str| -> Result<i32, Error> {
        match split.get(field).map_err(Error::bson)? {
            Some(RawBsonRef::Int32(n)) => Ok(n),
            Some(RawBsonRef::Int64(n)) => i32::try_from(n)
                .map_err(|_| malformed(format!("`splitEvent.{field}` is out of range: {n}"))),
            _ => Err(malformed(format!("`splitEvent.{field}` is not an integer"))),
        }
    };
    let (fragment, of) = (number("fragment")?, number("of")?);
    if fragment < 1 || of < 1 || fragment > of {
        return Err(malformed(format!(
            "`splitEvent` says fragment {fragment} of {of}"
        )));
    }
    Ok(Some(Split { fragment, of }))
}

fn malformed(message: String) -> Error {
    Error::new(ErrorKind::ChangeStream(ChangeStreamError::Malformed(
        message,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{Bson, Document, doc};
    use proptest::prelude::*;

    fn shared(d: &Document) -> SharedDoc {
        SharedDoc::from_document(d).unwrap()
    }

    fn token(n: u32) -> Document {
        doc! { "_data": format!("8265000000000000012B042C0100296E{n:04X}04") }
    }

    fn fragment(k: i32, of: i32, fields: Document) -> Document {
        let mut d = doc! {
            "_id": token(u32::try_from(k).unwrap()),
            "splitEvent": { "fragment": k, "of": of },
        };
        d.extend(fields);
        d
    }

    fn message(err: &Error) -> String {
        err.to_string()
    }

    #[test]
    fn whole_events_pass_through_untouched() {
        let mut r = Reassembler::new();
        let event = shared(&doc! { "_id": token(0), "operationType": "insert", "x": 1 });
        let out = r.push(event.clone()).unwrap().unwrap();
        assert_eq!(out.as_bytes(), event.as_bytes());
        assert!(!r.in_progress());
    }

    #[test]
    fn three_fragments_make_one_event_with_the_last_token() {
        let mut r = Reassembler::new();
        let f1 = fragment(
            1,
            3,
            doc! { "operationType": "update", "clusterTime": bson::Timestamp { time: 5, increment: 1 } },
        );
        let f2 = fragment(2, 3, doc! { "fullDocument": { "_id": 1, "a": "x" } });
        let f3 = fragment(
            3,
            3,
            doc! { "fullDocumentBeforeChange": { "_id": 1, "a": "y" }, "ns": { "db": "d" } },
        );
        assert!(r.push(shared(&f1)).unwrap().is_none());
        assert!(r.in_progress());
        assert!(r.push(shared(&f2)).unwrap().is_none());
        let event = r.push(shared(&f3)).unwrap().unwrap().to_document().unwrap();
        assert!(!r.in_progress());
        assert_eq!(
            event,
            doc! {
                "_id": token(3),
                "operationType": "update",
                "clusterTime": bson::Timestamp { time: 5, increment: 1 },
                "fullDocument": { "_id": 1, "a": "x" },
                "fullDocumentBeforeChange": { "_id": 1, "a": "y" },
                "ns": { "db": "d" },
            }
        );
        // The next event passes through.
        let next = shared(&doc! { "_id": token(9), "operationType": "delete" });
        assert!(r.push(next).unwrap().is_some());
    }

    #[test]
    fn a_single_fragment_is_a_whole_event_without_split_event() {
        let mut r = Reassembler::new();
        let event = r
            .push(shared(&fragment(1, 1, doc! { "operationType": "insert" })))
            .unwrap()
            .unwrap()
            .to_document()
            .unwrap();
        assert_eq!(event, doc! { "_id": token(1), "operationType": "insert" });
    }

    #[test]
    fn int64_counters_are_read() {
        let mut r = Reassembler::new();
        let f = doc! { "_id": token(1), "splitEvent": { "fragment": 1i64, "of": 1i64 }, "a": 1 };
        let event = r.push(shared(&f)).unwrap().unwrap().to_document().unwrap();
        assert_eq!(event, doc! { "_id": token(1), "a": 1 });
    }

    /// Push `docs`; the error of the last, which must fail (the others must not).
    fn failure(r: &mut Reassembler, docs: &[Document]) -> String {
        let (last, head) = docs.split_last().unwrap();
        for d in head {
            r.push(shared(d)).expect("an earlier document is fine");
        }
        let err = r
            .push(shared(last))
            .expect_err("the last document is refused");
        assert!(!r.in_progress(), "nothing is held after an error");
        message(&err)
    }

    #[test]
    fn every_broken_sequence_is_an_error_and_drops_what_was_held() {
        let f = |k, of| fragment(k, of, doc! { format!("f{k}"): k });
        let whole = doc! { "_id": token(0), "operationType": "insert" };
        let cases: Vec<(Vec<Document>, &str)> = vec![
            (vec![f(1, 3), f(3, 3)], "where fragment 2 was expected"),
            (
                vec![f(1, 3), f(2, 3), f(2, 3)],
                "where fragment 3 was expected",
            ),
            (vec![f(1, 3), f(2, 4)], "earlier ones said 3"),
            (vec![f(2, 3)], "without fragment 1"),
            (
                vec![f(1, 2), whole.clone()],
                "a whole event arrived after fragment 1 of 2",
            ),
            (
                vec![
                    fragment(1, 2, doc! { "a": 1, "b": 2 }),
                    fragment(2, 2, doc! { "b": 3 }),
                ],
                "field `b` appears twice",
            ),
            (vec![fragment(0, 2, doc! {})], "fragment 0 of 2"),
            (vec![fragment(3, 2, doc! {})], "fragment 3 of 2"),
            (vec![fragment(1, 0, doc! {})], "fragment 1 of 0"),
            (
                vec![doc! { "_id": token(1), "splitEvent": "1/2" }],
                "not a document",
            ),
            (
                vec![doc! { "_id": token(1), "splitEvent": { "fragment": 1.0, "of": 2 } }],
                "`splitEvent.fragment` is not an integer",
            ),
            (
                vec![doc! { "_id": token(1), "splitEvent": { "fragment": 1, "of": (1i64 << 40) } }],
                "out of range",
            ),
            (
                vec![doc! { "splitEvent": { "fragment": 1, "of": 1 }, "a": 1 }],
                "has no `_id` document",
            ),
        ];
        for (docs, expected) in cases {
            let mut r = Reassembler::new();
            let msg = failure(&mut r, &docs);
            assert!(msg.contains(expected), "{msg:?} should say {expected:?}");
            assert!(msg.starts_with("malformed change stream data"), "{msg}");
            // The reassembler is usable again.
            assert!(r.push(shared(&whole)).unwrap().is_some());
        }
    }

    #[test]
    fn a_field_repeated_within_a_fragment_is_an_error() {
        // Documents cannot hold a key twice, bytes can: rename `ab` to `aa` in place.
        let f = fragment(1, 1, doc! { "aa": 1, "ab": 2 });
        let mut bytes = f.to_vec().unwrap();
        let at = bytes.windows(3).position(|w| w == b"ab\0").unwrap();
        bytes[at + 1] = b'a';
        let doc = SharedDoc::from_bytes(Bytes::from(bytes)).unwrap();
        let mut r = Reassembler::new();
        let err = r.push(doc).unwrap_err();
        assert!(message(&err).contains("field `aa` appears twice"), "{err}");
        assert!(!r.in_progress());
    }

    #[test]
    fn growth_is_bounded() {
        let mut r = Reassembler::with_max_size(1000);
        let msg = failure(
            &mut r,
            &[
                fragment(1, 3, doc! { "a": "x".repeat(600) }),
                fragment(2, 3, doc! { "b": "y".repeat(600) }),
            ],
        );
        assert!(
            msg.contains("grows beyond 1000 bytes at fragment 2 of 3"),
            "{msg}"
        );
        assert_eq!(MAX_REASSEMBLED_SIZE, 64 * 1024 * 1024);
    }

    #[test]
    fn reset_drops_held_fragments() {
        let mut r = Reassembler::new();
        assert!(
            r.push(shared(&fragment(1, 2, doc! { "a": 1 })))
                .unwrap()
                .is_none()
        );
        r.reset();
        assert!(!r.in_progress());
        // The resumed stream sends the event's fragments again, from fragment 1.
        assert!(
            r.push(shared(&fragment(1, 2, doc! { "a": 1 })))
                .unwrap()
                .is_none()
        );
        let event = r
            .push(shared(&fragment(2, 2, doc! { "b": 2 })))
            .unwrap()
            .unwrap();
        assert_eq!(
            event.to_document().unwrap(),
            doc! { "_id": token(2), "a": 1, "b": 2 }
        );
    }

    #[test]
    fn events_over_16_mib_are_reassembled() {
        let big = "z".repeat(10 * 1024 * 1024);
        let mut r = Reassembler::new();
        let f1 = fragment(
            1,
            2,
            doc! { "operationType": "replace", "fullDocument": { "_id": 1, "big": big.clone() } },
        );
        let f2 = fragment(
            2,
            2,
            doc! { "fullDocumentBeforeChange": { "_id": 1, "big": big.clone() } },
        );
        assert!(r.push(shared(&f1)).unwrap().is_none());
        let event = r.push(shared(&f2)).unwrap().unwrap();
        assert!(event.len() > 20 * 1024 * 1024);
        let event = event.to_document().unwrap();
        assert_eq!(event.get_document("_id").unwrap(), &token(2));
        assert_eq!(
            event.keys().map(String::as_str).collect::<Vec<_>>(),
            [
                "_id",
                "operationType",
                "fullDocument",
                "fullDocumentBeforeChange"
            ]
        );
        for image in ["fullDocument", "fullDocumentBeforeChange"] {
            assert_eq!(
                event
                    .get_document(image)
                    .unwrap()
                    .get_str("big")
                    .unwrap()
                    .len(),
                big.len()
            );
        }
    }

    /// The test's own splitter: the event's fields but `_id`, cut at `cuts` (positions
    /// among the fields), each part a fragment with its own token.
    fn split(event: &Document, cuts: &[usize]) -> Vec<Document> {
        let fields: Vec<(&String, &Bson)> = event.iter().filter(|(k, _)| *k != "_id").collect();
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (fields.len() + 1)).collect();
        bounds.push(0);
        bounds.push(fields.len());
        bounds.sort_unstable();
        bounds.dedup();
        let parts: Vec<&[(&String, &Bson)]> =
            bounds.windows(2).map(|w| &fields[w[0]..w[1]]).collect();
        let parts = if parts.is_empty() {
            vec![&fields[..]]
        } else {
            parts
        };
        let of = i32::try_from(parts.len()).unwrap();
        parts
            .iter()
            .zip(1..)
            .map(|(part, k)| {
                let mut fields = Document::new();
                for (key, value) in *part {
                    fields.insert((*key).clone(), (*value).clone());
                }
                fragment(k, of, fields)
            })
            .collect()
    }

    fn value() -> impl Strategy<Value = Bson> {
        prop_oneof![
            any::<i32>().prop_map(Bson::Int32),
            any::<i64>().prop_map(Bson::Int64),
            ".{0,40}".prop_map(Bson::String),
            any::<bool>().prop_map(Bson::Boolean),
            Just(Bson::Null),
            proptest::collection::vec(any::<i32>(), 0..5)
                .prop_map(|v| Bson::Array(v.into_iter().map(Bson::Int32).collect())),
            ("[a-z]{1,5}", any::<i32>()).prop_map(|(k, v)| Bson::Document(doc! { k: v })),
        ]
    }

    proptest! {
        #[test]
        fn any_split_reassembles_to_the_original(
            fields in proptest::collection::btree_map("[a-zA-Z][a-zA-Z0-9]{0,12}", value(), 0..12),
            cuts in proptest::collection::vec(0usize..20, 0..6),
        ) {
            let mut event = doc! { "_id": token(0) };
            for (k, v) in fields {
                if k != "splitEvent" && k != "_id" {
                    event.insert(k, v);
                }
            }
            let fragments = split(&event, &cuts);
            let mut r = Reassembler::new();
            let mut out = None;
            for (i, f) in fragments.iter().enumerate() {
                let got = r.push(shared(f)).unwrap();
                prop_assert_eq!(got.is_some(), i + 1 == fragments.len());
                out = got;
            }
            let out = out.unwrap().to_document().unwrap();
            let mut expected = event.clone();
            expected.insert("_id", token(u32::try_from(fragments.len()).unwrap()));
            prop_assert_eq!(out, expected);
            prop_assert!(!r.in_progress());
        }
    }
}
