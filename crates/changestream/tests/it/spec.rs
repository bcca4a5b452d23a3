//! A runner over the unified change-stream spec tests of mongodb/specifications
//! (`$BROOK_SPEC_TESTS/change-streams/tests/unified/*.json`, by default
//! `<workspace>/../shared/spec-tests`). The files are read at test time, never copied
//! into the repository (their license is CC BY-NC-SA 3.0 US).
//!
//! There is no server here: the runner plays one. `SimServer` keeps a change log
//! (`insertOne` appends an insert event), opens change-stream cursors on `aggregate`,
//! answers `getMore` from the log, obeys `failCommand` / `failGetMoreAfterCursorCheckout`
//! fail points (`errorCode`, `errorLabels`, `closeConnection`, `times`), and records
//! every command the machine sends, so that `expectEvents` can be checked with the
//! unified format's matching rules. Its replies, error replies (`ok: 0`) included, go
//! to the machine as they would come off the wire (`handle_reply`); a closed connection
//! is a [`Failure::Network`]. The simulated server version is the highest of a
//! fixed list of released versions that satisfies the file's and the test's
//! `runOnRequirements` on a replica set; its wire version drives the machine.
//!
//! Modelled server behaviour (beyond the change log): servers from wire version 7 send
//! a `postBatchResumeToken`; servers below wire version 9 refuse a non-string `comment`
//! (TypeMismatch, 14); with `failGetMoreAfterCursorCheckout` a server of wire version 9
//! or more labels the resumable codes `ResumableChangeStreamError` (with `failCommand`
//! only the labels of the fail point are sent).
//!
//! Every test case runs. A case the simulation cannot express fails, and must then be
//! listed in [`KNOWN_GAPS`] with the reason; a listed case that passes fails the
//! runner, so the list stays honest.

use std::collections::HashMap;
use std::path::PathBuf;

use brook_changestream::{
    ChangeStreamError, ChangeStreamMachine, ChangeStreamOptions, Failure, Outgoing,
    RESUMABLE_CODES, RESUMABLE_LABEL, Target,
};
use brook_command::{Reply, SharedDoc};
use bson::{Bson, Document, Timestamp, doc, oid::ObjectId};
use serde_json::Value;

/// Cases the simulation cannot run: (file, description, reason).
const KNOWN_GAPS: &[(&str, &str, &str)] = &[
    (
        "change-streams-disambiguatedPaths.json",
        "disambiguatedPaths is not present when showExpandedEvents is false/unset",
        "needs a real server for updateOne and the events it produces",
    ),
    (
        "change-streams-disambiguatedPaths.json",
        "disambiguatedPaths is present on updateDescription when an ambiguous path is present",
        "needs a real server for updateOne and the events it produces",
    ),
    (
        "change-streams-disambiguatedPaths.json",
        "disambiguatedPaths returns array indices as integers",
        "needs a real server for updateOne and the events it produces",
    ),
    (
        "change-streams-errors.json",
        "The watch helper must not throw a custom exception when executed against a single server topology, but instead depend on a server error",
        "needs a single-server topology (runOnRequirements: topologies [single])",
    ),
    (
        "change-streams-errors.json",
        "Change Stream should error when an invalid aggregation stage is passed in",
        "needs the server to evaluate user pipeline stages ($match/$project/invalid stages)",
    ),
    (
        "change-streams-errors.json",
        "Change Stream should error when _id is projected out",
        "needs the server to evaluate user pipeline stages ($match/$project/invalid stages)",
    ),
    (
        "change-streams-nsType.json",
        "nsType is present when creating collections",
        "needs server 8.1+ (nsType), beyond the simulated versions, and create/createCollection events",
    ),
    (
        "change-streams-nsType.json",
        "nsType is present when creating views",
        "needs server 8.1+ (nsType), beyond the simulated versions, and create/createCollection events",
    ),
    (
        "change-streams-pre_and_post_images.json",
        "fullDocument:whenAvailable with changeStreamPreAndPostImages enabled",
        "needs a real server for runCommand and the events it produces",
    ),
    (
        "change-streams-pre_and_post_images.json",
        "fullDocument:whenAvailable with changeStreamPreAndPostImages disabled",
        "needs a real server for runCommand and the events it produces",
    ),
    (
        "change-streams-pre_and_post_images.json",
        "fullDocument:required with changeStreamPreAndPostImages enabled",
        "needs a real server for runCommand and the events it produces",
    ),
    (
        "change-streams-pre_and_post_images.json",
        "fullDocument:required with changeStreamPreAndPostImages disabled",
        "needs a real server for runCommand and the events it produces",
    ),
    (
        "change-streams-pre_and_post_images.json",
        "fullDocumentBeforeChange:whenAvailable with changeStreamPreAndPostImages enabled",
        "needs a real server for runCommand and the events it produces",
    ),
    (
        "change-streams-pre_and_post_images.json",
        "fullDocumentBeforeChange:whenAvailable with changeStreamPreAndPostImages disabled",
        "needs a real server for runCommand and the events it produces",
    ),
    (
        "change-streams-pre_and_post_images.json",
        "fullDocumentBeforeChange:required with changeStreamPreAndPostImages enabled",
        "needs a real server for runCommand and the events it produces",
    ),
    (
        "change-streams-pre_and_post_images.json",
        "fullDocumentBeforeChange:required with changeStreamPreAndPostImages disabled",
        "needs a real server for runCommand and the events it produces",
    ),
    (
        "change-streams-pre_and_post_images.json",
        "fullDocumentBeforeChange:off with changeStreamPreAndPostImages enabled",
        "needs a real server for runCommand and the events it produces",
    ),
    (
        "change-streams-pre_and_post_images.json",
        "fullDocumentBeforeChange:off with changeStreamPreAndPostImages disabled",
        "needs a real server for runCommand and the events it produces",
    ),
    (
        "change-streams-showExpandedEvents.json",
        "when showExpandedEvents is true, new fields on change stream events are handled appropriately",
        "needs a real server for dropCollection and the events it produces",
    ),
    (
        "change-streams-showExpandedEvents.json",
        "when showExpandedEvents is true, createIndex events are reported",
        "needs the server to evaluate user pipeline stages ($match/$project/invalid stages)",
    ),
    (
        "change-streams-showExpandedEvents.json",
        "when showExpandedEvents is true, dropIndexes events are reported",
        "needs a real server for createIndex and the events it produces",
    ),
    (
        "change-streams-showExpandedEvents.json",
        "when showExpandedEvents is true, create events are reported",
        "needs a real server for dropCollection and the events it produces",
    ),
    (
        "change-streams-showExpandedEvents.json",
        "when showExpandedEvents is true, create events on views are reported",
        "needs a real server for dropCollection and the events it produces",
    ),
    (
        "change-streams-showExpandedEvents.json",
        "when showExpandedEvents is true, modify events are reported",
        "needs a real server for createIndex and the events it produces",
    ),
    (
        "change-streams-showExpandedEvents.json",
        "when showExpandedEvents is true, shardCollection events are reported",
        "needs a sharded topology (runOnRequirements: topologies [sharded])",
    ),
    (
        "change-streams.json",
        "Test array truncation",
        "needs a real server for updateOne and the events it produces",
    ),
    (
        "change-streams.json",
        "to field is set in a rename change event",
        "needs a real server for dropCollection and the events it produces",
    ),
    (
        "change-streams.json",
        "Test unknown operationType MUST NOT err",
        "needs the server to evaluate user pipeline stages ($match/$project/invalid stages)",
    ),
    (
        "change-streams.json",
        "Test newField added in response MUST NOT err",
        "needs the server to evaluate user pipeline stages ($match/$project/invalid stages)",
    ),
    (
        "change-streams.json",
        "Test new structure in ns document MUST NOT err",
        "needs the server to evaluate user pipeline stages ($match/$project/invalid stages)",
    ),
    (
        "change-streams.json",
        "Test modified structure in ns document MUST NOT err",
        "needs the server to evaluate user pipeline stages ($match/$project/invalid stages)",
    ),
    (
        "change-streams.json",
        "Test server error on projecting out _id",
        "needs the server to evaluate user pipeline stages ($match/$project/invalid stages)",
    ),
    (
        "change-streams.json",
        "Test projection in change stream returns expected fields",
        "needs the server to evaluate user pipeline stages ($match/$project/invalid stages)",
    ),
    (
        "change-streams.json",
        "Change Stream should allow valid aggregate pipeline stages",
        "needs the server to evaluate user pipeline stages ($match/$project/invalid stages)",
    ),
    (
        "change-streams.json",
        "Test insert, update, replace, and delete event types",
        "needs a real server for updateOne and the events it produces",
    ),
    (
        "change-streams.json",
        "Test rename and invalidate event types",
        "needs a real server for dropCollection and the events it produces",
    ),
    (
        "change-streams.json",
        "Test drop and invalidate event types",
        "needs a real server for dropCollection and the events it produces",
    ),
];

fn spec_dir() -> PathBuf {
    let root = std::env::var_os("BROOK_SPEC_TESTS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/spec-tests"),
        PathBuf::from,
    );
    root.join("change-streams/tests/unified")
}

// ---------------------------------------------------------------------------------
// JSON -> BSON (the change-stream files use no extended JSON).

fn to_bson(v: &Value) -> Bson {
    match v {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i32::try_from(i).map_or(Bson::Int64(i), Bson::Int32)
            } else {
                Bson::Double(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(a) => Bson::Array(a.iter().map(to_bson).collect()),
        Value::Object(o) => {
            Bson::Document(o.iter().map(|(k, v)| (k.clone(), to_bson(v))).collect())
        }
    }
}

fn to_doc(v: &Value) -> Result<Document, String> {
    match to_bson(v) {
        Bson::Document(d) => Ok(d),
        other => Err(format!("expected a document, got {other}")),
    }
}

// ---------------------------------------------------------------------------------
// The unified format's matching rules.

fn as_f64(b: &Bson) -> Option<f64> {
    match b {
        Bson::Int32(i) => Some(f64::from(*i)),
        Bson::Int64(i) => Some(*i as f64),
        Bson::Double(d) => Some(*d),
        _ => None,
    }
}

fn type_name(b: &Bson) -> &'static str {
    match b {
        Bson::Double(_) => "double",
        Bson::String(_) => "string",
        Bson::Document(_) => "object",
        Bson::Array(_) => "array",
        Bson::Binary(_) => "binData",
        Bson::ObjectId(_) => "objectId",
        Bson::Boolean(_) => "bool",
        Bson::DateTime(_) => "date",
        Bson::Null => "null",
        Bson::Int32(_) => "int",
        Bson::Timestamp(_) => "timestamp",
        Bson::Int64(_) => "long",
        Bson::Decimal128(_) => "decimal",
        _ => "other",
    }
}

/// Checks `actual` against `expected`; extra keys are allowed in root documents only.
fn matches(expected: &Bson, actual: Option<&Bson>, root: bool, path: &str) -> Result<(), String> {
    if let Bson::Document(d) = expected
        && d.len() == 1
        && let Some((op, arg)) = d.iter().next()
        && op.starts_with("$$")
    {
        return match op.as_str() {
            "$$exists" => {
                let want = arg.as_bool().ok_or("$$exists takes a bool")?;
                if actual.is_some() == want {
                    Ok(())
                } else {
                    Err(format!("{path}: exists should be {want}"))
                }
            }
            "$$unsetOrMatches" => match actual {
                None => Ok(()),
                Some(_) => matches(arg, actual, root, path),
            },
            "$$type" => {
                let actual = actual.ok_or(format!("{path}: missing"))?;
                let names: Vec<&str> = match arg {
                    Bson::String(s) => vec![s.as_str()],
                    Bson::Array(a) => a.iter().filter_map(Bson::as_str).collect(),
                    _ => return Err("bad $$type".into()),
                };
                let t = type_name(actual);
                if names.contains(&t) || (names.contains(&"number") && as_f64(actual).is_some()) {
                    Ok(())
                } else {
                    Err(format!("{path}: type {t} not in {names:?}"))
                }
            }
            other => Err(format!("{path}: unsupported operator {other}")),
        };
    }
    let actual = actual.ok_or_else(|| format!("{path}: missing, expected {expected}"))?;
    match (expected, actual) {
        (Bson::Document(e), Bson::Document(a)) => {
            for (k, v) in e {
                matches(v, a.get(k), false, &format!("{path}.{k}"))?;
            }
            if !root {
                for k in a.keys() {
                    if !e.contains_key(k) {
                        return Err(format!("{path}: unexpected key {k} in {a}"));
                    }
                }
            }
            Ok(())
        }
        (Bson::Array(e), Bson::Array(a)) => {
            if e.len() != a.len() {
                return Err(format!(
                    "{path}: {} elements, expected {}",
                    a.len(),
                    e.len()
                ));
            }
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                matches(ev, Some(av), false, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        (e, a) => match (as_f64(e), as_f64(a)) {
            (Some(x), Some(y)) if x == y => Ok(()),
            (Some(_), Some(_)) => Err(format!("{path}: {a} != {e}")),
            _ if e == a => Ok(()),
            _ => Err(format!("{path}: {a} != {e}")),
        },
    }
}

// ---------------------------------------------------------------------------------
// Server versions and runOnRequirements.

/// Released server versions the simulation can pretend to be, with their wire version.
const VERSIONS: &[(&str, i32)] = &[
    ("3.6.23", 6),
    ("4.0.28", 7),
    ("4.2.25", 8),
    ("4.4.29", 9),
    ("5.0.31", 13),
    ("6.0.20", 17),
    ("7.0.16", 21),
    ("8.0.4", 25),
];

fn version(s: &str) -> Vec<u32> {
    let mut v: Vec<u32> = s.split('.').map(|p| p.parse().unwrap_or(0)).collect();
    v.resize(3, 0);
    v
}

fn requirement_ok(req: &Value, v: &str) -> bool {
    let Some(obj) = req.as_object() else {
        return false;
    };
    obj.iter().all(|(k, val)| match k.as_str() {
        "minServerVersion" => val.as_str().is_some_and(|m| version(v) >= version(m)),
        "maxServerVersion" => val.as_str().is_some_and(|m| version(v) <= version(m)),
        "topologies" => val
            .as_array()
            .is_some_and(|t| t.iter().any(|x| x == "replicaset")),
        "serverless" => val != "require",
        _ => false,
    })
}

fn any_requirement_ok(reqs: Option<&Value>, v: &str) -> bool {
    match reqs.and_then(Value::as_array) {
        None => true,
        Some(list) => list.iter().any(|r| requirement_ok(r, v)),
    }
}

// ---------------------------------------------------------------------------------
// The simulated server.

fn token(n: usize) -> Document {
    doc! { "_data": format!("{n:016X}") }
}

fn token_position(t: &Document) -> Result<usize, String> {
    let data = t.get_str("_data").map_err(|e| e.to_string())?;
    usize::from_str_radix(data, 16).map_err(|e| e.to_string())
}

struct Change {
    db: String,
    coll: String,
    event: Document,
}

struct SimCursor {
    db: Option<String>,
    coll: Option<String>,
    pos: usize,
    batch_size: Option<usize>,
    ns: String,
}

struct FailPoint {
    remaining: Option<u64>,
    commands: Option<Vec<String>>,
    code: Option<i32>,
    labels: Option<Vec<String>>,
    close: bool,
    after_checkout: bool,
}

struct Recorded {
    client: String,
    name: String,
    db: String,
    command: Document,
}

struct SimServer {
    wire: i32,
    log: Vec<Change>,
    cursors: HashMap<i64, SimCursor>,
    next_cursor: i64,
    fail_point: Option<FailPoint>,
    recorded: Vec<Recorded>,
}

/// What the simulated server did with a command: a reply body (`ok: 1` or `ok: 0`, fed
/// to the machine as it is), or a failure without a reply (a closed connection); `Err`
/// when the simulation cannot run the command.
type SimResult = Result<Result<Document, Failure>, String>;

/// A server error reply: `{ok: 0, errmsg, code, errorLabels?}`.
fn error_reply(code: i32, labels: &[String]) -> Document {
    let mut body = doc! { "ok": 0.0, "errmsg": format!("simulated error {code}"), "code": code };
    if !labels.is_empty() {
        body.insert("errorLabels", labels.to_vec());
    }
    body
}

impl SimServer {
    fn new(wire: i32) -> Self {
        SimServer {
            wire,
            log: Vec::new(),
            cursors: HashMap::new(),
            next_cursor: 6_000_000_000,
            fail_point: None,
            recorded: Vec::new(),
        }
    }

    fn operation_time(&self) -> Timestamp {
        Timestamp {
            time: u32::try_from(self.log.len()).unwrap_or(u32::MAX) + 1,
            increment: 1,
        }
    }

    fn insert(&mut self, db: &str, coll: &str, mut document: Document) -> Document {
        if !document.contains_key("_id") {
            let mut with_id = doc! { "_id": ObjectId::new() };
            with_id.extend(document);
            document = with_id;
        }
        let n = self.log.len() + 1;
        let event = doc! {
            "_id": token(n),
            "operationType": "insert",
            "clusterTime": Timestamp { time: u32::try_from(n).unwrap_or(u32::MAX), increment: 1 },
            "wallTime": bson::DateTime::from_millis(1_700_000_000_000),
            "fullDocument": document.clone(),
            "ns": { "db": db, "coll": coll },
            "documentKey": { "_id": document.get("_id").cloned().unwrap_or(Bson::Null) },
        };
        self.log.push(Change {
            db: db.to_owned(),
            coll: coll.to_owned(),
            event,
        });
        document
    }

    /// The fail point's outcome for `command` (an error reply, or a closed connection),
    /// consuming one of its `times`.
    fn fail(&mut self, command: &str) -> Option<Result<Document, Failure>> {
        let fp = self.fail_point.as_mut()?;
        let applies = match &fp.commands {
            Some(list) => list.iter().any(|c| c == command),
            None => fp.after_checkout && command == "getMore",
        };
        if !applies || fp.remaining == Some(0) {
            return None;
        }
        if let Some(r) = fp.remaining.as_mut() {
            *r -= 1;
        }
        if fp.close {
            return Some(Err(Failure::Network));
        }
        let code = fp.code?;
        let labels: Vec<String> = match &fp.labels {
            Some(l) => l.clone(),
            None if fp.after_checkout
                && self.wire >= 9
                && (RESUMABLE_CODES.contains(&code) || code == 43) =>
            {
                vec![RESUMABLE_LABEL.to_owned()]
            }
            None => vec![],
        };
        Some(Ok(error_reply(code, &labels)))
    }

    /// Up to `batch_size` matching events from the cursor's position, and the
    /// postBatchResumeToken.
    fn batch(&mut self, id: i64) -> (Vec<Bson>, Option<Document>) {
        let Some(c) = self.cursors.get_mut(&id) else {
            return (vec![], None);
        };
        let mut out = Vec::new();
        let mut pos = c.pos;
        let limit = c.batch_size.unwrap_or(101);
        let mut pbrt = None;
        while pos < self.log.len() {
            if out.len() >= limit {
                break;
            }
            let change = &self.log[pos];
            pos += 1;
            let in_scope = c.db.as_ref().is_none_or(|d| *d == change.db)
                && c.coll.as_ref().is_none_or(|x| *x == change.coll);
            if in_scope {
                out.push(Bson::Document(change.event.clone()));
                pbrt = Some(token(pos));
            }
        }
        c.pos = pos;
        if out.len() < limit || pos >= self.log.len() {
            pbrt = Some(token(self.log.len()));
        }
        (out, pbrt.filter(|_| self.wire >= 7))
    }

    fn cursor_reply(
        &self,
        id: i64,
        ns: &str,
        key: &str,
        batch: Vec<Bson>,
        pbrt: Option<Document>,
    ) -> Document {
        let mut cursor = doc! { "id": id, "ns": ns, key: batch };
        if let Some(t) = pbrt {
            cursor.insert("postBatchResumeToken", t);
        }
        doc! { "cursor": cursor, "ok": 1.0, "operationTime": self.operation_time() }
    }

    fn aggregate(&mut self, body: &Document) -> SimResult {
        if let Some(outcome) = self.fail("aggregate") {
            return Ok(outcome);
        }
        if let Some(comment) = body.get("comment")
            && self.wire < 9
            && !matches!(comment, Bson::String(_))
        {
            return Ok(Ok(error_reply(14, &[])));
        }
        let db = body.get_str("$db").map_err(|e| e.to_string())?.to_owned();
        let pipeline = body.get_array("pipeline").map_err(|e| e.to_string())?;
        if pipeline.len() != 1 {
            return Err("the simulated server runs no pipeline stages after $changeStream".into());
        }
        let stage = pipeline
            .first()
            .and_then(Bson::as_document)
            .and_then(|d| d.get_document("$changeStream").ok())
            .ok_or("no $changeStream stage")?;
        let (sdb, scoll, ns) = match body.get("aggregate") {
            Some(Bson::String(coll)) => {
                (Some(db.clone()), Some(coll.clone()), format!("{db}.{coll}"))
            }
            _ if stage.get_bool("allChangesForCluster").unwrap_or(false) => {
                (None, None, "admin.$cmd.aggregate".to_owned())
            }
            _ => (Some(db.clone()), None, format!("{db}.$cmd.aggregate")),
        };
        let pos = if let Ok(t) = stage.get_document("resumeAfter") {
            token_position(t)?
        } else if let Ok(t) = stage.get_document("startAfter") {
            token_position(t)?
        } else if let Ok(ts) = stage.get_timestamp("startAtOperationTime") {
            usize::try_from(ts.time.saturating_sub(1)).unwrap_or(0)
        } else {
            self.log.len()
        };
        let batch_size = body
            .get_document("cursor")
            .ok()
            .and_then(|c| c.get("batchSize"))
            .and_then(as_f64)
            .map(|n| n as usize);
        let id = self.next_cursor;
        self.next_cursor += 1;
        self.cursors.insert(
            id,
            SimCursor {
                db: sdb,
                coll: scoll,
                pos,
                batch_size,
                ns: ns.clone(),
            },
        );
        let (batch, pbrt) = self.batch(id);
        Ok(Ok(self.cursor_reply(id, &ns, "firstBatch", batch, pbrt)))
    }

    fn get_more(&mut self, body: &Document) -> SimResult {
        if let Some(outcome) = self.fail("getMore") {
            return Ok(outcome);
        }
        let id = body.get_i64("getMore").map_err(|e| e.to_string())?;
        let Some(cursor) = self.cursors.get(&id) else {
            return Ok(Ok(error_reply(43, &[])));
        };
        let ns = cursor.ns.clone();
        let (batch, pbrt) = self.batch(id);
        Ok(Ok(self.cursor_reply(id, &ns, "nextBatch", batch, pbrt)))
    }
}

// ---------------------------------------------------------------------------------
// Entities and operations.

#[derive(Default)]
struct Entities {
    /// client id -> ignored command names (observed clients only).
    observed: HashMap<String, Vec<String>>,
    databases: HashMap<String, (String, String)>,
    collections: HashMap<String, (String, String, String)>,
    clients: Vec<String>,
}

impl Entities {
    fn parse(list: &[Value]) -> Result<Entities, String> {
        let mut e = Entities::default();
        for entity in list {
            let (kind, body) = entity
                .as_object()
                .and_then(|o| o.iter().next())
                .ok_or("bad entity")?;
            let id = body["id"].as_str().ok_or("entity without id")?.to_owned();
            match kind.as_str() {
                "client" => {
                    if body.get("observeEvents").is_some() {
                        let ignored = body
                            .get("ignoreCommandMonitoringEvents")
                            .and_then(Value::as_array)
                            .map(|a| {
                                a.iter()
                                    .filter_map(|v| v.as_str().map(str::to_owned))
                                    .collect()
                            })
                            .unwrap_or_default();
                        e.observed.insert(id.clone(), ignored);
                    }
                    e.clients.push(id);
                }
                "database" => {
                    let client = body["client"].as_str().ok_or("db client")?.to_owned();
                    let name = body["databaseName"].as_str().ok_or("db name")?.to_owned();
                    e.databases.insert(id, (client, name));
                }
                "collection" => {
                    let db = body["database"].as_str().ok_or("coll db")?;
                    let (client, db) = e.databases.get(db).cloned().ok_or("unknown db entity")?;
                    let name = body["collectionName"]
                        .as_str()
                        .ok_or("coll name")?
                        .to_owned();
                    e.collections.insert(id, (client, db, name));
                }
                other => return Err(format!("unsupported entity kind {other}")),
            }
        }
        Ok(e)
    }
}

struct Stream {
    client: String,
    machine: ChangeStreamMachine<u8>,
}

struct Runner {
    sim: SimServer,
    entities: Entities,
    streams: HashMap<String, Stream>,
}

impl Runner {
    /// Runs one command the machine handed out, as the driver would.
    fn drive(&mut self, stream: &str, out: Outgoing<u8>) -> Result<(), String> {
        let s = self.streams.get_mut(stream).ok_or("unknown stream")?;
        let built = out.build().map_err(|e| e.to_string())?;
        let name = out.name().to_owned();
        let db = built
            .body
            .get_str("$db")
            .map_err(|e| e.to_string())?
            .to_owned();
        self.sim.recorded.push(Recorded {
            client: s.client.clone(),
            name: name.clone(),
            db,
            command: built.body.clone(),
        });
        let wire = self.sim.wire;
        let result = match &out {
            Outgoing::KillCursors { command, .. } => {
                for id in &command.ids {
                    self.sim.cursors.remove(id);
                }
                return Ok(());
            }
            Outgoing::Aggregate { .. } => self.sim.aggregate(&built.body)?,
            Outgoing::GetMore { server, .. } => {
                if *server != 0 {
                    return Err("getMore sent to an unknown server".into());
                }
                self.sim.get_more(&built.body)?
            }
        };
        match result {
            Err(failure) => s.machine.handle_failure(failure, Some(wire)),
            // The reply as it came off the wire: the machine parses it (`ok: 0` too).
            Ok(body) => {
                let reply = Reply::from_document(&body).map_err(|e| e.to_string())?;
                s.machine.handle_reply(0, wire, reply);
            }
        }
        Ok(())
    }

    /// A blocking `next`: events first, else the next command; bounded.
    fn next_event(&mut self, stream: &str) -> Result<Result<SharedDoc, ChangeStreamError>, String> {
        for _ in 0..50 {
            let s = self.streams.get_mut(stream).ok_or("unknown stream")?;
            if let Some(e) = s.machine.poll_event() {
                return Ok(e);
            }
            let Some(out) = s.machine.poll_command() else {
                return Err("the stream ended without a document".into());
            };
            self.drive(stream, out)?;
        }
        Err("no document after 50 round trips (a real server would block)".into())
    }

    fn create_stream(&mut self, op: &Value) -> Result<Option<ChangeStreamError>, String> {
        let object = op["object"].as_str().ok_or("no object")?;
        let (client, target) = if let Some((c, db, coll)) = self.entities.collections.get(object) {
            (c.clone(), Target::collection(db.clone(), coll.clone()))
        } else if let Some((c, db)) = self.entities.databases.get(object) {
            (c.clone(), Target::database(db.clone()))
        } else if self.entities.clients.iter().any(|c| c == object) {
            (object.to_owned(), Target::Cluster)
        } else {
            return Err(format!("unknown entity {object}"));
        };
        let mut options = ChangeStreamOptions::default();
        if let Some(args) = op.get("arguments").and_then(Value::as_object) {
            for (k, v) in args {
                match k.as_str() {
                    "pipeline" => {
                        options.pipeline = v
                            .as_array()
                            .ok_or("pipeline")?
                            .iter()
                            .map(to_doc)
                            .collect::<Result<_, _>>()?;
                    }
                    "batchSize" => {
                        options.batch_size = v.as_u64().and_then(|n| u32::try_from(n).ok())
                    }
                    "comment" => options.comment = Some(to_bson(v)),
                    "fullDocument" => options.full_document = v.as_str().map(str::to_owned),
                    "fullDocumentBeforeChange" => {
                        options.full_document_before_change = v.as_str().map(str::to_owned);
                    }
                    "showExpandedEvents" => options.show_expanded_events = v.as_bool(),
                    other => {
                        return Err(format!("unsupported createChangeStream argument {other}"));
                    }
                }
            }
        }
        let id = op
            .get("saveResultAsEntity")
            .and_then(Value::as_str)
            .unwrap_or("__unsaved")
            .to_owned();
        self.streams.insert(
            id.clone(),
            Stream {
                client,
                machine: ChangeStreamMachine::new(target, options),
            },
        );
        // The helper runs the aggregate right away.
        let out = self
            .streams
            .get_mut(&id)
            .and_then(|s| s.machine.poll_command())
            .ok_or("no aggregate")?;
        self.drive(&id, out)?;
        let s = self.streams.get_mut(&id).ok_or("stream")?;
        if s.machine.is_closed() {
            return match s.machine.poll_event() {
                Some(Err(e)) => Ok(Some(e)),
                _ => Err("closed without an error".into()),
            };
        }
        Ok(None)
    }

    fn operation(&mut self, op: &Value) -> Result<(), String> {
        let name = op["name"].as_str().ok_or("no name")?;
        let args = op.get("arguments").cloned().unwrap_or(Value::Null);
        match name {
            "failPoint" => {
                let fp = &args["failPoint"];
                let data = &fp["data"];
                let remaining = match &fp["mode"] {
                    Value::String(s) if s == "alwaysOn" => None,
                    Value::String(s) if s == "off" => Some(0),
                    m => Some(m["times"].as_u64().ok_or("fail point mode")?),
                };
                let kind = fp["configureFailPoint"].as_str().ok_or("fail point name")?;
                let after_checkout = match kind {
                    "failCommand" => false,
                    "failGetMoreAfterCursorCheckout" => true,
                    other => return Err(format!("unsupported fail point {other}")),
                };
                self.sim.fail_point = Some(FailPoint {
                    remaining,
                    commands: data.get("failCommands").and_then(Value::as_array).map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    }),
                    code: data
                        .get("errorCode")
                        .and_then(Value::as_i64)
                        .and_then(|c| i32::try_from(c).ok()),
                    labels: data.get("errorLabels").and_then(Value::as_array).map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    }),
                    close: data
                        .get("closeConnection")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                    after_checkout,
                });
                Ok(())
            }
            "createChangeStream" => {
                let err = self.create_stream(op)?;
                check_outcome(op, err.map_or(Ok(None), Err))
            }
            "insertOne" => {
                let object = op["object"].as_str().ok_or("no object")?;
                let (client, db, coll) = self
                    .entities
                    .collections
                    .get(object)
                    .cloned()
                    .ok_or("unknown collection")?;
                let document = to_doc(&args["document"])?;
                let inserted = self.sim.insert(&db, &coll, document);
                self.sim.recorded.push(Recorded {
                    client,
                    name: "insert".into(),
                    db: db.clone(),
                    command: doc! { "insert": coll, "documents": [inserted], "ordered": true, "$db": db },
                });
                Ok(())
            }
            "iterateUntilDocumentOrError" => {
                let object = op["object"].as_str().ok_or("no object")?;
                let got = self.next_event(object)?;
                check_outcome(op, got.map(Some))
            }
            other => Err(format!(
                "unsupported operation {other} (needs a real server)"
            )),
        }
    }
}

/// Checks an operation's `expectResult` / `expectError` against its outcome.
fn check_outcome(
    op: &Value,
    got: Result<Option<SharedDoc>, ChangeStreamError>,
) -> Result<(), String> {
    match (got, op.get("expectError")) {
        (Ok(_), Some(e)) => Err(format!("expected error {e}, got success")),
        (Ok(doc), None) => {
            if let Some(expected) = op.get("expectResult") {
                let doc = doc
                    .ok_or("no result")?
                    .to_document()
                    .map_err(|e| e.to_string())?;
                matches(
                    &to_bson(expected),
                    Some(&Bson::Document(doc)),
                    true,
                    "result",
                )?;
            }
            Ok(())
        }
        (Err(err), None) => Err(format!("unexpected error: {err}")),
        (Err(err), Some(expected)) => {
            let exp = expected.as_object().ok_or("expectError")?;
            for (k, v) in exp {
                match k.as_str() {
                    "errorCode" => {
                        if err.code().map(i64::from) != v.as_i64() {
                            return Err(format!("error {err}: code should be {v}"));
                        }
                    }
                    "isClientError" => {
                        let client = err.server_error().is_none();
                        if Some(client) != v.as_bool() {
                            return Err(format!("error {err}: isClientError should be {v}"));
                        }
                    }
                    "isError" => {}
                    "errorLabelsContain" | "errorLabelsOmit" => {
                        let labels = err
                            .server_error()
                            .map(|s| s.labels.clone())
                            .unwrap_or_default();
                        for l in v.as_array().ok_or("labels")? {
                            let has = labels.iter().any(|x| Some(x.as_str()) == l.as_str());
                            if has != (k == "errorLabelsContain") {
                                return Err(format!("error {err}: {k} {l}"));
                            }
                        }
                    }
                    "errorCodeName" => {
                        let name = err.server_error().and_then(|s| s.code_name.clone());
                        if name.as_deref() != v.as_str() {
                            return Err(format!("error {err}: codeName should be {v}"));
                        }
                    }
                    other => return Err(format!("unsupported expectError key {other}")),
                }
            }
            Ok(())
        }
    }
}

/// Checks `expectEvents` against what the simulated server recorded.
fn check_events(runner: &Runner, expect: &Value) -> Result<(), String> {
    for block in expect.as_array().ok_or("expectEvents")? {
        let client = block["client"].as_str().ok_or("client")?;
        let ignored = runner
            .entities
            .observed
            .get(client)
            .cloned()
            .unwrap_or_default();
        let actual: Vec<&Recorded> = runner
            .sim
            .recorded
            .iter()
            .filter(|r| r.client == client && !ignored.contains(&r.name))
            .collect();
        let expected = block["events"].as_array().ok_or("events")?;
        let extra_ok = block
            .get("ignoreExtraEvents")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if actual.len() < expected.len() || (!extra_ok && actual.len() != expected.len()) {
            let names: Vec<&str> = actual.iter().map(|r| r.name.as_str()).collect();
            return Err(format!(
                "{} events {names:?}, expected {}",
                actual.len(),
                expected.len()
            ));
        }
        for (i, (e, a)) in expected.iter().zip(&actual).enumerate() {
            let started = e
                .get("commandStartedEvent")
                .ok_or("only commandStartedEvent is supported")?;
            if let Some(cmd) = started.get("command") {
                matches(
                    &to_bson(cmd),
                    Some(&Bson::Document(a.command.clone())),
                    true,
                    &format!("event[{i}]"),
                )?;
            }
            if let Some(n) = started.get("commandName")
                && n.as_str() != Some(a.name.as_str())
            {
                return Err(format!("event[{i}]: {} != {n}", a.name));
            }
            if let Some(d) = started.get("databaseName")
                && d.as_str() != Some(a.db.as_str())
            {
                return Err(format!("event[{i}]: database {} != {d}", a.db));
            }
        }
    }
    Ok(())
}

fn run_case(file: &Value, test: &Value) -> Result<(), String> {
    let version = VERSIONS
        .iter()
        .rev()
        .find(|(v, _)| {
            any_requirement_ok(file.get("runOnRequirements"), v)
                && any_requirement_ok(test.get("runOnRequirements"), v)
        })
        .ok_or("no simulated replica-set server satisfies runOnRequirements")?;
    let entities = Entities::parse(file["createEntities"].as_array().ok_or("createEntities")?)?;
    let mut runner = Runner {
        sim: SimServer::new(version.1),
        entities,
        streams: HashMap::new(),
    };
    for op in test["operations"].as_array().ok_or("operations")? {
        runner
            .operation(op)
            .map_err(|e| format!("{} (server {}): {e}", op["name"], version.0))?;
    }
    if let Some(expect) = test.get("expectEvents") {
        check_events(&runner, expect)?;
    }
    if test.get("outcome").is_some() {
        return Err("outcome (collection contents) is not simulated".into());
    }
    Ok(())
}

#[test]
fn unified_change_stream_spec_tests() {
    let dir = spec_dir();
    assert!(
        dir.is_dir(),
        "spec tests not found at {} (set BROOK_SPEC_TESTS)",
        dir.display()
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let (mut ran, mut gaps) = (0, 0);
    let mut problems = Vec::new();
    let mut seen_gaps = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let file: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for test in file["tests"].as_array().unwrap() {
            let desc = test["description"].as_str().unwrap();
            let gap = KNOWN_GAPS.iter().find(|(f, d, _)| *f == name && *d == desc);
            let outcome = run_case(&file, test);
            match (outcome, gap) {
                (Ok(()), None) => ran += 1,
                (Err(_), Some(_)) => {
                    gaps += 1;
                    seen_gaps.push((name.clone(), desc.to_owned()));
                }
                (Ok(()), Some((_, _, reason))) => problems.push(format!(
                    "{name}: {desc:?} is listed as a gap ({reason}) but passes: remove it from KNOWN_GAPS"
                )),
                (Err(e), None) => problems.push(format!("{name}: {desc:?} failed: {e}")),
            }
        }
    }
    for (f, d, _) in KNOWN_GAPS {
        if !seen_gaps.iter().any(|(sf, sd)| sf == f && sd == d)
            && !problems.iter().any(|p| p.contains(d))
        {
            problems.push(format!("KNOWN_GAPS lists {f}: {d:?}, which does not exist"));
        }
    }
    eprintln!("change-stream spec tests: {ran} ran and passed, {gaps} known gaps");
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
