//! Extended JSON in and out, keeping the order of fields.
//!
//! Output: an event (a raw BSON document) becomes one line of MongoDB Extended JSON v2,
//! relaxed (`{"n": 1}`, `{"$date": "…"}`) or canonical (`{"n": {"$numberInt": "1"}}`), see
//! [`JsonFormat`]. The document is walked in place, in the server's field order: no
//! intermediate `Document`, no typed decoding. (The resume file's canonical extended
//! JSON is written by `brook::checkpoint::FileCheckpoint`.)
//!
//! Input: the JSON given to `--pipeline`, `--collation`, `--resume-after`… is read by
//! serde_json with `preserve_order` (the order of a `$sort` or `$project` stage matters),
//! then turned into BSON; objects that are extended JSON type wrappers (`{"$oid": …}`,
//! `{"$date": …}`, `{"$numberLong": …}`…) are handed to bson's extended-JSON parser.

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use bson::{Bson, Document, RawArray, RawBsonRef, RawDocument};

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

/// Which MongoDB Extended JSON v2 `brook tail` prints (`--json-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum JsonFormat {
    /// Relaxed: numbers as JSON numbers; dates of the years 1970 to 9999 as
    /// `{"$date": "2026-12-02T03:04:05.000Z"}`, always with milliseconds, so that they
    /// sort as text.
    #[default]
    Relaxed,
    /// Canonical: every BSON type kept (`{"$numberInt": "1"}`,
    /// `{"$date": {"$numberLong": "…"}}`), as mongoexport's `--jsonFormat=canonical`.
    Canonical,
}

/// The last millisecond relaxed extended JSON shows as an ISO-8601 string
/// (9999-12-31T23:59:59.999Z).
const LAST_ISO_DATE_MILLIS: i64 = 253_402_300_799_999;

/// Appends `doc` to `out` as one line of extended JSON in `format` (no trailing newline).
pub(crate) fn write_document(
    doc: &RawDocument,
    format: JsonFormat,
    out: &mut Vec<u8>,
) -> Result<(), JsonError> {
    out.push(b'{');
    for (i, element) in doc.into_iter().enumerate() {
        let (key, value) =
            element.map_err(|e| JsonError::new(format!("malformed BSON document: {e}")))?;
        if i > 0 {
            out.push(b',');
        }
        write_json(key.as_str(), out)?;
        out.push(b':');
        write_value(value, format, out)?;
    }
    out.push(b'}');
    Ok(())
}

fn write_array(array: &RawArray, format: JsonFormat, out: &mut Vec<u8>) -> Result<(), JsonError> {
    out.push(b'[');
    for (i, value) in array.into_iter().enumerate() {
        let value = value.map_err(|e| JsonError::new(format!("malformed BSON array: {e}")))?;
        if i > 0 {
            out.push(b',');
        }
        write_value(value, format, out)?;
    }
    out.push(b']');
    Ok(())
}

fn write_value(
    value: RawBsonRef<'_>,
    format: JsonFormat,
    out: &mut Vec<u8>,
) -> Result<(), JsonError> {
    match value {
        RawBsonRef::Document(d) => write_document(d, format, out),
        RawBsonRef::Array(a) => write_array(a, format, out),
        RawBsonRef::DateTime(date)
            if format == JsonFormat::Relaxed
                && (0..=LAST_ISO_DATE_MILLIS).contains(&date.timestamp_millis()) =>
        {
            // bson leaves out a zero fraction (`…:05Z`): always `.mmm` here.
            let millis = date.timestamp_millis().unsigned_abs();
            let text = crate::stats::rfc3339_millis(UNIX_EPOCH + Duration::from_millis(millis));
            out.extend_from_slice(b"{\"$date\":");
            write_json(&text, out)?;
            out.push(b'}');
            Ok(())
        }
        other => {
            let bson = Bson::try_from(other)
                .map_err(|e| JsonError::new(format!("malformed BSON value: {e}")))?;
            let json = match (format, other) {
                // Outside 1970 to 9999 a relaxed date is the canonical one (bson would
                // print a date after 9999 as 9999-12-31T23:59:59.999999999Z).
                (JsonFormat::Relaxed, RawBsonRef::DateTime(_)) | (JsonFormat::Canonical, _) => {
                    bson.into_canonical_extjson()
                }
                (JsonFormat::Relaxed, _) => bson.into_relaxed_extjson(),
            };
            write_json(&json, out)
        }
    }
}

fn write_json<T: serde::Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), JsonError> {
    serde_json::to_writer(out, value).map_err(|e| JsonError::new(format!("cannot write JSON: {e}")))
}

/// `doc` as one line of extended JSON.
#[cfg(test)]
fn document_to_string(doc: &RawDocument, format: JsonFormat) -> Result<String, JsonError> {
    let mut out = Vec::with_capacity(doc.as_bytes().len().saturating_mul(2));
    write_document(doc, format, &mut out)?;
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

/// Parses JSON text; objects keep their keys in the order written (`preserve_order`).
fn parse_json(text: &str) -> Result<serde_json::Value, JsonError> {
    serde_json::from_str(text).map_err(|e| JsonError::new(format!("invalid JSON: {e}")))
}

/// `value` as BSON, reading extended JSON. Objects other than type wrappers are walked
/// here, so that a query's `{"$regex": …, "$options": …}` stays a document rather than
/// being read as a legacy regular expression.
fn into_bson(value: serde_json::Value) -> Result<Bson, JsonError> {
    match value {
        serde_json::Value::Array(items) => items
            .into_iter()
            .map(into_bson)
            .collect::<Result<Vec<Bson>, JsonError>>()
            .map(Bson::Array),
        serde_json::Value::Object(members)
            if !members.keys().any(|k| WRAPPER_KEYS.contains(&k.as_str())) =>
        {
            let mut doc = Document::new();
            for (key, value) in members {
                doc.insert(key, into_bson(value)?);
            }
            Ok(Bson::Document(doc))
        }
        other => {
            Bson::try_from(other).map_err(|e| JsonError::new(format!("invalid extended JSON: {e}")))
        }
    }
}

/// Parses a JSON object (extended JSON allowed) into a document.
pub(crate) fn parse_document(text: &str) -> Result<Document, JsonError> {
    match parse_json(text)? {
        value @ serde_json::Value::Object(_) => match into_bson(value)? {
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
    let serde_json::Value::Array(items) = parse_json(text)? else {
        return Err(JsonError::new("expected a JSON array of stages `[{…}, …]`"));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            value @ serde_json::Value::Object(_) => match into_bson(value)? {
                Bson::Document(doc) => Ok(doc),
                _ => Err(JsonError::new(format!("stage {i} is not a document"))),
            },
            _ => Err(JsonError::new(format!("stage {i} is not a JSON object"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use bson::{
        Binary, DateTime, JavaScriptCodeWithScope, Timestamp, doc, oid::ObjectId, rawdoc,
        spec::BinarySubtype,
    };

    use super::*;

    fn relaxed(d: &RawDocument) -> String {
        document_to_string(d, JsonFormat::Relaxed).unwrap()
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
                r#""clusterTime":{"$timestamp":{"t":1700000000,"i":7}},"#,
                r#""wallTime":{"$date":"2023-11-14T22:13:20.123Z"},"#,
                r#""ns":{"db":"shop","coll":"orders"},"#,
                r#""fullDocument":{"zeta":1,"alpha":2,"pi":3.5,"oid":{"$oid":"65f0a1b2c3d4e5f601234567"},"#,
                r#""nothing":null,"tags":["a",{"b":true}],"bin":{"$binary":{"base64":"AQI=","subType":"00"}},"#,
                r#""quote":"say \"hi\"\n"}}"#,
            )
        );
    }

    /// One field of every BSON type, in the order of the spec's type table.
    fn every_type() -> Document {
        let ext = |json: serde_json::Value| Bson::try_from(json).expect("extended JSON");
        doc! {
            "double": 1.0,
            "fraction": -3.5,
            "infinity": f64::INFINITY,
            "string": "s\u{e9}",
            "document": { "b": 1, "a": 2 },
            "array": [1, "x"],
            "binary": Binary { subtype: BinarySubtype::Generic, bytes: vec![1, 2] },
            "uuid": Binary { subtype: BinarySubtype::Uuid, bytes: vec![0x11; 16] },
            "undefined": Bson::Undefined,
            "oid": ObjectId::parse_str("65f0a1b2c3d4e5f601234567").unwrap(),
            "bool": true,
            "date": DateTime::from_millis(1_796_180_645_000),
            "date_ms": DateTime::from_millis(1_796_180_645_007),
            "before_1970": DateTime::from_millis(-1),
            "after_9999": DateTime::from_millis(LAST_ISO_DATE_MILLIS + 1),
            "null": Bson::Null,
            "regex": ext(serde_json::json!({"$regularExpression": {"pattern": "^a", "options": "i"}})),
            "dbpointer": ext(serde_json::json!(
                {"$dbPointer": {"$ref": "c", "$id": {"$oid": "65f0a1b2c3d4e5f601234567"}}}
            )),
            "code": Bson::JavaScriptCode("f()".into()),
            "symbol": Bson::Symbol("sym".into()),
            "code_w_scope": JavaScriptCodeWithScope { code: "g()".into(), scope: doc! { "x": 1 } },
            "int32": 7,
            "timestamp": Timestamp { time: 1_700_000_000, increment: 7 },
            "int64": 8_i64,
            "decimal": ext(serde_json::json!({"$numberDecimal": "1.50"})),
            "min": Bson::MinKey,
            "max": Bson::MaxKey,
        }
    }

    /// Canonical Extended JSON v2 of [`every_type`], written from the specification's
    /// table (mongoexport --jsonFormat=canonical prints the same).
    const CANONICAL: &str = concat!(
        r#"{"double":{"$numberDouble":"1.0"},"fraction":{"$numberDouble":"-3.5"},"#,
        r#""infinity":{"$numberDouble":"Infinity"},"string":"sé","#,
        r#""document":{"b":{"$numberInt":"1"},"a":{"$numberInt":"2"}},"#,
        r#""array":[{"$numberInt":"1"},"x"],"#,
        r#""binary":{"$binary":{"base64":"AQI=","subType":"00"}},"#,
        r#""uuid":{"$binary":{"base64":"EREREREREREREREREREREQ==","subType":"04"}},"#,
        r#""undefined":{"$undefined":true},"oid":{"$oid":"65f0a1b2c3d4e5f601234567"},"#,
        r#""bool":true,"date":{"$date":{"$numberLong":"1796180645000"}},"#,
        r#""date_ms":{"$date":{"$numberLong":"1796180645007"}},"#,
        r#""before_1970":{"$date":{"$numberLong":"-1"}},"#,
        r#""after_9999":{"$date":{"$numberLong":"253402300800000"}},"null":null,"#,
        r#""regex":{"$regularExpression":{"pattern":"^a","options":"i"}},"#,
        r#""dbpointer":{"$dbPointer":{"$ref":"c","$id":{"$oid":"65f0a1b2c3d4e5f601234567"}}},"#,
        r#""code":{"$code":"f()"},"symbol":{"$symbol":"sym"},"#,
        r#""code_w_scope":{"$code":"g()","$scope":{"x":{"$numberInt":"1"}}},"#,
        r#""int32":{"$numberInt":"7"},"timestamp":{"$timestamp":{"t":1700000000,"i":7}},"#,
        r#""int64":{"$numberLong":"8"},"decimal":{"$numberDecimal":"1.50"},"#,
        r#""min":{"$minKey":1},"max":{"$maxKey":1}}"#,
    );

    /// Relaxed Extended JSON v2 of [`every_type`]: numbers plain (non-finite doubles
    /// stay wrapped), dates of 1970 to 9999 as ISO-8601 with milliseconds always.
    const RELAXED: &str = concat!(
        r#"{"double":1.0,"fraction":-3.5,"#,
        r#""infinity":{"$numberDouble":"Infinity"},"string":"sé","#,
        r#""document":{"b":1,"a":2},"array":[1,"x"],"#,
        r#""binary":{"$binary":{"base64":"AQI=","subType":"00"}},"#,
        r#""uuid":{"$binary":{"base64":"EREREREREREREREREREREQ==","subType":"04"}},"#,
        r#""undefined":{"$undefined":true},"oid":{"$oid":"65f0a1b2c3d4e5f601234567"},"#,
        r#""bool":true,"date":{"$date":"2026-12-02T03:04:05.000Z"},"#,
        r#""date_ms":{"$date":"2026-12-02T03:04:05.007Z"},"#,
        r#""before_1970":{"$date":{"$numberLong":"-1"}},"#,
        r#""after_9999":{"$date":{"$numberLong":"253402300800000"}},"null":null,"#,
        r#""regex":{"$regularExpression":{"pattern":"^a","options":"i"}},"#,
        r#""dbpointer":{"$dbPointer":{"$ref":"c","$id":{"$oid":"65f0a1b2c3d4e5f601234567"}}},"#,
        r#""code":{"$code":"f()"},"symbol":{"$symbol":"sym"},"#,
        r#""code_w_scope":{"$code":"g()","$scope":{"x":1}},"#,
        r#""int32":7,"timestamp":{"$timestamp":{"t":1700000000,"i":7}},"#,
        r#""int64":8,"decimal":{"$numberDecimal":"1.50"},"#,
        r#""min":{"$minKey":1},"max":{"$maxKey":1}}"#,
    );

    #[test]
    fn every_bson_type_in_canonical_extended_json() {
        let raw = bson::RawDocumentBuf::try_from(&every_type()).unwrap();
        let text = document_to_string(&raw, JsonFormat::Canonical).unwrap();
        assert_eq!(text, CANONICAL);
        // bson's own canonical output agrees, field for field.
        let bson_own =
            serde_json::to_string(&Bson::Document(every_type()).into_canonical_extjson());
        assert_eq!(text, bson_own.unwrap());
        // And reads back as the same document, every type kept.
        assert_eq!(parse_document(&text).unwrap(), every_type());
    }

    #[test]
    fn every_bson_type_in_relaxed_extended_json() {
        let raw = bson::RawDocumentBuf::try_from(&every_type()).unwrap();
        let text = document_to_string(&raw, JsonFormat::Relaxed).unwrap();
        assert_eq!(text, RELAXED);
        // bson's own relaxed output agrees except for two dates: it drops a zero fraction
        // of a second (`…T03:04:05Z`, which would not sort as text), and it prints a date
        // after 9999 as the last nanosecond of 9999, a different instant (the spec wants
        // `{"$numberLong": …}` there).
        let bson_own =
            serde_json::to_string(&Bson::Document(every_type()).into_relaxed_extjson()).unwrap();
        assert!(bson_own.contains(r#""after_9999":{"$date":"9999-12-31T23:59:59.999999999Z"}"#));
        assert_eq!(
            bson_own
                .replace(r#""2026-12-02T03:04:05Z""#, r#""2026-12-02T03:04:05.000Z""#)
                .replace(
                    r#""9999-12-31T23:59:59.999999999Z""#,
                    r#"{"$numberLong":"253402300800000"}"#
                ),
            text
        );
    }

    #[test]
    fn relaxed_dates_have_fixed_width_and_sort_as_text() {
        let dates: Vec<i64> = vec![
            0,
            1,
            999,
            1_000,
            59_999,
            951_782_400_000,
            LAST_ISO_DATE_MILLIS,
        ];
        let printed: Vec<String> = dates
            .iter()
            .map(|&ms| {
                let raw = rawdoc! { "d": DateTime::from_millis(ms) };
                document_to_string(&raw, JsonFormat::Relaxed).unwrap()
            })
            .collect();
        assert_eq!(printed[0], r#"{"d":{"$date":"1970-01-01T00:00:00.000Z"}}"#);
        assert_eq!(printed[2], r#"{"d":{"$date":"1970-01-01T00:00:00.999Z"}}"#);
        assert_eq!(printed[5], r#"{"d":{"$date":"2000-02-29T00:00:00.000Z"}}"#);
        assert_eq!(printed[6], r#"{"d":{"$date":"9999-12-31T23:59:59.999Z"}}"#);
        assert!(
            printed.iter().all(|p| p.len() == printed[0].len()),
            "{printed:?}"
        );
        let mut sorted = printed.clone();
        sorted.sort();
        assert_eq!(sorted, printed);
        // Each reads back as the same instant.
        for (text, ms) in printed.iter().zip(&dates) {
            assert_eq!(
                parse_document(text)
                    .unwrap()
                    .get_datetime("d")
                    .unwrap()
                    .timestamp_millis(),
                *ms
            );
        }
    }

    #[test]
    fn output_parses_back_to_the_same_document() {
        let original = doc! {
            "b": { "y": 1, "x": [2.5, "s"] },
            "a": DateTime::from_millis(5),
            "t": Timestamp { time: 3, increment: 4 },
        };
        let raw = bson::RawDocumentBuf::try_from(&original).unwrap();
        let text = document_to_string(&raw, JsonFormat::Relaxed).unwrap();
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
        assert!(document_to_string(raw, JsonFormat::Relaxed).is_err());
        assert!(document_to_string(raw, JsonFormat::Canonical).is_err());
    }
}
