//! A one-pass reader of the two top-level fields the machine needs from every event:
//! `_id` (the resume token) and `operationType` (to spot an `invalidate`).
//!
//! It walks the element headers only (type byte, key compared as bytes, value skipped
//! by its type's length rule), and stops as soon as both fields were seen. Anything it
//! does not fully understand (a type whose length rule it does not apply, a non-ASCII
//! key, a length that does not fit) makes it give up, and the caller falls back to
//! bson's own `get`, so malformed or unusual events behave exactly as they did.

use std::ops::Range;

/// BSON element types whose values the walker knows how to skip.
const DOUBLE: u8 = 0x01;
const STRING: u8 = 0x02;
const DOCUMENT: u8 = 0x03;
const ARRAY: u8 = 0x04;
const BINARY: u8 = 0x05;
const UNDEFINED: u8 = 0x06;
const OBJECT_ID: u8 = 0x07;
const BOOLEAN: u8 = 0x08;
const DATE_TIME: u8 = 0x09;
const NULL: u8 = 0x0A;
const INT32: u8 = 0x10;
const TIMESTAMP: u8 = 0x11;
const INT64: u8 = 0x12;
const DECIMAL128: u8 = 0x13;
const MAX_KEY: u8 = 0x7F;
const MIN_KEY: u8 = 0xFF;

/// The smallest embedded document: a 4-byte length and its terminating NUL.
const MIN_DOC_LEN: usize = 5;

/// What one element's value is, as far as the walker cares.
enum Value {
    /// An embedded document at this byte range (of the event).
    Document(Range<usize>),
    /// A string; `true` when it is exactly `"invalidate"`.
    String { invalidate: bool },
    /// Any other value the walker could skip.
    Other,
}

/// What the walker found about one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Field<T> {
    /// The field was reached and read: `T` is the answer.
    Found(T),
    /// The document ended without the field.
    Absent,
    /// The walker gave up before reaching the field: ask bson.
    Unknown,
}

/// The two fields of an event, read in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventFields {
    /// `_id`: `Some(range)` of the embedded document when it is one, `None` when it
    /// has another type.
    pub(crate) id: Field<Option<Range<usize>>>,
    /// `operationType`: whether it is the string `"invalidate"`.
    pub(crate) invalidate: Field<bool>,
}

/// Reads a little-endian i32 at `at`, as a length (negative lengths are `None`).
fn read_len(b: &[u8], at: usize) -> Option<usize> {
    let end = at.checked_add(4)?;
    let bytes: [u8; 4] = b.get(at..end)?.try_into().ok()?;
    usize::try_from(i32::from_le_bytes(bytes)).ok()
}

/// Reads the value of type `kind` that starts at `at` in `b` (which ends with the
/// outer document's terminator at `limit`). Returns the value and where it ends, or
/// `None` when the walker should give up.
fn read_value(b: &[u8], kind: u8, at: usize, limit: usize) -> Option<(Value, usize)> {
    let fixed = |n: usize| -> Option<(Value, usize)> {
        let end = at.checked_add(n)?;
        (end <= limit).then_some((Value::Other, end))
    };
    match kind {
        DOUBLE | DATE_TIME | TIMESTAMP | INT64 => fixed(8),
        INT32 => fixed(4),
        BOOLEAN => {
            // bson rejects a boolean byte other than 0 or 1.
            match b.get(at) {
                Some(0 | 1) => fixed(1),
                _ => None,
            }
        }
        OBJECT_ID => fixed(12),
        DECIMAL128 => fixed(16),
        UNDEFINED | NULL | MAX_KEY | MIN_KEY => fixed(0),
        STRING => {
            let len = read_len(b, at)?;
            let start = at.checked_add(4)?;
            let end = start.checked_add(len)?;
            if len == 0 || end > limit {
                return None;
            }
            let text = b.get(start..end.checked_sub(1)?)?;
            if b.get(end.checked_sub(1)?) != Some(&0) || !text.is_ascii() {
                // Non-ASCII text is left to bson's UTF-8 validation.
                return None;
            }
            let invalidate = text == b"invalidate";
            Some((Value::String { invalidate }, end))
        }
        DOCUMENT | ARRAY => {
            let len = read_len(b, at)?;
            let end = at.checked_add(len)?;
            if len < MIN_DOC_LEN || end > limit || b.get(end.checked_sub(1)?) != Some(&0) {
                return None;
            }
            let value = if kind == DOCUMENT {
                Value::Document(at..end)
            } else {
                Value::Other
            };
            Some((value, end))
        }
        BINARY => {
            let len = read_len(b, at)?;
            // The length, the subtype byte, then the bytes. The old binary subtype
            // (0x02) nests a second length that bson checks: left to bson.
            if b.get(at.checked_add(4)?) == Some(&0x02) {
                return None;
            }
            let end = at.checked_add(5)?.checked_add(len)?;
            (end <= limit).then_some((Value::Other, end))
        }
        // Regular expressions, DBPointers, code, symbols and code with scope are not
        // expected in front of `operationType`: bson handles them.
        _ => None,
    }
}

/// Reads `_id` and `operationType` from the top level of `event` (a whole document:
/// length prefix, elements, terminator) in one pass, stopping once both were seen.
pub(crate) fn event_fields(event: &[u8]) -> EventFields {
    let mut out = EventFields {
        id: Field::Unknown,
        invalidate: Field::Unknown,
    };
    // The outer terminator's position: elements live in 4..limit.
    let Some(limit) = event.len().checked_sub(1) else {
        return out;
    };
    if read_len(event, 0) != Some(event.len()) || event.get(limit) != Some(&0) {
        return out;
    }
    let mut pos = 4usize;
    loop {
        let Some(&kind) = event.get(pos) else {
            return out;
        };
        if kind == 0 {
            // The end of the document: only the terminator may sit here.
            if pos == limit {
                if out.id == Field::Unknown {
                    out.id = Field::Absent;
                }
                if out.invalidate == Field::Unknown {
                    out.invalidate = Field::Absent;
                }
            }
            return out;
        }
        let key_start = pos.saturating_add(1);
        let Some(rest) = event.get(key_start..limit) else {
            return out;
        };
        let Some(key_len) = rest.iter().position(|&c| c == 0) else {
            return out;
        };
        let Some(key) = rest.get(..key_len) else {
            return out;
        };
        if !key.is_ascii() {
            // Left to bson's UTF-8 validation of keys.
            return out;
        }
        let Some(value_at) = key_start
            .checked_add(key_len)
            .and_then(|k| k.checked_add(1))
        else {
            return out;
        };
        let Some((value, end)) = read_value(event, kind, value_at, limit) else {
            return out;
        };
        if key == b"_id" && out.id == Field::Unknown {
            out.id = Field::Found(match value {
                Value::Document(range) => Some(range),
                _ => None,
            });
        } else if key == b"operationType" && out.invalidate == Field::Unknown {
            out.invalidate = Field::Found(matches!(value, Value::String { invalidate: true }));
        }
        if out.id != Field::Unknown && out.invalidate != Field::Unknown {
            return out;
        }
        pos = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{Binary, RawDocumentBuf, oid::ObjectId, rawdoc, spec::BinarySubtype};

    fn fields(doc: &RawDocumentBuf) -> EventFields {
        event_fields(doc.as_bytes())
    }

    fn id_bytes(doc: &RawDocumentBuf, f: &EventFields) -> Vec<u8> {
        match &f.id {
            Field::Found(Some(range)) => doc.as_bytes()[range.clone()].to_vec(),
            other => panic!("no _id document: {other:?}"),
        }
    }

    #[test]
    fn finds_id_first_and_operation_type_second() {
        let doc = rawdoc! { "_id": { "_data": "01" }, "operationType": "insert", "x": 1 };
        let f = fields(&doc);
        assert_eq!(id_bytes(&doc, &f), rawdoc! { "_data": "01" }.as_bytes());
        assert_eq!(f.invalidate, Field::Found(false));
    }

    #[test]
    fn spots_an_invalidate() {
        let doc = rawdoc! { "_id": { "_data": "02" }, "operationType": "invalidate" };
        assert_eq!(fields(&doc).invalidate, Field::Found(true));
        let doc = rawdoc! { "_id": { "_data": "02" }, "operationType": "invalidated" };
        assert_eq!(fields(&doc).invalidate, Field::Found(false));
        let doc = rawdoc! { "_id": { "_data": "02" }, "operationType": 1 };
        assert_eq!(fields(&doc).invalidate, Field::Found(false));
    }

    #[test]
    fn finds_fields_in_later_positions_and_either_order() {
        let doc = rawdoc! {
            "d": 1.5, "i": 2, "l": 3i64, "b": true, "n": null,
            "o": ObjectId::new(), "t": bson::Timestamp { time: 1, increment: 2 },
            "w": bson::DateTime::from_millis(5), "s": "text", "a": [1, 2],
            "bin": Binary { subtype: BinarySubtype::Generic, bytes: vec![1, 2, 3] },
            "dec": bson::Decimal128::from_bytes([0; 16]),
            "sub": { "x": 1 },
            "operationType": "invalidate",
            "more": 1,
            "_id": { "_data": "03" },
        };
        let f = fields(&doc);
        assert_eq!(f.invalidate, Field::Found(true));
        assert_eq!(id_bytes(&doc, &f), rawdoc! { "_data": "03" }.as_bytes());
    }

    #[test]
    fn the_first_occurrence_wins() {
        let doc =
            rawdoc! { "_id": { "_data": "a" }, "_id": { "_data": "b" }, "operationType": "x" };
        let f = fields(&doc);
        assert_eq!(id_bytes(&doc, &f), rawdoc! { "_data": "a" }.as_bytes());
    }

    #[test]
    fn missing_fields_are_absent() {
        let doc = rawdoc! { "operationType": "insert", "x": 1 };
        let f = fields(&doc);
        assert_eq!(f.id, Field::Absent);
        assert_eq!(f.invalidate, Field::Found(false));
        let doc = rawdoc! { "_id": { "_data": "01" } };
        assert_eq!(fields(&doc).invalidate, Field::Absent);
        let doc = rawdoc! {};
        assert_eq!(
            fields(&doc),
            EventFields {
                id: Field::Absent,
                invalidate: Field::Absent
            }
        );
    }

    #[test]
    fn an_id_of_another_type_is_found_as_none() {
        let doc = rawdoc! { "_id": "01", "operationType": "insert" };
        assert_eq!(fields(&doc).id, Field::Found(None));
    }

    #[test]
    fn unusual_types_give_up() {
        let doc = rawdoc! {
            "r": bson::Regex {
                pattern: "a".to_owned().try_into().unwrap(),
                options: "i".to_owned().try_into().unwrap(),
            },
            "_id": { "_data": "01" },
            "operationType": "insert",
        };
        let f = fields(&doc);
        assert_eq!(f.id, Field::Unknown);
        assert_eq!(f.invalidate, Field::Unknown);
        // A field read before the unusual one stays read.
        let doc = rawdoc! {
            "_id": { "_data": "01" },
            "s": "é",
            "operationType": "insert",
        };
        let f = fields(&doc);
        assert!(matches!(f.id, Field::Found(Some(_))));
        assert_eq!(f.invalidate, Field::Unknown);
    }

    #[test]
    fn malformed_lengths_give_up_without_panicking() {
        let good = rawdoc! { "_id": { "_data": "01" }, "operationType": "insert" };
        let bytes = good.as_bytes().to_vec();
        // The _id document's length (at offset 4 + 1 + 4) pushed past the end.
        let mut long_id = bytes.clone();
        long_id[9] = 0x7f;
        assert_eq!(event_fields(&long_id).id, Field::Unknown);
        // Negative and too small embedded lengths.
        let mut neg = bytes.clone();
        neg[9..13].copy_from_slice(&(-1i32).to_le_bytes());
        assert_eq!(event_fields(&neg).id, Field::Unknown);
        let mut small = bytes.clone();
        small[9..13].copy_from_slice(&4i32.to_le_bytes());
        assert_eq!(event_fields(&small).id, Field::Unknown);
        // The outer length disagreeing with the slice.
        let mut outer = bytes.clone();
        outer[0] = outer[0].wrapping_add(1);
        assert_eq!(event_fields(&outer).id, Field::Unknown);
        // A string length running past the end.
        let at = bytes.len() - 1 - "insert".len() - 1 - 4;
        let mut long_str = bytes.clone();
        long_str[at..at + 4].copy_from_slice(&1000i32.to_le_bytes());
        let f = event_fields(&long_str);
        assert!(matches!(f.id, Field::Found(Some(_))));
        assert_eq!(f.invalidate, Field::Unknown);
        // Every truncation, and garbage, is handled without a panic.
        for cut in 0..bytes.len() {
            let _ = event_fields(&bytes[..cut]);
        }
        assert_eq!(event_fields(&[]).id, Field::Unknown);
        assert_eq!(event_fields(&[5, 0, 0, 0, 1]).id, Field::Unknown);
        // A key without its NUL before the terminator.
        assert_eq!(event_fields(b"\x08\0\0\0\x10_id\0").id, Field::Unknown);
        // An element where only the terminator may be.
        assert_eq!(event_fields(b"\x06\0\0\0\0\0").id, Field::Unknown);
    }
}
