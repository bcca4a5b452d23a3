//! A cache invalidator: keeps an in-process cache of products in step with the
//! `shop.products` collection.
//!
//! - typed events: the stream yields [`ChangeStreamEvent<Product>`], so a replaced or
//!   updated (with `updateLookup`) product arrives as a `Product`;
//! - a `$match` pipeline ([`pipeline`]): the server sends only updates, replaces and
//!   deletes, the events that make a cache entry stale;
//! - a checkpoint: after each event is applied to the cache its token is saved with
//!   [`FileCheckpoint`] (written to a temporary file, fsynced, renamed over the old one),
//!   and the next run starts after it. Saving *after* applying gives at-least-once: a
//!   crash between the two applies that event again on restart, which is harmless here
//!   (applying an event twice leaves the cache as applying it once).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use brook::checkpoint::{Checkpoint, CheckpointStore, FileCheckpoint};
use brook::{ChangeStreamEvent, Client, FullDocument, OperationType};
use bson::{Document, doc};
use serde::{Deserialize, Serialize};

use crate::BoxError;

/// The database watched.
pub const DB: &str = "shop";
/// The collection watched.
pub const COLL: &str = "products";

/// A product, as stored in `shop.products` and as the cache keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    /// The document's `_id`.
    #[serde(rename = "_id")]
    pub id: i32,
    /// The product's name.
    pub name: String,
    /// Its price, in cents.
    pub price_cents: i64,
}

/// The cache: products by `_id`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Cache {
    entries: HashMap<i32, Product>,
}

impl Cache {
    /// Puts (or replaces) `product`.
    pub fn put(&mut self, product: Product) {
        self.entries.insert(product.id, product);
    }

    /// The cached product `id`, if any.
    pub fn get(&self, id: i32) -> Option<&Product> {
        self.entries.get(&id)
    }

    /// Drops product `id`: the next read loads it from the database.
    pub fn invalidate(&mut self, id: i32) {
        self.entries.remove(&id);
    }

    /// How many products are cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// One change applied to the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// What happened to the document.
    pub operation: OperationType,
    /// The product's `_id`.
    pub id: i32,
}

/// The stream's pipeline: only the events that make a cached product stale.
pub fn pipeline() -> Vec<Document> {
    vec![doc! { "$match": { "operationType": { "$in": ["update", "replace", "delete"] } } }]
}

/// Follows `shop.products` on `uri` from the checkpoint in `checkpoint` (from now if the
/// file does not exist yet), applies `events` events to `cache`, saving the checkpoint
/// after each, and returns what it applied.
pub async fn run(
    uri: &str,
    checkpoint: &Path,
    events: usize,
    cache: &mut Cache,
) -> Result<Vec<Applied>, BoxError> {
    let client = Client::connect(uri).await?;
    let products = client.database(DB).collection::<Product>(COLL);

    let mut store = FileCheckpoint::new(checkpoint)?;
    let watch = products
        .watch()
        .pipeline(pipeline())
        .full_document(FullDocument::UpdateLookup)
        .max_await_time(Duration::from_millis(500));
    let watch = match store.load().await? {
        Some(saved) => saved.apply_to(watch),
        None => watch,
    };
    let mut stream = watch.await?;

    let mut applied = Vec::with_capacity(events);
    while applied.len() < events {
        let event: ChangeStreamEvent<Product> = match stream.next().await {
            Some(event) => event?,
            None => return Err("the stream ended before enough events came".into()),
        };
        if event.operation_type == OperationType::Invalidate {
            // The collection was dropped or renamed: everything cached is stale, and the
            // next run starts after this event.
            cache.entries.clear();
            store
                .save(&Checkpoint::start_after(event.id.clone()))
                .await?;
            break;
        }
        let id = document_id(&event)?;
        match (&event.operation_type, event.full_document) {
            // The document as it is now (a replace, or an update looked up): refresh.
            (OperationType::Update | OperationType::Replace, Some(product)) => cache.put(product),
            // Deleted, or updated then deleted before the lookup: drop the entry.
            _ => cache.invalidate(id),
        }
        // The event is applied: only now is its token the place to continue from.
        store.save(&Checkpoint::resume_after(event.id)).await?;
        applied.push(Applied {
            operation: event.operation_type,
            id,
        });
    }
    stream.close().await?;
    client.shutdown().await;
    Ok(applied)
}

/// The `_id` in the event's `documentKey`.
fn document_id(event: &ChangeStreamEvent<Product>) -> Result<i32, BoxError> {
    let key = event
        .document_key
        .as_ref()
        .ok_or("a document event without documentKey")?;
    Ok(key.get_i32("_id")?)
}
