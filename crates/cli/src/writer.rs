//! `brook demo-writer`: a steady trickle of inserts, updates and deletes for the demo.

use std::collections::VecDeque;

use bson::{DateTime, Document, doc, oid::ObjectId};

use crate::args::WriterArgs;
use crate::error::CliError;

/// One operation of the writer's cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Insert a new document.
    Insert,
    /// Update the newest live document.
    Update,
    /// Delete the oldest live document.
    Delete,
}

/// The `i`-th operation (from 0): insert, insert, update, delete, over and over, so the
/// collection grows by one document every four operations. With no live document, an
/// update or delete becomes an insert.
pub(crate) fn op_at(i: u64, live: usize) -> Op {
    match (i % 4, live) {
        (0 | 1, _) | (_, 0) => Op::Insert,
        (2, _) => Op::Update,
        _ => Op::Delete,
    }
}

/// What the writer did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Totals {
    inserts: u64,
    updates: u64,
    deletes: u64,
}

impl Totals {
    fn total(&self) -> u64 {
        self.inserts
            .saturating_add(self.updates)
            .saturating_add(self.deletes)
    }
}

/// Runs `brook demo-writer`.
pub(crate) async fn run(args: WriterArgs) -> Result<(), CliError> {
    let shutdown = crate::shutdown_signal()?;
    tokio::pin!(shutdown);
    let client = tokio::select! {
        client = crate::tail::connect(&args.uri, args.password_file.as_deref()) => client?,
        () = &mut shutdown => return Ok(()),
    };
    let coll = client.database(&args.db).collection::<Document>(&args.coll);
    let ns = format!("{}.{}", args.db, args.coll);
    let mut live: VecDeque<ObjectId> = VecDeque::new();
    let mut totals = Totals::default();
    let mut ticker = tokio::time::interval(args.interval.max(std::time::Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut i: u64 = 0;
    let outcome = loop {
        if args.count.is_some_and(|n| i >= n) {
            break Ok(());
        }
        tokio::select! {
            biased;
            () = &mut shutdown => break Ok(()),
            _ = ticker.tick() => {}
        }
        let now = DateTime::now();
        let step = match op_at(i, live.len()) {
            Op::Insert => {
                let id = ObjectId::new();
                let d = doc! { "_id": id, "n": i64::try_from(i).unwrap_or(i64::MAX), "kind": "demo", "at": now, "version": 1 };
                let r = coll.insert_one(d).await.map(|_| {
                    live.push_back(id);
                    totals.inserts += 1;
                });
                r.map_err(|e| CliError::brook(format!("insert into {ns} failed"), e))
            }
            Op::Update => match live.back() {
                Some(id) => coll
                    .update_one(
                        doc! { "_id": *id },
                        doc! { "$set": { "at": now }, "$inc": { "version": 1 } },
                    )
                    .await
                    .map(|_| totals.updates += 1)
                    .map_err(|e| CliError::brook(format!("update of {ns} failed"), e)),
                None => Ok(()),
            },
            Op::Delete => match live.pop_front() {
                Some(id) => coll
                    .delete_one(doc! { "_id": id })
                    .await
                    .map(|_| totals.deletes += 1)
                    .map_err(|e| CliError::brook(format!("delete from {ns} failed"), e)),
                None => Ok(()),
            },
        };
        if let Err(e) = step {
            break Err(e);
        }
        i = i.saturating_add(1);
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), client.shutdown()).await;
    eprintln!(
        "brook demo-writer: {} writes to {ns} ({} inserts, {} updates, {} deletes)",
        totals.total(),
        totals.inserts,
        totals.updates,
        totals.deletes
    );
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cycle_is_insert_insert_update_delete() {
        let ops: Vec<Op> = (0..8).map(|i| op_at(i, 5)).collect();
        assert_eq!(
            ops,
            [
                Op::Insert,
                Op::Insert,
                Op::Update,
                Op::Delete,
                Op::Insert,
                Op::Insert,
                Op::Update,
                Op::Delete
            ]
        );
        assert_eq!(op_at(2, 0), Op::Insert, "nothing to update");
        assert_eq!(op_at(3, 0), Op::Insert, "nothing to delete");
    }
}
