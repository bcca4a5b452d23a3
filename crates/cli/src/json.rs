//! Extended JSON in and out, keeping the order of fields.
//!
//! Output: an event (a raw BSON document) becomes one line of relaxed MongoDB extended
//! JSON (`{"n": 1}`, `{"$date": "…"}`). The document is walked in place, in the server's
//! field order: no intermediate `Document`, no typed decoding. (The resume file's
//! canonical extended JSON is written by `brook::checkpoint::FileCheckpoint`.)
//!
//! Input: the JSON given to `--pipeline`, `--collation`, `--resume-after`… is read into an
//! order-keeping tree first (serde_json's own map would sort the keys, and the order of a
//! `$sort` or `$project` stage matters), then turned into BSON; objects that are extended
//! JSON type wrappers (`{"$oid": …}`, `{"$date": …}`, `{"$numberLong": …}`…) are handed to
//! bson's extended-JSON parser.

use std::fmt;

use bson::{Bson, Document, RawArray, RawBsonRef, RawDocument};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// An error converting between BSON and JSON.
#[derive(Debug)]
pub(crate) struct JsonError(String);

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonError {
    fn new(message: impl Into<String>) -> JsonError {
        JsonError(message.into())
    }
}

/// Appends `doc` to `out` as one line of relaxed extended JSON (no trailing newline).
pub(crate) fn write_document(doc: &RawDocument, out: &mut Vec<u8>) -> Result<(), JsonError> {
    out.push(b'{');
    for (i, element) in doc.into_iter().enumerate() {
        let (key, value) =
            element.map_err(|e| JsonError::new(format!("malformed BSON document: {e}")))?;
        if i > 0 {
            out.push(b',');
        }
        write_str(key.as_str(), out)?;
        out.push(b':');
        write_value(value, out)?;
    }
    out.push(b'}');
    Ok(())
}

fn write_array(array: &RawArray, out: &mut Vec<u8>) -> Result<(), JsonError> {
    out.push(b'[');
    for (i, value) in array.into_iter().enumerate() {
        let value = value.map_err(|e| JsonError::new(format!("malformed BSON array: {e}")))?;
        if i > 0 {
            out.push(b',');
        }
        write_value(value, out)?;
    }
    out.push(b']');
    Ok(())
}

fn write_value(value: RawBsonRef<'_>, out: &mut Vec<u8>) -> Result<(), JsonError> {
    match value {
        RawBsonRef::Document(d) => write_document(d, out),
        RawBsonRef::Array(a) => write_array(a, out),
        other => {
            let bson = Bson::try_from(other)
                .map_err(|e| JsonError::new(format!("malformed BSON value: {e}")))?;
            serde_json::to_writer(out, &bson.into_relaxed_extjson())
                .map_err(|e| JsonError::new(format!("cannot write JSON: {e}")))
        }
    }
}

fn write_str(s: &str, out: &mut Vec<u8>) -> Result<(), JsonError> {
    serde_json::to_writer(out, s).map_err(|e| JsonError::new(format!("cannot write JSON: {e}")))
}

/// `doc` as one line of relaxed extended JSON.
#[cfg(test)]
fn document_to_string(doc: &RawDocument) -> Result<String, JsonError> {
    let mut out = Vec::with_capacity(doc.as_bytes().len().saturating_mul(2));
    write_document(doc, &mut out)?;
    String::from_utf8(out).map_err(|e| JsonError::new(format!("not UTF-8: {e}")))
}

// ---------------------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------------------

/// The keys that make a JSON object an extended JSON type wrapper rather than a document
/// (the ones bson's extended JSON parser recognises).
const WRAPPER_KEYS: [&str; 16] = [
    "$oid",
    "$symbol",
    "$regularExpression",
    "$numberInt",
    "$numberLong",
    "$numberDouble",
    "$numberDecimal",
    "$binary",
    "$uuid",
    "$code",
    "$timestamp",
    "$date",
    "$minKey",
    "$maxKey",
    "$dbPointer",
    "$undefined",
];

/// A JSON value whose objects keep their keys in the order they were written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ordered {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number, as serde_json read it.
    Number(serde_json::Number),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Ordered>),
    /// An object, its members in order.
    Object(Vec<(String, Ordered)>),
}

impl Ordered {
    /// Parses JSON text.
    pub(crate) fn parse(text: &str) -> Result<Ordered, JsonError> {
        serde_json::from_str(text).map_err(|e| JsonError::new(format!("invalid JSON: {e}")))
    }

    /// The plain serde_json value (object keys lose their order).
    fn into_value(self) -> serde_json::Value {
        match self {
            Ordered::Null => serde_json::Value::Null,
            Ordered::Bool(b) => serde_json::Value::Bool(b),
            Ordered::Number(n) => serde_json::Value::Number(n),
            Ordered::String(s) => serde_json::Value::String(s),
            Ordered::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(Ordered::into_value).collect())
            }
            Ordered::Object(members) => serde_json::Value::Object(
                members
                    .into_iter()
                    .map(|(k, v)| (k, v.into_value()))
                    .collect(),
            ),
        }
    }

    /// The value as BSON, reading extended JSON.
    pub(crate) fn into_bson(self) -> Result<Bson, JsonError> {
        match self {
            Ordered::Array(items) => items
                .into_iter()
                .map(Ordered::into_bson)
                .collect::<Result<Vec<Bson>, JsonError>>()
                .map(Bson::Array),
            Ordered::Object(members)
                if !members
                    .iter()
                    .any(|(k, _)| WRAPPER_KEYS.contains(&k.as_str())) =>
            {
                let mut doc = Document::new();
                for (key, value) in members {
                    doc.insert(key, value.into_bson()?);
                }
                Ok(Bson::Document(doc))
            }
            other => Bson::try_from(other.into_value())
                .map_err(|e| JsonError::new(format!("invalid extended JSON: {e}"))),
        }
    }
}

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Ordered, D::Error> {
        deserializer.deserialize_any(OrderedVisitor)
    }
}

struct OrderedVisitor;

impl<'de> Visitor<'de> for OrderedVisitor {
    type Value = Ordered;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Ordered, E> {
        Ok(Ordered::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Ordered, E> {
        Ok(Ordered::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Ordered, E> {
        Ok(Ordered::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Ordered, E> {
        Ok(Ordered::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Ordered, E> {
        Ok(Ordered::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Ordered, E> {
        serde_json::Number::from_f64(v)
            .map(Ordered::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Ordered, E> {
        Ok(Ordered::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Ordered, E> {
        Ok(Ordered::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Ordered, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Ordered::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
        let mut members = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Ordered>()? {
            members.push((key, value));
        }
        Ok(Ordered::Object(members))
    }
}

/// Parses a JSON object (extended JSON allowed) into a document.
pub(crate) fn parse_document(text: &str) -> Result<Document, JsonError> {
    match Ordered::parse(text)? {
        value @ Ordered::Object(_) => match value.into_bson()? {
            Bson::Document(doc) => Ok(doc),
            other => Err(JsonError::new(format!(
                "expected a document, got a {:?} value",
                other.element_type()
            ))),
        },
        _ => Err(JsonError::new("expected a JSON object `{…}`")),
    }
}

/// Parses a JSON array of objects (extended JSON allowed) into pipeline stages.
pub(crate) fn parse_pipeline(text: &str) -> Result<Vec<Document>, JsonError> {
    let Ordered::Array(items) = Ordered::parse(text)? else {
        return Err(JsonError::new("expected a JSON array of stages `[{…}, …]`"));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            value @ Ordered::Object(_) => match value.into_bson()? {
                Bson::Document(doc) => Ok(doc),
                _ => Err(JsonError::new(format!("stage {i} is not a document"))),
            },
            _ => Err(JsonError::new(format!("stage {i} is not a JSON object"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use bson::{Binary, DateTime, Timestamp, doc, oid::ObjectId, rawdoc, spec::BinarySubtype};

    use super::*;

    fn relaxed(d: &RawDocument) -> String {
        document_to_string(d).unwrap()
    }

    #[test]
    fn events_print_as_relaxed_extended_json_in_field_order() {
        let oid = ObjectId::parse_str("65f0a1b2c3d4e5f601234567").unwrap();
        let event = rawdoc! {
            "_id": { "_data": "8265F0" },
            "operationType": "insert",
            "clusterTime": Timestamp { time: 1_700_000_000, increment: 7 },
            "wallTime": DateTime::from_millis(1_700_000_000_123),
            "ns": { "db": "shop", "coll": "orders" },
            "fullDocument": {
                "zeta": 1, "alpha": 2_i64, "pi": 3.5, "oid": oid, "nothing": null,
                "tags": ["a", { "b": true }], "bin": Binary { subtype: BinarySubtype::Generic, bytes: vec![1, 2] },
                "quote": "say \"hi\"\n",
            },
        };
        assert_eq!(
            relaxed(&event),
            concat!(
                r#"{"_id":{"_data":"8265F0"},"operationType":"insert","#,
                r#""clusterTime":{"$timestamp":{"i":7,"t":1700000000}},"#,
                r#""wallTime":{"$date":"2023-11-14T22:13:20.123Z"},"#,
                r#""ns":{"db":"shop","coll":"orders"},"#,
                r#""fullDocument":{"zeta":1,"alpha":2,"pi":3.5,"oid":{"$oid":"65f0a1b2c3d4e5f601234567"},"#,
                r#""nothing":null,"tags":["a",{"b":true}],"bin":{"$binary":{"base64":"AQI=","subType":"00"}},"#,
                r#""quote":"say \"hi\"\n"}}"#,
            )
        );
    }

    #[test]
    fn output_parses_back_to_the_same_document() {
        let original = doc! {
            "b": { "y": 1, "x": [2.5, "s"] },
            "a": DateTime::from_millis(5),
            "t": Timestamp { time: 3, increment: 4 },
        };
        let raw = bson::RawDocumentBuf::try_from(&original).unwrap();
        let text = document_to_string(&raw).unwrap();
        assert_eq!(parse_document(&text).unwrap(), original);
        let back = parse_document(&text).unwrap();
        let keys: Vec<&String> = back.keys().collect();
        assert_eq!(keys, ["b", "a", "t"]);
    }

    #[test]
    fn input_keeps_key_order_and_reads_extended_json() {
        let d = parse_document(
            r#"{"z": 1, "a": {"$numberLong": "5"}, "m": {"$oid": "65f0a1b2c3d4e5f601234567"},
                "when": {"$date": "2024-01-01T00:00:00Z"}, "big": 5000000000, "f": 1.5,
                "q": {"$regex": "^a", "$options": "i"}, "n": null, "arr": [true, {"k": "v"}]}"#,
        )
        .unwrap();
        let keys: Vec<&str> = d.keys().map(String::as_str).collect();
        assert_eq!(keys, ["z", "a", "m", "when", "big", "f", "q", "n", "arr"]);
        assert_eq!(d.get("z"), Some(&Bson::Int32(1)));
        assert_eq!(d.get("a"), Some(&Bson::Int64(5)));
        assert!(matches!(d.get("m"), Some(Bson::ObjectId(_))));
        assert_eq!(
            d.get("when"),
            Some(&Bson::DateTime(DateTime::from_millis(1_704_067_200_000)))
        );
        assert_eq!(d.get("big"), Some(&Bson::Int64(5_000_000_000)));
        assert_eq!(d.get("f"), Some(&Bson::Double(1.5)));
        // A query operator is not a legacy regex wrapper: it stays a document.
        assert_eq!(
            d.get("q"),
            Some(&Bson::Document(doc! { "$regex": "^a", "$options": "i" }))
        );
        assert_eq!(d.get("n"), Some(&Bson::Null));
        assert_eq!(
            d.get("arr"),
            Some(&Bson::Array(vec![
                Bson::Boolean(true),
                Bson::Document(doc! { "k": "v" })
            ]))
        );
    }

    #[test]
    fn pipelines_are_arrays_of_objects() {
        let p = parse_pipeline(
            r#"[{"$match": {"operationType": {"$in": ["insert", "update"]}}}, {"$project": {"b": 1, "a": 1}}]"#,
        )
        .unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[0],
            doc! { "$match": { "operationType": { "$in": ["insert", "update"] } } }
        );
        let project = p[1].get_document("$project").unwrap();
        assert_eq!(project.keys().collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(parse_pipeline("[]").unwrap(), Vec::<Document>::new());

        for bad in [
            r#"{"$match": {}}"#,
            "[1]",
            r#"[{"$match": {}}, "x"]"#,
            "[",
            "",
        ] {
            assert!(parse_pipeline(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn documents_must_be_objects_and_wrappers_must_be_valid() {
        for bad in [
            "[]",
            "1",
            "\"s\"",
            "{",
            r#"{"$oid": "65f0a1b2c3d4e5f601234567"}"#,
            r#"{"a": {"$numberLong": "x"}}"#,
            r#"{"a": {"$oid": "zz"}}"#,
        ] {
            assert!(parse_document(bad).is_err(), "accepted {bad:?}");
        }
        assert_eq!(parse_document("{}").unwrap(), Document::new());
    }

    #[test]
    fn malformed_bson_is_an_error_not_a_panic() {
        // A document whose one element claims a string longer than the document.
        let bytes = b"\x0f\0\0\0\x02s\0\xff\0\0\0ab\0\0".to_vec();
        let raw = RawDocument::from_bytes(&bytes).unwrap();
        assert!(document_to_string(raw).is_err());
    }
}
