//! A database-wide audit log: every change to any collection of the `app` database,
//! appended to a file as the server sent it.
//!
//! `db.watch().raw()` yields [`RawChangeEvent`]s: nothing is decoded, each event's BSON
//! bytes (which share the reply's buffer) are appended to the log as they are. The log is
//! a sequence of BSON documents, the format `bsondump` reads, and [`read_log`] reads it
//! back. Reading one field in place ([`RawChangeEvent::operation_type`]) is all the
//! program looks at, for its count per operation.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use brook::{Client, RawChangeEvent};
use bson::Document;

use crate::BoxError;

/// The database audited.
pub const DB: &str = "app";

/// Appends the next `events` change events of the whole `app` database on `uri` (from
/// now) to `log`, and returns how many of each `operationType` it wrote.
pub async fn run(
    uri: &str,
    events: usize,
    log: &mut impl Write,
) -> Result<BTreeMap<String, usize>, BoxError> {
    let client = Client::connect(uri).await?;
    let mut stream = client
        .database(DB)
        .watch()
        .raw()
        .max_await_time(Duration::from_millis(500))
        .await?;
    let mut counts = BTreeMap::new();
    let mut written = 0;
    while written < events {
        let event: RawChangeEvent = match stream.next().await {
            Some(event) => event?,
            None => return Err("the stream ended before enough events came".into()),
        };
        log.write_all(event.as_bytes())?;
        let operation = event
            .operation_type()
            .map_or_else(|| "?".to_owned(), |op| op.as_str().to_owned());
        *counts.entry(operation).or_insert(0) += 1;
        written += 1;
    }
    log.flush()?;
    stream.close().await?;
    client.shutdown().await;
    Ok(counts)
}

/// The documents of an audit log written by [`run`], in order.
pub fn read_log(mut bytes: &[u8]) -> Result<Vec<Document>, BoxError> {
    let mut documents = Vec::new();
    while !bytes.is_empty() {
        let document = Document::from_reader(&mut bytes)?;
        documents.push(document);
    }
    Ok(documents)
}
