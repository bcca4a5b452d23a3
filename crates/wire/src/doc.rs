//! [`SharedDoc`]: one BSON document in a refcounted buffer.

use std::fmt;
use std::sync::LazyLock;

use bson::{Document, RawDocument, RawDocumentBuf};
use bytes::Bytes;

use crate::WireError;
use crate::header::read_i32;

/// The smallest valid BSON document: a 4-byte length and the terminating NUL.
pub(crate) const MIN_DOC_LEN: usize = 5;

/// One BSON document held in a refcounted buffer (a [`Bytes`] slice).
///
/// Construction checks the length prefix and the trailing NUL (cheap, O(1)); the validity of
/// the elements is checked lazily by bson's raw API when fields are read. Cloning is a
/// refcount increment; documents decoded from a frame share that frame's buffer.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SharedDoc(Bytes);

/// Stand-in returned by [`SharedDoc::as_raw`] if its invariant were ever broken (it cannot
/// be: every constructor checks exactly what `RawDocument::from_bytes` checks).
static EMPTY_DOC: LazyLock<RawDocumentBuf> = LazyLock::new(RawDocumentBuf::new);

/// Checks that `b` is exactly one document by its length prefix and ends in NUL.
pub(crate) fn check_doc_bounds(b: &[u8]) -> Result<(), WireError> {
    let len = read_i32(b, 0).ok_or(WireError::TruncatedDocumentLength { available: b.len() })?;
    let ulen = usize::try_from(len).map_err(|_| WireError::InvalidDocumentLength { len })?;
    if ulen < MIN_DOC_LEN {
        return Err(WireError::InvalidDocumentLength { len });
    }
    if ulen != b.len() {
        return Err(WireError::DocumentOverrunsSection {
            len: ulen,
            available: b.len(),
        });
    }
    match b.last() {
        Some(0) => Ok(()),
        _ => Err(WireError::MissingDocumentTerminator),
    }
}

impl SharedDoc {
    /// Wraps `b`, which must hold exactly one document: its length prefix must equal
    /// `b.len()` and its last byte must be NUL. No copy.
    pub fn from_bytes(b: Bytes) -> Result<Self, WireError> {
        check_doc_bounds(&b)?;
        Ok(SharedDoc(b))
    }

    /// Wraps bytes the caller has already bounds-checked (the decoder).
    pub(crate) fn from_checked(b: Bytes) -> Self {
        debug_assert!(check_doc_bounds(&b).is_ok());
        SharedDoc(b)
    }

    /// Serialises `d` into a new buffer.
    pub fn from_document(d: &Document) -> Result<Self, WireError> {
        let raw = RawDocumentBuf::try_from(d).map_err(|e| WireError::Bson(e.to_string()))?;
        Ok(Self::from(raw))
    }

    /// Copies `d` into a new buffer.
    pub fn from_raw(d: &RawDocument) -> Self {
        SharedDoc(Bytes::copy_from_slice(d.as_bytes()))
    }

    /// The document, for reading fields with bson's raw API.
    pub fn as_raw(&self) -> &RawDocument {
        match RawDocument::from_bytes(self.0.as_ref()) {
            Ok(d) => d,
            Err(_) => &EMPTY_DOC,
        }
    }

    /// The document's bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// The document's bytes as a slice.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The buffer, giving up the wrapper.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The document's length in bytes (its length prefix); at least 5.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the document has no elements (is the 5-byte `{}`).
    pub fn is_empty(&self) -> bool {
        self.0.len() == MIN_DOC_LEN
    }

    /// Parses every element into an owned [`Document`]; this is where malformed elements
    /// are found.
    pub fn to_document(&self) -> Result<Document, WireError> {
        Document::try_from(self.as_raw()).map_err(|e| WireError::Bson(e.to_string()))
    }

    /// The key of the first element (for a command body: the command name), if the document
    /// has one and it is well formed.
    pub fn first_key(&self) -> Option<&str> {
        match self.as_raw().iter_elements().next() {
            Some(Ok(elem)) => Some(elem.key().as_str()),
            _ => None,
        }
    }

    /// A sub-document of this one (e.g. an element of a batch, obtained through
    /// [`as_raw`](Self::as_raw)) as a `SharedDoc` that shares this buffer (no copy).
    ///
    /// Returns `None` if `sub` does not lie inside this document's bytes, so it never panics.
    pub fn share(&self, sub: &RawDocument) -> Option<SharedDoc> {
        let sub_bytes = sub.as_bytes();
        let base = self.0.as_ptr() as usize;
        let start = sub_bytes.as_ptr() as usize;
        let end = start.checked_add(sub_bytes.len())?;
        let base_end = base.checked_add(self.0.len())?;
        if sub_bytes.is_empty() || start < base || end > base_end {
            return None;
        }
        let shared = self.0.slice_ref(sub_bytes);
        check_doc_bounds(&shared).ok()?;
        Some(SharedDoc(shared))
    }
}

impl From<RawDocumentBuf> for SharedDoc {
    /// Takes over the buffer (no copy).
    fn from(d: RawDocumentBuf) -> Self {
        SharedDoc(Bytes::from(d.into_bytes()))
    }
}

impl TryFrom<Bytes> for SharedDoc {
    type Error = WireError;

    fn try_from(b: Bytes) -> Result<Self, WireError> {
        SharedDoc::from_bytes(b)
    }
}

impl AsRef<RawDocument> for SharedDoc {
    fn as_ref(&self) -> &RawDocument {
        self.as_raw()
    }
}

impl fmt::Debug for SharedDoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Document::try_from(self.as_raw()) {
            Ok(d) => write!(f, "SharedDoc({d})"),
            Err(_) => write!(f, "SharedDoc(<malformed, {} bytes>)", self.0.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, rawdoc};

    #[test]
    fn from_bytes_accepts_empty_document() {
        let d = SharedDoc::from_bytes(Bytes::from_static(b"\x05\0\0\0\0")).unwrap();
        assert!(d.is_empty());
        assert_eq!(d.len(), 5);
        assert_eq!(d.to_document().unwrap(), doc! {});
    }

    #[test]
    fn from_bytes_rejects_short_input() {
        let err = SharedDoc::from_bytes(Bytes::from_static(b"\x05\0\0")).unwrap_err();
        assert_eq!(err, WireError::TruncatedDocumentLength { available: 3 });
    }

    #[test]
    fn from_bytes_rejects_small_or_negative_length() {
        let err = SharedDoc::from_bytes(Bytes::from_static(b"\x04\0\0\0")).unwrap_err();
        assert_eq!(err, WireError::InvalidDocumentLength { len: 4 });
        let err = SharedDoc::from_bytes(Bytes::from_static(b"\xff\xff\xff\xff\0")).unwrap_err();
        assert_eq!(err, WireError::InvalidDocumentLength { len: -1 });
    }

    #[test]
    fn from_bytes_rejects_length_mismatch() {
        let err = SharedDoc::from_bytes(Bytes::from_static(b"\x06\0\0\0\0")).unwrap_err();
        assert_eq!(
            err,
            WireError::DocumentOverrunsSection {
                len: 6,
                available: 5
            }
        );
    }

    #[test]
    fn from_bytes_rejects_missing_terminator() {
        let err = SharedDoc::from_bytes(Bytes::from_static(b"\x05\0\0\0\x01")).unwrap_err();
        assert_eq!(err, WireError::MissingDocumentTerminator);
    }

    #[test]
    fn document_round_trip_and_first_key() {
        let d = doc! { "ping": 1, "$db": "admin" };
        let s = SharedDoc::from_document(&d).unwrap();
        assert_eq!(s.to_document().unwrap(), d);
        assert_eq!(s.first_key(), Some("ping"));
        assert_eq!(s.as_raw().get_i32("ping").unwrap(), 1);
        let copy = SharedDoc::from_raw(s.as_raw());
        assert_eq!(copy, s);
        assert_eq!(
            SharedDoc::from_bytes(Bytes::from_static(b"\x05\0\0\0\0"))
                .unwrap()
                .first_key(),
            None
        );
    }

    #[test]
    fn share_returns_a_slice_of_the_same_buffer() {
        let outer =
            SharedDoc::from(rawdoc! { "cursor": { "firstBatch": [ { "a": 1 }, { "b": 2 } ] } });
        let batch = outer
            .as_raw()
            .get_document("cursor")
            .unwrap()
            .get_array("firstBatch")
            .unwrap();
        let first = batch
            .into_iter()
            .next()
            .unwrap()
            .unwrap()
            .as_document()
            .unwrap();
        let shared = outer.share(first).unwrap();
        assert_eq!(shared.to_document().unwrap(), doc! { "a": 1 });
        let outer_range = outer.as_bytes().as_ptr_range();
        assert!(outer_range.contains(&shared.as_bytes().as_ptr()));
    }

    #[test]
    fn share_refuses_a_foreign_document() {
        let outer = SharedDoc::from(rawdoc! { "a": 1 });
        let other = rawdoc! { "a": 1 };
        assert!(outer.share(&other).is_none());
    }

    #[test]
    fn malformed_elements_surface_lazily_as_bson_errors() {
        // Framing is fine (length 8, NUL at the end) but the int32 element is cut short.
        let d = SharedDoc::from_bytes(Bytes::from_static(b"\x08\0\0\0\x10a\0\0")).unwrap();
        assert!(matches!(d.to_document(), Err(WireError::Bson(_))));
        assert!(format!("{d:?}").contains("malformed"));
    }

    #[test]
    fn debug_shows_the_document() {
        let s = SharedDoc::from(rawdoc! { "x": 1 });
        assert!(format!("{s:?}").contains("\"x\": 1"));
    }
}
