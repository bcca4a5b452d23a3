//! The direct decoder behind [`ChangeStreamEvent::from_slice`].
//!
//! It walks the event's elements once with bson's raw iterator and reads every envelope
//! field by its BSON type, handing only the images (and the rare nested structs) to serde.
//! That skips serde's field-name visitors and the generic `Option<Bson>` detours of the
//! derived decoder, which made up most of the cost of a typed event.
//!
//! It only ever *accepts*: on anything it is not sure of — a malformed element, a field of
//! an unexpected type, a duplicate field, an image `T` rejects — it returns `None` and the
//! caller decodes the same bytes with the serde decoder ([`super::EventRepr`]), which is
//! the reference for every error. So the two can only differ if this one accepts
//! something the reference would not, or reads it differently; the equivalence tests in
//! `event.rs` (fixed cases and a proptest over generated and mutated events) check that.

use bson::spec::BinarySubtype;
use bson::{Binary, Document, RawBsonRef, RawDocument};
use serde::de::DeserializeOwned;

use super::{ChangeNamespace, ChangeStreamEvent, EventRepr, OperationType, ResumeToken};

/// Marks field `bit` as seen; `None` if it was already (serde's derive rejects duplicates).
fn once(seen: &mut u32, bit: u32) -> Option<()> {
    if *seen & bit != 0 {
        return None;
    }
    *seen |= bit;
    Some(())
}

/// An optional sub-document decoded with serde: `null` is absent.
fn nested<T: DeserializeOwned>(value: RawBsonRef<'_>) -> Option<Option<T>> {
    match value {
        RawBsonRef::Null => Some(None),
        RawBsonRef::Document(d) => bson::deserialize_from_slice(d.as_bytes()).ok().map(Some),
        _ => None,
    }
}

/// An optional string: `null` is absent.
fn string(value: RawBsonRef<'_>) -> Option<Option<String>> {
    match value {
        RawBsonRef::Null => Some(None),
        RawBsonRef::String(s) => Some(Some(s.to_owned())),
        _ => None,
    }
}

/// An optional namespace (`ns`, `to`): `null` is absent.
fn namespace(value: RawBsonRef<'_>) -> Option<Option<ChangeNamespace>> {
    let d = match value {
        RawBsonRef::Null => return Some(None),
        RawBsonRef::Document(d) => d,
        _ => return None,
    };
    let mut seen = 0;
    let mut db = None;
    let mut coll = None;
    for item in d {
        let (key, value) = item.ok()?;
        match key.as_str() {
            "db" => {
                once(&mut seen, 1)?;
                match value {
                    RawBsonRef::String(s) => db = Some(s.to_owned()),
                    _ => return None,
                }
            }
            "coll" => {
                once(&mut seen, 2)?;
                coll = string(value)?;
            }
            _ => {}
        }
    }
    Some(Some(ChangeNamespace { db: db?, coll }))
}

/// How deep [`well_formed`] descends before leaving the value to the serde decoder.
const MAX_DEPTH: usize = 32;

/// Checks every element under `value` (documents and arrays, recursively): `Some(())`
/// if all are well formed.
fn well_formed(value: RawBsonRef<'_>, depth: usize) -> Option<()> {
    let doc = match value {
        RawBsonRef::Document(d) => d,
        RawBsonRef::Array(a) => RawDocument::from_bytes(a.as_bytes()).ok()?,
        RawBsonRef::JavaScriptCodeWithScope(c) => c.scope,
        _ => return Some(()),
    };
    if depth >= MAX_DEPTH {
        return None;
    }
    for item in doc {
        let (_, value) = item.ok()?;
        well_formed(value, depth + 1)?;
    }
    Some(())
}

const ID: u32 = 1;
const OPERATION_TYPE: u32 = 1 << 1;
const NS: u32 = 1 << 2;
const NS_TYPE: u32 = 1 << 3;
const TO: u32 = 1 << 4;
const DOCUMENT_KEY: u32 = 1 << 5;
const UPDATE_DESCRIPTION: u32 = 1 << 6;
const FULL_DOCUMENT: u32 = 1 << 7;
const FULL_DOCUMENT_BEFORE_CHANGE: u32 = 1 << 8;
const CLUSTER_TIME: u32 = 1 << 9;
const WALL_TIME: u32 = 1 << 10;
const COLLECTION_UUID: u32 = 1 << 11;
const OPERATION_DESCRIPTION: u32 = 1 << 12;
const SPLIT_EVENT: u32 = 1 << 13;
const LSID: u32 = 1 << 14;
const TXN_NUMBER: u32 = 1 << 15;

/// Decodes `event`, or `None` when the serde decoder must decide (see the module docs).
pub(super) fn decode<T: DeserializeOwned>(event: &RawDocument) -> Option<ChangeStreamEvent<T>> {
    let mut seen = 0u32;
    let mut e = EventRepr::<T>::default();
    for item in event {
        let (key, value) = item.ok()?;
        match key.as_str() {
            "_id" => {
                once(&mut seen, ID)?;
                match value {
                    RawBsonRef::Document(d) => e.id = Some(ResumeToken::from(d)),
                    _ => return None,
                }
            }
            "operationType" => {
                once(&mut seen, OPERATION_TYPE)?;
                match value {
                    RawBsonRef::String(s) => e.operation_type = Some(OperationType::from(s)),
                    _ => return None,
                }
            }
            "ns" => {
                once(&mut seen, NS)?;
                e.ns = namespace(value)?;
            }
            "nsType" => {
                once(&mut seen, NS_TYPE)?;
                e.ns_type = string(value)?;
            }
            "to" => {
                once(&mut seen, TO)?;
                e.to = namespace(value)?;
            }
            "documentKey" => {
                once(&mut seen, DOCUMENT_KEY)?;
                e.document_key = match value {
                    RawBsonRef::Null => None,
                    RawBsonRef::Document(d) => Some(d.to_owned()),
                    _ => return None,
                };
            }
            "updateDescription" => {
                once(&mut seen, UPDATE_DESCRIPTION)?;
                e.update_description = nested(value)?;
            }
            "fullDocument" => {
                once(&mut seen, FULL_DOCUMENT)?;
                e.full_document = nested(value)?;
            }
            "fullDocumentBeforeChange" => {
                once(&mut seen, FULL_DOCUMENT_BEFORE_CHANGE)?;
                e.full_document_before_change = nested(value)?;
            }
            "clusterTime" => {
                once(&mut seen, CLUSTER_TIME)?;
                // Informational only: a value of another type is read as absent.
                e.cluster_time = match value {
                    RawBsonRef::Timestamp(ts) => Some(ts),
                    _ => None,
                };
            }
            "wallTime" => {
                once(&mut seen, WALL_TIME)?;
                e.wall_time = match value {
                    RawBsonRef::Null => None,
                    RawBsonRef::DateTime(t) => Some(t),
                    _ => return None,
                };
            }
            "collectionUUID" => {
                once(&mut seen, COLLECTION_UUID)?;
                e.collection_uuid = match value {
                    RawBsonRef::Null => None,
                    // The old binary subtype carries an inner length: leave it to serde.
                    RawBsonRef::Binary(b) if b.subtype != BinarySubtype::BinaryOld => {
                        Some(Binary {
                            subtype: b.subtype,
                            bytes: b.bytes.to_vec(),
                        })
                    }
                    _ => return None,
                };
            }
            "operationDescription" => {
                once(&mut seen, OPERATION_DESCRIPTION)?;
                e.operation_description = nested::<Document>(value)?;
            }
            "splitEvent" => {
                once(&mut seen, SPLIT_EVENT)?;
                e.split_event = nested(value)?;
            }
            "lsid" => {
                once(&mut seen, LSID)?;
                e.lsid = nested::<Document>(value)?;
            }
            "txnNumber" => {
                once(&mut seen, TXN_NUMBER)?;
                e.txn_number = match value {
                    RawBsonRef::Null => None,
                    RawBsonRef::Int32(n) => Some(i64::from(n)),
                    RawBsonRef::Int64(n) => Some(n),
                    _ => return None,
                };
            }
            // Unknown fields are skipped, but only once their bytes are known to be well
            // formed, as the serde decoder checks them.
            _ => well_formed(value, 0)?,
        }
    }
    // Both are required; their absence is the reference decoder's error to word.
    e.into_event().ok()
}
