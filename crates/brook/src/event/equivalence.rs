//! The direct decoder ([`super::fast`]) against the serde decoder it stands in for: on
//! every input it accepts, it must produce exactly what the serde decoder produces, and
//! `from_slice` must agree with the serde decoder on every input, accepted or not.

use bson::spec::BinarySubtype;
use bson::{Binary, Bson, DateTime, Document, RawDocument, RawDocumentBuf, Timestamp, doc};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{ChangeStreamEvent, fast};

/// An image type with a required field, so that some images are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    #[serde(rename = "_id")]
    id: Bson,
    sku: String,
    #[serde(default)]
    qty: Option<i64>,
}

/// What the serde decoder makes of `bytes`.
fn reference<T: DeserializeOwned>(bytes: &[u8]) -> Result<ChangeStreamEvent<T>, String> {
    bson::deserialize_from_slice::<ChangeStreamEvent<T>>(bytes).map_err(|e| e.to_string())
}

/// Checks the two decoders on `bytes` for one image type; returns whether the direct
/// decoder accepted it.
fn agree_as<T: DeserializeOwned + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> bool {
    let expected = reference::<T>(bytes);
    let direct = RawDocument::from_bytes(bytes)
        .ok()
        .and_then(fast::decode::<T>);
    if let Some(direct) = &direct {
        assert_eq!(
            expected.as_ref(),
            Ok(direct),
            "the direct decoder accepted what the serde decoder reads differently: {bytes:?}"
        );
    }
    let via = ChangeStreamEvent::<T>::from_slice(bytes).map_err(|e| e.to_string());
    match (&via, &expected) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert!(a.contains(b.as_str()), "{a} / {b}"),
        _ => panic!("from_slice {via:?} but serde {expected:?} on {bytes:?}"),
    }
    direct.is_some()
}

/// Checks every image type; returns whether the direct decoder accepted it as `Document`.
fn agree(bytes: &[u8]) -> bool {
    agree_as::<RawDocumentBuf>(bytes);
    agree_as::<Order>(bytes);
    agree_as::<Bson>(bytes);
    agree_as::<Document>(bytes)
}

fn serialize(d: &Document) -> Vec<u8> {
    bson::serialize_to_vec(d).unwrap()
}

fn token(n: u32) -> Document {
    doc! { "_data": format!("8266A1B2C3{n:08X}2B042C0100296E5A1004") }
}

fn ts() -> Timestamp {
    Timestamp {
        time: 1_700_000_000,
        increment: 3,
    }
}

fn uuid() -> Binary {
    Binary {
        subtype: BinarySubtype::Uuid,
        bytes: (1..=16).collect(),
    }
}

/// Events of every kind a server sends, each accepted by the direct decoder.
fn server_events() -> Vec<Document> {
    let ns = doc! { "db": "shop", "coll": "orders" };
    vec![
        doc! {
            "_id": token(1), "operationType": "insert", "clusterTime": ts(),
            "wallTime": DateTime::from_millis(1_700_000_000_123), "collectionUUID": uuid(),
            "fullDocument": { "_id": 1, "sku": "A-1", "qty": 2_i64 }, "ns": ns.clone(),
            "documentKey": { "_id": 1 },
        },
        doc! {
            "_id": token(2), "operationType": "update", "clusterTime": ts(), "ns": ns.clone(),
            "documentKey": { "_id": 1, "region": "eu" },
            "updateDescription": {
                "updatedFields": { "qty": 3, "tags.0": "x" }, "removedFields": ["old"],
                "truncatedArrays": [{ "field": "lines", "newSize": 2 }],
                "disambiguatedPaths": { "tags.0": ["tags", 0] },
            },
            "fullDocument": Bson::Null,
            "fullDocumentBeforeChange": { "_id": 1, "sku": "A-1" },
        },
        doc! {
            "_id": token(3), "operationType": "replace", "ns": ns.clone(),
            "documentKey": { "_id": 2 }, "fullDocument": { "_id": 2, "sku": "B" },
            "txnNumber": 7_i64, "lsid": { "id": uuid(), "uid": Binary { subtype: BinarySubtype::Generic, bytes: vec![9; 32] } },
        },
        doc! {
            "_id": token(4), "operationType": "delete", "ns": ns.clone(),
            "documentKey": { "_id": 3 }, "txnNumber": 8_i32,
        },
        doc! {
            "_id": token(5), "operationType": "rename", "ns": ns.clone(),
            "to": { "db": "shop", "coll": "orders2" },
            "operationDescription": { "to": { "db": "shop", "coll": "orders2" }, "dropTarget": false },
        },
        doc! {
            "_id": token(6), "operationType": "create", "ns": ns.clone(), "nsType": "timeseries",
            "collectionUUID": uuid(), "operationDescription": { "idIndex": { "v": 2 } },
        },
        doc! { "_id": token(7), "operationType": "dropDatabase", "ns": { "db": "shop" } },
        doc! { "_id": token(8), "operationType": "invalidate", "clusterTime": ts() },
        doc! {
            "_id": token(9), "operationType": "insert", "ns": ns.clone(),
            "fullDocument": { "_id": 4, "sku": "C" }, "splitEvent": { "fragment": 1, "of": 3 },
        },
        // A future server's operation and fields.
        doc! {
            "_id": token(10), "operationType": "reshardCollection", "ns": { "db": "a", "coll": "b", "viewOn": "c" },
            "newField": [1, 2, 3], "another": { "x": Bson::Null },
        },
        // Every optional field null.
        doc! {
            "_id": token(11), "operationType": "insert", "ns": Bson::Null, "nsType": Bson::Null,
            "to": Bson::Null, "documentKey": Bson::Null, "updateDescription": Bson::Null,
            "fullDocument": Bson::Null, "fullDocumentBeforeChange": Bson::Null,
            "clusterTime": Bson::Null, "wallTime": Bson::Null, "collectionUUID": Bson::Null,
            "operationDescription": Bson::Null, "splitEvent": Bson::Null, "lsid": Bson::Null,
            "txnNumber": Bson::Null,
        },
        // A wire-compatible server's date as clusterTime: read as absent.
        doc! {
            "_id": token(12), "operationType": "insert", "ns": { "db": "a", "coll": Bson::Null },
            "clusterTime": DateTime::from_millis(5),
        },
        // Field order is free.
        doc! {
            "documentKey": { "_id": 5 }, "fullDocument": { "_id": 5, "sku": "D" },
            "operationType": "insert", "_id": token(13),
        },
    ]
}

#[test]
fn server_events_are_decoded_directly_and_identically() {
    for event in server_events() {
        assert!(agree(&serialize(&event)), "not decoded directly: {event}");
    }
}

/// Inputs the direct decoder leaves to serde, and serde rejects or reads its own way.
#[test]
fn unusual_events_go_to_the_serde_decoder() {
    let base = || doc! { "_id": token(1), "operationType": "insert" };
    let mut cases: Vec<Document> = Vec::new();
    let with = |k: &str, v: Bson| {
        let mut d = base();
        d.insert(k, v);
        d
    };
    cases.push(doc! { "operationType": "insert" });
    cases.push(doc! { "_id": token(1) });
    cases.push(doc! { "_id": Bson::Null, "operationType": "insert" });
    cases.push(doc! { "_id": "x", "operationType": "insert" });
    cases.push(doc! { "_id": token(1), "operationType": 5 });
    cases.push(doc! { "_id": token(1), "operationType": Bson::Null });
    cases.push(with("ns", Bson::Int32(1)));
    cases.push(with("ns", Bson::Document(doc! { "coll": "c" })));
    cases.push(with("ns", Bson::Document(doc! { "db": 1 })));
    cases.push(with("ns", Bson::Document(doc! { "db": "a", "coll": 2 })));
    cases.push(with("nsType", Bson::Int32(1)));
    cases.push(with("documentKey", Bson::String("k".into())));
    cases.push(with(
        "updateDescription",
        Bson::Document(doc! { "removedFields": 1 }),
    ));
    cases.push(with("fullDocument", Bson::String("not a document".into())));
    cases.push(with("wallTime", Bson::Int64(5)));
    cases.push(with("txnNumber", Bson::Double(1.0)));
    cases.push(with("txnNumber", Bson::String("1".into())));
    cases.push(with(
        "collectionUUID",
        Bson::Binary(Binary {
            subtype: BinarySubtype::BinaryOld,
            bytes: vec![1, 2, 3],
        }),
    ));
    cases.push(with("collectionUUID", Bson::String("u".into())));
    cases.push(with("splitEvent", Bson::Document(doc! { "fragment": 1 })));
    cases.push(with("lsid", Bson::Int32(3)));
    for case in &cases {
        assert!(!agree(&serialize(case)), "decoded directly: {case}");
    }
    // An image `T` rejects (no `sku`) is left to serde too, which words the error.
    let bytes = serialize(&with("fullDocument", Bson::Document(doc! { "_id": 1 })));
    assert!(!agree_as::<Order>(&bytes));
    assert!(agree_as::<Document>(&bytes));
    let err = ChangeStreamEvent::<Order>::from_slice(&bytes).unwrap_err();
    assert!(err.to_string().contains("sku"), "{err}");
}

/// BSON with a repeated key: serde's derive rejects a repeated known field.
#[test]
fn repeated_fields_go_to_the_serde_decoder() {
    let mut raw = bson::RawDocumentBuf::new();
    raw.append(
        bson::cstr!("_id"),
        RawDocumentBuf::try_from(&token(1)).unwrap(),
    );
    raw.append(bson::cstr!("operationType"), "insert");
    raw.append(bson::cstr!("operationType"), "delete");
    assert!(!agree(raw.as_bytes()));
    let mut raw = bson::RawDocumentBuf::new();
    raw.append(
        bson::cstr!("_id"),
        RawDocumentBuf::try_from(&token(1)).unwrap(),
    );
    raw.append(bson::cstr!("operationType"), "insert");
    raw.append(bson::cstr!("unknown"), 1);
    raw.append(bson::cstr!("unknown"), 2);
    assert!(agree(raw.as_bytes()), "repeated unknown fields are ignored");
}

/// A value for a field: often of the right type, sometimes null or of another type.
fn value_for(field: &'static str) -> BoxedStrategy<Bson> {
    let right: BoxedStrategy<Bson> = match field {
        "_id" => (0u32..5).prop_map(|n| Bson::Document(token(n))).boxed(),
        "operationType" => prop_oneof![
            Just("insert"),
            Just("update"),
            Just("delete"),
            Just("invalidate"),
            Just("somethingNew")
        ]
        .prop_map(|s| Bson::String(s.into()))
        .boxed(),
        "ns" | "to" => (
            prop_oneof![Just("a"), Just("shop")],
            proptest::option::of(prop_oneof![Just("c"), Just("orders")]),
            any::<bool>(),
        )
            .prop_map(|(db, coll, extra)| {
                let mut d = doc! { "db": db };
                if let Some(c) = coll {
                    d.insert("coll", c);
                }
                if extra {
                    d.insert("viewOn", "v");
                }
                Bson::Document(d)
            })
            .boxed(),
        "nsType" => Just(Bson::String("collection".into())).boxed(),
        "documentKey" => (0i32..3)
            .prop_map(|n| Bson::Document(doc! { "_id": n }))
            .boxed(),
        "updateDescription" => Just(Bson::Document(doc! {
            "updatedFields": { "a": 1 }, "removedFields": ["b"], "truncatedArrays": []
        }))
        .boxed(),
        "fullDocument" | "fullDocumentBeforeChange" => (0i32..3, any::<bool>(), any::<bool>())
            .prop_map(|(id, sku, qty)| {
                let mut d = doc! { "_id": id };
                if sku {
                    d.insert("sku", "S");
                }
                if qty {
                    d.insert("qty", 4_i64);
                }
                Bson::Document(d)
            })
            .boxed(),
        "clusterTime" => Just(Bson::Timestamp(ts())).boxed(),
        "wallTime" => any::<i64>()
            .prop_map(|t| Bson::DateTime(DateTime::from_millis(t)))
            .boxed(),
        "collectionUUID" => Just(Bson::Binary(uuid())).boxed(),
        "operationDescription" | "lsid" => Just(Bson::Document(doc! { "id": 1 })).boxed(),
        "splitEvent" => (1i32..4, 1i32..4)
            .prop_map(|(f, o)| Bson::Document(doc! { "fragment": f, "of": o }))
            .boxed(),
        "txnNumber" => prop_oneof![
            any::<i32>().prop_map(Bson::Int32),
            any::<i64>().prop_map(Bson::Int64)
        ]
        .boxed(),
        _ => any::<i32>().prop_map(Bson::Int32).boxed(),
    };
    let other = prop_oneof![
        Just(Bson::Null),
        any::<i32>().prop_map(Bson::Int32),
        Just(Bson::String("s".into())),
        Just(Bson::Document(doc! { "x": 1 })),
        Just(Bson::Array(vec![Bson::Int32(1)])),
        Just(Bson::Double(2.5)),
        Just(Bson::DateTime(DateTime::from_millis(7))),
    ];
    prop_oneof![6 => right, 2 => other].boxed()
}

const FIELDS: &[&str] = &[
    "_id",
    "operationType",
    "ns",
    "nsType",
    "to",
    "documentKey",
    "updateDescription",
    "fullDocument",
    "fullDocumentBeforeChange",
    "clusterTime",
    "wallTime",
    "collectionUUID",
    "operationDescription",
    "splitEvent",
    "lsid",
    "txnNumber",
    "somethingElse",
];

/// An event as raw bytes: a random selection of fields (the required ones usually
/// present), in random order, some repeated.
fn event_bytes() -> impl Strategy<Value = Vec<u8>> {
    let fields = proptest::collection::vec(
        (0..FIELDS.len(), 0u8..10).prop_flat_map(|(i, weight)| {
            let name = FIELDS[i];
            (Just(name), value_for(name), Just(weight))
        }),
        0..12,
    );
    (
        fields,
        value_for("_id"),
        value_for("operationType"),
        any::<bool>(),
    )
        .prop_map(|(fields, id, op, required_first)| {
            let mut raw = RawDocumentBuf::new();
            let push = |raw: &mut RawDocumentBuf, k: &str, v: &Bson| {
                let key = bson::raw::CString::try_from(k).unwrap();
                raw.append(key, bson::RawBson::try_from(v.clone()).unwrap());
            };
            if required_first {
                push(&mut raw, "_id", &id);
                push(&mut raw, "operationType", &op);
            }
            for (name, value, _) in &fields {
                push(&mut raw, name, value);
            }
            if !required_first {
                push(&mut raw, "operationType", &op);
                push(&mut raw, "_id", &id);
            }
            raw.into_bytes()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn generated_events_decode_the_same(bytes in event_bytes()) {
        agree(&bytes);
    }

    #[test]
    fn mutated_events_decode_the_same(
        which in 0..13usize,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = serialize(&server_events()[which]);
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        agree(&bytes);
    }
}
