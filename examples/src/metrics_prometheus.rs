//! brook's metrics (cargo feature `metrics`) in the Prometheus text format, with command
//! monitoring events on the side.
//!
//! ```text
//! cargo run -p brook-examples --bin metrics-prometheus
//! MONGODB_URI=mongodb://localhost:27017 cargo run -p brook-examples --bin metrics-prometheus
//! ```
//!
//! Without a URI it starts the testkit's fake server (a replica set member with a
//! scripted cursor and change stream) in the process, so it runs anywhere. An application
//! would serve `handle.render()` on its `/metrics` endpoint (or enable the exporter's
//! `http-listener` feature); [`run`] returns the text, which the program prints.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use brook::monitoring::{CommandEvent, EventHandler};
use brook::{Client, ClientOptions};
use brook_testkit::shapes::{self, BatchKind};
use brook_testkit::{Action, FakeServer, ServerConfig};
use bson::{Document, Timestamp, doc};
use metrics_exporter_prometheus::PrometheusBuilder;

const NS: &str = "shop.orders";

/// The error of the example.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Installs a Prometheus recorder as the process's metrics recorder (once per process),
/// runs a find and (on the fake server) a change stream against `uri` (`None`: a fake
/// server in this process), and returns what a scrape of the process would read. Fails if
/// the command, pool or change-stream metrics are missing from it.
pub async fn run(uri: Option<String>) -> Result<String, BoxError> {
    // The exporter is the process's metrics recorder: brook records into it.
    let handle = PrometheusBuilder::new().install_recorder()?;
    brook::metrics::describe();

    let live = uri;
    let fake = match live {
        Some(_) => None,
        None => Some(scripted_server().await?),
    };
    let uri = match (&live, &fake) {
        (Some(uri), _) => uri.clone(),
        (None, Some(fake)) => format!(
            "mongodb://{}/?serverSelectionTimeoutMS=5000",
            fake.host_port()
        ),
        (None, None) => unreachable!("one or the other"),
    };

    // Command monitoring events next to the metrics: count them, print the failures.
    let commands = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&commands);
    let mut options = ClientOptions::parse(&uri)?;
    options.command_event_handler =
        Some(EventHandler::new(move |event: &CommandEvent| match event {
            CommandEvent::Started(_) => {
                counted.fetch_add(1, Ordering::Relaxed);
            }
            CommandEvent::Failed(failed) => eprintln!(
                "{} failed after {:?}: {}",
                failed.command_name, failed.duration, failed.failure
            ),
            _ => {}
        }));
    let client = Client::with_options(options).await?;
    let orders = client.database("shop").collection::<Document>("orders");

    // A find and its getMores.
    let mut cursor = orders.find(doc! {}).batch_size(2).await?;
    let mut read = 0;
    while cursor.try_next().await?.is_some() {
        read += 1;
    }
    println!("read {read} orders");

    // A change stream (the fake server's script: two events in one batch).
    if fake.is_some() {
        let mut stream = orders.watch().await?;
        for _ in 0..2 {
            if let Some(event) = tokio::time::timeout(Duration::from_secs(5), stream.next()).await?
            {
                println!("change: {:?}", event?.operation_type);
            }
        }
    }
    client.shutdown().await;
    println!("{} commands sent\n", commands.load(Ordering::Relaxed));

    // What a Prometheus scrape of this process would read.
    let text = handle.render();
    let mut expected = vec![
        brook::metrics::COMMAND_DURATION,
        brook::metrics::POOL_CHECKOUTS,
        brook::metrics::POOL_CHECKOUT_WAIT,
    ];
    if fake.is_some() {
        expected.push(brook::metrics::CHANGE_STREAM_EVENTS);
    }
    for name in expected {
        if !text.contains(name) {
            return Err(format!("{name} was not recorded").into());
        }
    }
    Ok(text)
}

/// A fake replica set member: a find of three orders (two batches), and a change stream
/// with two insert events written a second ago.
async fn scripted_server() -> Result<FakeServer, BoxError> {
    let fake = FakeServer::start(ServerConfig::replica_set("rs0")).await?;
    let order = |i: i32| doc! { "_id": i, "total": 10 * i };
    fake.push_action(
        "find",
        Action::cursor(
            7,
            NS,
            BatchKind::First,
            vec![order(1), order(2)],
            None,
            None,
        ),
    );
    fake.push_action(
        "getMore",
        Action::cursor(0, NS, BatchKind::Next, vec![order(3)], None, None),
    );
    let ts = |i| Timestamp {
        time: 1_700_000_000,
        increment: i,
    };
    let written = bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() - 1000);
    let event = |i: u32| {
        let mut e = shapes::insert_event(ts(i), NS, order(i32::try_from(i).unwrap_or(0)));
        e.insert("wallTime", written);
        e
    };
    fake.push_action(
        "aggregate",
        Action::cursor(
            8,
            NS,
            BatchKind::First,
            vec![],
            Some(shapes::post_batch_resume_token(ts(1))),
            None,
        ),
    );
    fake.push_action(
        "getMore",
        Action::cursor(8, NS, BatchKind::Next, vec![event(2), event(3)], None, None),
    );
    Ok(fake)
}
