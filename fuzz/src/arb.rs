//! Structured fuzz inputs: BSON values and documents built from [`arbitrary`] bytes.
//!
//! Keys are mostly drawn from the field names brook's reply parsers look at (so that a
//! few bytes make a `{cursor: {id, ns, nextBatch: [...]}}` shape), with any string
//! possible too. Values cover every BSON type, nested to a bounded depth.

use arbitrary::{Arbitrary, Unstructured};
use bson::spec::BinarySubtype;
use bson::{Binary, Bson, Decimal128, Document, Timestamp, oid::ObjectId};

/// How deep documents and arrays may nest in generated values.
pub const MAX_DEPTH: usize = 6;

/// Most elements a generated document or array holds.
pub const MAX_LEN: usize = 24;

/// A field name: one the parsers know, or any string (NULs removed: a key is a C string).
#[derive(Debug, Clone, Arbitrary)]
pub enum Key {
    /// `ok`
    Ok,
    /// `cursor`
    Cursor,
    /// `id`
    Id,
    /// `ns`
    Ns,
    /// `firstBatch`
    FirstBatch,
    /// `nextBatch`
    NextBatch,
    /// `postBatchResumeToken`
    PostBatchResumeToken,
    /// `operationTime`
    OperationTime,
    /// `$clusterTime`
    ClusterTime,
    /// `clusterTime`
    ClusterTimeField,
    /// `signature`
    Signature,
    /// `code`
    Code,
    /// `codeName`
    CodeName,
    /// `errmsg`
    Errmsg,
    /// `errorLabels`
    ErrorLabels,
    /// `writeErrors`
    WriteErrors,
    /// `writeConcernError`
    WriteConcernError,
    /// `errInfo`
    ErrInfo,
    /// `index`
    Index,
    /// `n`
    N,
    /// `nModified`
    NModified,
    /// `upserted`
    Upserted,
    /// `cursorsKilled`
    CursorsKilled,
    /// `cursorsNotFound`
    CursorsNotFound,
    /// `cursorsAlive`
    CursorsAlive,
    /// `cursorsUnknown`
    CursorsUnknown,
    /// `isWritablePrimary`
    IsWritablePrimary,
    /// `ismaster`
    IsMaster,
    /// `secondary`
    Secondary,
    /// `setName`
    SetName,
    /// `hosts`
    Hosts,
    /// `primary`
    Primary,
    /// `me`
    Me,
    /// `minWireVersion`
    MinWireVersion,
    /// `maxWireVersion`
    MaxWireVersion,
    /// `maxBsonObjectSize`
    MaxBsonObjectSize,
    /// `maxMessageSizeBytes`
    MaxMessageSizeBytes,
    /// `maxWriteBatchSize`
    MaxWriteBatchSize,
    /// `logicalSessionTimeoutMinutes`
    LogicalSessionTimeoutMinutes,
    /// `compression`
    Compression,
    /// `connectionId`
    ConnectionId,
    /// `msg`
    Msg,
    /// `topologyVersion`
    TopologyVersion,
    /// `processId`
    ProcessId,
    /// `counter`
    Counter,
    /// `_id`
    UnderscoreId,
    /// `_data`
    Data,
    /// `operationType`
    OperationType,
    /// `saslSupportedMechs`
    SaslSupportedMechs,
    /// Any other name.
    Other(String),
}

impl Key {
    /// The field name.
    pub fn name(&self) -> String {
        let s = match self {
            Key::Ok => "ok",
            Key::Cursor => "cursor",
            Key::Id => "id",
            Key::Ns => "ns",
            Key::FirstBatch => "firstBatch",
            Key::NextBatch => "nextBatch",
            Key::PostBatchResumeToken => "postBatchResumeToken",
            Key::OperationTime => "operationTime",
            Key::ClusterTime => "$clusterTime",
            Key::ClusterTimeField => "clusterTime",
            Key::Signature => "signature",
            Key::Code => "code",
            Key::CodeName => "codeName",
            Key::Errmsg => "errmsg",
            Key::ErrorLabels => "errorLabels",
            Key::WriteErrors => "writeErrors",
            Key::WriteConcernError => "writeConcernError",
            Key::ErrInfo => "errInfo",
            Key::Index => "index",
            Key::N => "n",
            Key::NModified => "nModified",
            Key::Upserted => "upserted",
            Key::CursorsKilled => "cursorsKilled",
            Key::CursorsNotFound => "cursorsNotFound",
            Key::CursorsAlive => "cursorsAlive",
            Key::CursorsUnknown => "cursorsUnknown",
            Key::IsWritablePrimary => "isWritablePrimary",
            Key::IsMaster => "ismaster",
            Key::Secondary => "secondary",
            Key::SetName => "setName",
            Key::Hosts => "hosts",
            Key::Primary => "primary",
            Key::Me => "me",
            Key::MinWireVersion => "minWireVersion",
            Key::MaxWireVersion => "maxWireVersion",
            Key::MaxBsonObjectSize => "maxBsonObjectSize",
            Key::MaxMessageSizeBytes => "maxMessageSizeBytes",
            Key::MaxWriteBatchSize => "maxWriteBatchSize",
            Key::LogicalSessionTimeoutMinutes => "logicalSessionTimeoutMinutes",
            Key::Compression => "compression",
            Key::ConnectionId => "connectionId",
            Key::Msg => "msg",
            Key::TopologyVersion => "topologyVersion",
            Key::ProcessId => "processId",
            Key::Counter => "counter",
            Key::UnderscoreId => "_id",
            Key::Data => "_data",
            Key::OperationType => "operationType",
            Key::SaslSupportedMechs => "saslSupportedMechs",
            Key::Other(s) => return s.replace('\0', ""),
        };
        s.to_owned()
    }
}

/// A BSON value of any type; documents and arrays nest.
#[derive(Debug, Clone, Arbitrary)]
pub enum Value {
    /// double
    Double(f64),
    /// string (may hold NULs: BSON strings are length-prefixed)
    String(String),
    /// one of a few strings the parsers compare against
    Known(KnownString),
    /// embedded document
    Document(Vec<(Key, Value)>),
    /// array
    Array(Vec<Value>),
    /// binary, any subtype
    Binary(u8, Vec<u8>),
    /// ObjectId
    ObjectId([u8; 12]),
    /// boolean
    Bool(bool),
    /// UTC datetime (ms)
    DateTime(i64),
    /// null
    Null,
    /// int32
    Int32(i32),
    /// int32 near the interesting range (0, 1, small codes)
    SmallInt(i8),
    /// timestamp
    Timestamp(u32, u32),
    /// int64
    Int64(i64),
    /// decimal128
    Decimal128([u8; 16]),
    /// JavaScript code
    JavaScript(String),
    /// min key
    MinKey,
    /// max key
    MaxKey,
}

/// Strings that replies carry and parsers compare with.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum KnownString {
    /// a namespace
    Namespace,
    /// a namespace with no dot
    NamespaceNoDot,
    /// a namespace with an empty collection
    NamespaceTrailingDot,
    /// a resumable label
    ResumableLabel,
    /// a transient label
    TransientLabel,
    /// `isdbgrid`
    IsDbGrid,
    /// `zlib`
    Zlib,
    /// an error code name
    CursorNotFound,
    /// empty
    Empty,
}

impl KnownString {
    fn as_str(self) -> &'static str {
        match self {
            KnownString::Namespace => "brook.events",
            KnownString::NamespaceNoDot => "brook",
            KnownString::NamespaceTrailingDot => "brook.",
            KnownString::ResumableLabel => "ResumableChangeStreamError",
            KnownString::TransientLabel => "TransientTransactionError",
            KnownString::IsDbGrid => "isdbgrid",
            KnownString::Zlib => "zlib",
            KnownString::CursorNotFound => "CursorNotFound",
            KnownString::Empty => "",
        }
    }
}

impl Value {
    /// The BSON value, with nesting past `MAX_DEPTH` cut to null and lists to `MAX_LEN`.
    pub fn to_bson(&self, depth: usize) -> Bson {
        match self {
            Value::Double(v) => Bson::Double(*v),
            Value::String(s) => Bson::String(s.clone()),
            Value::Known(k) => Bson::String(k.as_str().to_owned()),
            Value::Document(fields) => {
                if depth >= MAX_DEPTH {
                    Bson::Null
                } else {
                    Bson::Document(to_document(fields, depth + 1))
                }
            }
            Value::Array(items) => {
                if depth >= MAX_DEPTH {
                    Bson::Null
                } else {
                    Bson::Array(
                        items
                            .iter()
                            .take(MAX_LEN)
                            .map(|v| v.to_bson(depth + 1))
                            .collect(),
                    )
                }
            }
            Value::Binary(subtype, bytes) => {
                // Subtype 2 (old binary) has its own inner length: keep it out of the way
                // of the generic subtypes by mapping it to generic.
                let subtype = match *subtype {
                    2 => BinarySubtype::Generic,
                    other => BinarySubtype::from(other),
                };
                Bson::Binary(Binary {
                    subtype,
                    bytes: bytes.clone(),
                })
            }
            Value::ObjectId(b) => Bson::ObjectId(ObjectId::from_bytes(*b)),
            Value::Bool(b) => Bson::Boolean(*b),
            Value::DateTime(ms) => Bson::DateTime(bson::DateTime::from_millis(*ms)),
            Value::Null => Bson::Null,
            Value::Int32(v) => Bson::Int32(*v),
            Value::SmallInt(v) => Bson::Int32(i32::from(*v)),
            Value::Timestamp(time, increment) => Bson::Timestamp(Timestamp {
                time: *time,
                increment: *increment,
            }),
            Value::Int64(v) => Bson::Int64(*v),
            Value::Decimal128(b) => Bson::Decimal128(Decimal128::from_bytes(*b)),
            Value::JavaScript(code) => Bson::JavaScriptCode(code.clone()),
            Value::MinKey => Bson::MinKey,
            Value::MaxKey => Bson::MaxKey,
        }
    }
}

/// A document from generated fields (a repeated key keeps its last value).
pub fn to_document(fields: &[(Key, Value)], depth: usize) -> Document {
    let mut doc = Document::new();
    for (key, value) in fields.iter().take(MAX_LEN) {
        doc.insert(key.name(), value.to_bson(depth));
    }
    doc
}

/// A generated top-level document.
#[derive(Debug, Clone, Arbitrary)]
pub struct Doc(pub Vec<(Key, Value)>);

impl Doc {
    /// The document.
    pub fn to_document(&self) -> Document {
        to_document(&self.0, 0)
    }
}

/// Reads a `T` from all of `data`, or `None` when the bytes cannot make one.
pub fn from_bytes<'a, T: Arbitrary<'a>>(data: &'a [u8]) -> Option<T> {
    T::arbitrary_take_rest(Unstructured::new(data)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_document_serialises() {
        // A spread of inputs: each must make a document bson can serialise.
        for seed in 0u8..64 {
            let data: Vec<u8> = (0..512u32)
                .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed))
                .collect();
            if let Some(doc) = from_bytes::<Doc>(&data) {
                let d = doc.to_document();
                bson::serialize_to_vec(&d).expect("generated documents serialise");
            }
        }
    }

    #[test]
    fn keys_never_hold_nul() {
        assert_eq!(Key::Other("a\0b".to_owned()).name(), "ab");
        assert_eq!(Key::ClusterTime.name(), "$clusterTime");
    }
}
