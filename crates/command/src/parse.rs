//! Typed, panic-free field access on raw reply documents.
//!
//! Every getter turns a decoding failure or a field of the wrong type into
//! [`CommandError::MalformedReply`] naming the command; numbers are read leniently
//! (int32, int64, or a double holding an integer) where MongoDB itself is lenient.

use brook_wire::SharedDoc;
use bson::{RawArray, RawBsonRef, RawDocument, Timestamp, oid::ObjectId, spec::ElementType};

use crate::error::CommandError;

/// The lower bound of i64 as an f64 (exactly -2^63).
const I64_MIN_F64: f64 = i64::MIN as f64;
/// 2^63: the first f64 above i64's range.
const I64_END_F64: f64 = -I64_MIN_F64;

/// An integer read from int32, int64, or a double with no fractional part.
pub(crate) fn as_i64(value: RawBsonRef<'_>) -> Option<i64> {
    match value {
        RawBsonRef::Int32(v) => Some(i64::from(v)),
        RawBsonRef::Int64(v) => Some(v),
        RawBsonRef::Double(v)
            if v.is_finite() && v.fract() == 0.0 && (I64_MIN_F64..I64_END_F64).contains(&v) =>
        {
            // In range and integral (checked just above), so the cast is exact.
            Some(v as i64)
        }
        _ => None,
    }
}

/// Reads an `ok` value: `Some(true)` for 1 / true, `Some(false)` for any other number or
/// false, `None` for a value that is not a number or bool.
pub(crate) fn ok_value(value: RawBsonRef<'_>) -> Option<bool> {
    match value {
        RawBsonRef::Double(v) => Some(v == 1.0),
        RawBsonRef::Int32(v) => Some(v == 1),
        RawBsonRef::Int64(v) => Some(v == 1),
        RawBsonRef::Boolean(v) => Some(v),
        _ => None,
    }
}

fn type_name(value: RawBsonRef<'_>) -> &'static str {
    match value.element_type() {
        ElementType::Double => "double",
        ElementType::String => "string",
        ElementType::EmbeddedDocument => "document",
        ElementType::Array => "array",
        ElementType::Binary => "binary",
        ElementType::Undefined => "undefined",
        ElementType::ObjectId => "objectId",
        ElementType::Boolean => "bool",
        ElementType::DateTime => "date",
        ElementType::Null => "null",
        ElementType::RegularExpression => "regex",
        ElementType::DbPointer => "dbPointer",
        ElementType::JavaScriptCode => "javascript",
        ElementType::Symbol => "symbol",
        ElementType::JavaScriptCodeWithScope => "javascriptWithScope",
        ElementType::Int32 => "int32",
        ElementType::Timestamp => "timestamp",
        ElementType::Int64 => "int64",
        ElementType::Decimal128 => "decimal128",
        ElementType::MaxKey => "maxKey",
        ElementType::MinKey => "minKey",
    }
}

/// A document of a reply, with the name of the command it answers (for errors).
#[derive(Clone, Copy)]
pub(crate) struct Fields<'a> {
    command: &'static str,
    doc: &'a RawDocument,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(command: &'static str, doc: &'a RawDocument) -> Self {
        Fields { command, doc }
    }

    /// For the `lenient_*` getters, which never fail.
    pub(crate) fn lenient(doc: &'a RawDocument) -> Self {
        Fields {
            command: "command",
            doc,
        }
    }

    pub(crate) fn malformed(&self, reason: impl Into<String>) -> CommandError {
        CommandError::malformed(self.command, reason)
    }

    fn wrong_type(&self, key: &str, expected: &str, value: RawBsonRef<'_>) -> CommandError {
        self.malformed(format!(
            "`{key}` should be {expected}, found {}",
            type_name(value)
        ))
    }

    fn missing(&self, key: &str) -> CommandError {
        self.malformed(format!("the reply has no `{key}` field"))
    }

    /// The value of `key` (the first one, should it be repeated).
    pub(crate) fn get(&self, key: &str) -> Result<Option<RawBsonRef<'a>>, CommandError> {
        self.doc
            .get(key)
            .map_err(|err| self.malformed(format!("cannot read `{key}`: {err}")))
    }

    pub(crate) fn opt_str(&self, key: &str) -> Result<Option<&'a str>, CommandError> {
        match self.get(key)? {
            None => Ok(None),
            Some(RawBsonRef::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong_type(key, "a string", other)),
        }
    }

    pub(crate) fn opt_doc(&self, key: &str) -> Result<Option<&'a RawDocument>, CommandError> {
        match self.get(key)? {
            None => Ok(None),
            Some(RawBsonRef::Document(d)) => Ok(Some(d)),
            Some(other) => Err(self.wrong_type(key, "a document", other)),
        }
    }

    pub(crate) fn req_doc(&self, key: &str) -> Result<&'a RawDocument, CommandError> {
        self.opt_doc(key)?.ok_or_else(|| self.missing(key))
    }

    pub(crate) fn opt_array(&self, key: &str) -> Result<Option<&'a RawArray>, CommandError> {
        match self.get(key)? {
            None => Ok(None),
            Some(RawBsonRef::Array(a)) => Ok(Some(a)),
            Some(other) => Err(self.wrong_type(key, "an array", other)),
        }
    }

    /// A bool; numbers are accepted too (non-zero is true), as old servers sent them.
    pub(crate) fn opt_bool(&self, key: &str) -> Result<Option<bool>, CommandError> {
        match self.get(key)? {
            None => Ok(None),
            Some(RawBsonRef::Boolean(b)) => Ok(Some(b)),
            Some(RawBsonRef::Double(v)) => Ok(Some(v != 0.0)),
            Some(RawBsonRef::Int32(v)) => Ok(Some(v != 0)),
            Some(RawBsonRef::Int64(v)) => Ok(Some(v != 0)),
            Some(other) => Err(self.wrong_type(key, "a bool", other)),
        }
    }

    /// An integer given as int32, int64 or an integral double.
    pub(crate) fn opt_i64(&self, key: &str) -> Result<Option<i64>, CommandError> {
        match self.get(key)? {
            None => Ok(None),
            Some(value) => as_i64(value)
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, "an integer", value)),
        }
    }

    pub(crate) fn opt_i32(&self, key: &str) -> Result<Option<i32>, CommandError> {
        match self.opt_i64(key)? {
            None => Ok(None),
            Some(v) => i32::try_from(v)
                .map(Some)
                .map_err(|_| self.malformed(format!("`{key}` = {v} is out of the int32 range"))),
        }
    }

    pub(crate) fn req_i32(&self, key: &str) -> Result<i32, CommandError> {
        self.opt_i32(key)?.ok_or_else(|| self.missing(key))
    }

    /// A non-negative integer as a usize (counts, sizes, indexes).
    pub(crate) fn opt_usize(&self, key: &str) -> Result<Option<usize>, CommandError> {
        match self.opt_i64(key)? {
            None => Ok(None),
            Some(v) => usize::try_from(v)
                .map(Some)
                .map_err(|_| self.malformed(format!("`{key}` = {v} is not a valid size"))),
        }
    }

    pub(crate) fn opt_timestamp(&self, key: &str) -> Result<Option<Timestamp>, CommandError> {
        match self.get(key)? {
            None => Ok(None),
            Some(RawBsonRef::Timestamp(t)) => Ok(Some(t)),
            Some(other) => Err(self.wrong_type(key, "a timestamp", other)),
        }
    }

    pub(crate) fn opt_object_id(&self, key: &str) -> Result<Option<ObjectId>, CommandError> {
        match self.get(key)? {
            None => Ok(None),
            Some(RawBsonRef::ObjectId(id)) => Ok(Some(id)),
            Some(other) => Err(self.wrong_type(key, "an objectId", other)),
        }
    }

    /// An array whose elements must all be strings.
    pub(crate) fn opt_str_array(&self, key: &str) -> Result<Option<Vec<String>>, CommandError> {
        let Some(array) = self.opt_array(key)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for item in array {
            match item.map_err(|err| self.malformed(format!("cannot read `{key}`: {err}")))? {
                RawBsonRef::String(s) => out.push(s.to_owned()),
                other => return Err(self.wrong_type(&format!("{key}[]"), "a string", other)),
            }
        }
        Ok(Some(out))
    }

    /// An array of integer ids (int32 or int64, as cursor ids come).
    pub(crate) fn opt_i64_array(&self, key: &str) -> Result<Option<Vec<i64>>, CommandError> {
        let Some(array) = self.opt_array(key)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for item in array {
            let value =
                item.map_err(|err| self.malformed(format!("cannot read `{key}`: {err}")))?;
            let id = as_i64(value)
                .ok_or_else(|| self.wrong_type(&format!("{key}[]"), "an integer", value))?;
            out.push(id);
        }
        Ok(Some(out))
    }

    /// The documents of an array field, each sharing `parent`'s buffer.
    ///
    /// A batch of well-formed documents is read by [`batch_docs`]; anything else goes
    /// through bson's array iterator, which yields the same documents or the error.
    pub(crate) fn shared_docs(
        &self,
        key: &str,
        array: &'a RawArray,
        parent: &SharedDoc,
    ) -> Result<Vec<SharedDoc>, CommandError> {
        if let Some(docs) = batch_docs(array, parent) {
            return Ok(docs);
        }
        let mut out = Vec::new();
        for item in array {
            match item.map_err(|err| self.malformed(format!("cannot read `{key}`: {err}")))? {
                RawBsonRef::Document(doc) => out.push(self.share(parent, doc)?),
                other => return Err(self.wrong_type(&format!("{key}[]"), "a document", other)),
            }
        }
        Ok(out)
    }

    /// A sub-document of `parent` as a [`SharedDoc`] that shares its buffer.
    pub(crate) fn share(
        &self,
        parent: &SharedDoc,
        sub: &RawDocument,
    ) -> Result<SharedDoc, CommandError> {
        parent
            .share(sub)
            .ok_or_else(|| self.malformed("a sub-document lies outside the reply buffer"))
    }

    /// `key` as a [`SharedDoc`] sharing `parent`'s buffer, when present.
    pub(crate) fn opt_shared_doc(
        &self,
        key: &str,
        parent: &SharedDoc,
    ) -> Result<Option<SharedDoc>, CommandError> {
        match self.opt_doc(key)? {
            None => Ok(None),
            Some(doc) => self.share(parent, doc).map(Some),
        }
    }

    /// Never fails: `None` when absent, unreadable, or not an integer in i32's range.
    pub(crate) fn lenient_i32(&self, key: &str) -> Option<i32> {
        let value = self.doc.get(key).ok().flatten()?;
        as_i64(value).and_then(|v| i32::try_from(v).ok())
    }

    /// Never fails: `None` when absent, unreadable, or not a string.
    pub(crate) fn lenient_str(&self, key: &str) -> Option<String> {
        match self.doc.get(key).ok().flatten()? {
            RawBsonRef::String(s) => Some(s.to_owned()),
            _ => None,
        }
    }

    /// Never fails: the string elements of an array (others skipped).
    pub(crate) fn lenient_labels(&self, key: &str) -> Vec<String> {
        let Ok(Some(RawBsonRef::Array(array))) = self.doc.get(key) else {
            return Vec::new();
        };
        array
            .into_iter()
            .map_while(Result::ok)
            .filter_map(|value| match value {
                RawBsonRef::String(s) => Some(s.to_owned()),
                _ => None,
            })
            .collect()
    }
}

/// The BSON type byte of an embedded document.
const EMBEDDED_DOCUMENT: u8 = 0x03;

/// Walks the elements of an array's bytes, every one of which must be an embedded
/// document under a decimal index key, yielding each document's byte range (in the
/// array). Yields `None` (and stops) at the first thing it does not accept: the caller
/// then gives up.
struct DocRanges<'b> {
    bytes: &'b [u8],
    pos: usize,
    done: bool,
}

impl<'b> DocRanges<'b> {
    /// `bytes` is a whole array (length prefix, elements, terminator).
    fn new(bytes: &'b [u8]) -> Self {
        let framed = read_len(bytes, 0) == Some(bytes.len()) && bytes.last() == Some(&0);
        DocRanges {
            bytes,
            pos: 4,
            done: !framed,
        }
    }

    fn step(&mut self) -> Option<Option<std::ops::Range<usize>>> {
        let b = self.bytes;
        let limit = b.len().checked_sub(1)?;
        let kind = *b.get(self.pos)?;
        if kind == 0 {
            // Only the array's own terminator may end it.
            return (self.pos == limit).then_some(None);
        }
        if kind != EMBEDDED_DOCUMENT {
            return None;
        }
        let key_start = self.pos.checked_add(1)?;
        let key_len = b.get(key_start..limit)?.iter().position(|&c| c == 0)?;
        let key = b.get(key_start..key_start.checked_add(key_len)?)?;
        if key.is_empty() || !key.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let start = key_start.checked_add(key_len)?.checked_add(1)?;
        let len = read_len(b, start)?;
        let end = start.checked_add(len)?;
        if len < 5 || end > limit || b.get(end.checked_sub(1)?) != Some(&0) {
            return None;
        }
        self.pos = end;
        Some(Some(start..end))
    }
}

impl Iterator for DocRanges<'_> {
    /// `Some(range)` for a document, `None` when the walk gave up.
    type Item = Option<std::ops::Range<usize>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Some(Some(range)) => Some(Some(range)),
            Some(None) => {
                self.done = true;
                None
            }
            None => {
                self.done = true;
                Some(None)
            }
        }
    }
}

/// A little-endian i32 at `at`, as a length (negative ones are `None`).
fn read_len(b: &[u8], at: usize) -> Option<usize> {
    let bytes: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(i32::from_le_bytes(bytes)).ok()
}

/// The documents of `array` (which lies in `parent`'s buffer) as slices of that buffer,
/// read by walking the element headers: no key validation beyond "decimal digits", no
/// `RawBsonRef` per element, and the `Vec` sized by a first counting walk. `None` when
/// anything is unusual (an element that is not a document, a bad length, the array
/// outside `parent`): bson's iterator then decides.
fn batch_docs(array: &RawArray, parent: &SharedDoc) -> Option<Vec<SharedDoc>> {
    let bytes = array.as_bytes();
    let base = parent.as_bytes().as_ptr() as usize;
    let offset = (bytes.as_ptr() as usize).checked_sub(base)?;
    if offset.checked_add(bytes.len())? > parent.len() {
        return None;
    }
    let mut count = 0usize;
    for range in DocRanges::new(bytes) {
        range?;
        count = count.checked_add(1)?;
    }
    let mut out = Vec::with_capacity(count);
    for range in DocRanges::new(bytes) {
        let range = range?;
        let start = offset.checked_add(range.start)?;
        let end = offset.checked_add(range.end)?;
        // In bounds: the array lies within `parent` (checked above), so `slice` cannot
        // panic.
        parent.as_bytes().get(start..end)?;
        out.push(SharedDoc::from_bytes(parent.bytes().slice(start..end)).ok()?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{rawdoc, spec::ElementType};

    fn batch_of(body: &SharedDoc) -> &RawArray {
        body.as_raw().get_array("b").unwrap()
    }

    #[test]
    fn batch_docs_slices_the_parent() {
        let body = SharedDoc::from(rawdoc! { "x": 1, "b": [ { "a": 1 }, { "b": "two" }, {} ] });
        let docs = batch_docs(batch_of(&body), &body).unwrap();
        assert_eq!(docs.len(), 3);
        assert_eq!(docs.capacity(), 3);
        assert_eq!(docs[1].to_document().unwrap(), bson::doc! { "b": "two" });
        assert!(docs[2].is_empty());
        let range = body.as_bytes().as_ptr_range();
        assert!(docs.iter().all(|d| range.contains(&d.as_bytes().as_ptr())));
        let empty = SharedDoc::from(rawdoc! { "b": [] });
        assert_eq!(batch_docs(batch_of(&empty), &empty).unwrap().len(), 0);
    }

    #[test]
    fn batch_docs_gives_up_on_anything_unusual() {
        // Not all documents: bson's iterator reports the wrong type.
        let body = SharedDoc::from(rawdoc! { "b": [ { "a": 1 }, 2 ] });
        assert!(batch_docs(batch_of(&body), &body).is_none());
        let f = Fields::new("getMore", body.as_raw());
        let err = f.shared_docs("b", batch_of(&body), &body).unwrap_err();
        assert!(err.to_string().contains("b[]"), "{err}");
        // An array that does not lie in the parent.
        let other = SharedDoc::from(rawdoc! { "b": [ { "a": 1 } ] });
        assert!(batch_docs(batch_of(&other), &body).is_none());
        // A non-numeric index key (written by hand) and a bad inner length.
        let mut raw = rawdoc! { "b": [ { "a": 1 } ] }.into_bytes();
        let key_at = 4 + 1 + 2 + 4 + 1;
        assert_eq!(raw[key_at - 1], ElementType::EmbeddedDocument as u8);
        raw[key_at] = b'x';
        let body = SharedDoc::from_bytes(raw.clone().into()).unwrap();
        assert!(batch_docs(batch_of(&body), &body).is_none());
        raw[key_at] = b'0';
        raw[key_at + 2] = 0x40;
        let body = SharedDoc::from_bytes(raw.into()).unwrap();
        assert!(batch_docs(batch_of(&body), &body).is_none());
        let f = Fields::new("getMore", body.as_raw());
        assert!(f.shared_docs("b", batch_of(&body), &body).is_err());
    }

    #[test]
    fn lenient_integers() {
        assert_eq!(as_i64(RawBsonRef::Int32(-4)), Some(-4));
        assert_eq!(as_i64(RawBsonRef::Int64(1 << 40)), Some(1 << 40));
        assert_eq!(as_i64(RawBsonRef::Double(12.0)), Some(12));
        assert_eq!(as_i64(RawBsonRef::Double(12.5)), None);
        assert_eq!(as_i64(RawBsonRef::Double(f64::NAN)), None);
        assert_eq!(as_i64(RawBsonRef::Double(f64::INFINITY)), None);
        assert_eq!(as_i64(RawBsonRef::Double(1e19)), None);
        assert_eq!(as_i64(RawBsonRef::Double(I64_MIN_F64)), Some(i64::MIN));
        assert_eq!(as_i64(RawBsonRef::String("1")), None);
    }

    #[test]
    fn ok_values() {
        assert_eq!(ok_value(RawBsonRef::Double(1.0)), Some(true));
        assert_eq!(ok_value(RawBsonRef::Double(0.0)), Some(false));
        assert_eq!(ok_value(RawBsonRef::Int32(1)), Some(true));
        assert_eq!(ok_value(RawBsonRef::Int64(0)), Some(false));
        assert_eq!(ok_value(RawBsonRef::Boolean(true)), Some(true));
        assert_eq!(ok_value(RawBsonRef::Boolean(false)), Some(false));
        assert_eq!(ok_value(RawBsonRef::String("1")), None);
    }

    #[test]
    fn typed_getters_reject_wrong_types() {
        let doc = rawdoc! { "s": 1, "n": "x", "big": 1i64 << 40, "neg": -1 };
        let f = Fields::new("test", &doc);
        assert!(matches!(
            f.opt_str("s"),
            Err(CommandError::MalformedReply {
                command: "test",
                ..
            })
        ));
        assert!(f.opt_i64("n").is_err());
        assert!(f.opt_i32("big").is_err());
        assert!(f.opt_usize("neg").is_err());
        assert!(f.req_doc("absent").is_err());
        assert!(f.req_i32("absent").is_err());
        assert_eq!(f.opt_str("absent").ok(), Some(None));
        assert_eq!(f.lenient_i32("big"), None);
        assert_eq!(f.lenient_str("s"), None);
    }
}
