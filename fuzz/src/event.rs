//! `event_decode`: brook's typed change-event decoder against serde's.
//!
//! [`brook::ChangeStreamEvent::from_slice`] reads the event envelope directly and leaves
//! anything unusual to the derived serde decoder (`bson::deserialize_from_slice`). On any
//! bytes the two must agree: the same event, or both an error (with the same message,
//! since `from_slice` returns the serde decoder's). Checked with the images as a
//! `Document`, as raw bytes and as a typed struct that rejects some images.

use brook::ChangeStreamEvent;
use bson::{Bson, Document, RawDocumentBuf};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// A typed image with a required field.
#[derive(Debug, PartialEq, Deserialize)]
struct Image {
    #[serde(rename = "_id")]
    id: Bson,
    sku: String,
}

fn agree<T: DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) {
    let direct = ChangeStreamEvent::<T>::from_slice(data).map_err(|e| e.to_string());
    let serde =
        bson::deserialize_from_slice::<ChangeStreamEvent<T>>(data).map_err(|e| e.to_string());
    match (&direct, &serde) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "the decoders read {data:?} differently"),
        (Err(a), Err(b)) => assert!(a.contains(b.as_str()), "{a} / {b}"),
        _ => panic!("from_slice: {direct:?}, serde: {serde:?}, on {data:?}"),
    }
}

/// The check of the `event_decode` target: `data` is one event document (or anything).
pub fn check_event_decode(data: &[u8]) {
    agree::<Document>(data);
    agree::<RawDocumentBuf>(data);
    agree::<Image>(data);
}
