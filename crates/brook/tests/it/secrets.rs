//! No secret leaks: a known password is fed through every error path a user can
//! trigger, and every message, `Debug` and `Display` is searched for it. Also: a peer that
//! is not a MongoDB server is named as such.

use std::time::Duration;

use brook::{Client, ClientOptions, redact_uri};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SECRET: &str = "Pw-S3cret-9f2";

/// Fails if `text` holds the password, raw or percent-encoded.
fn assert_clean(what: &str, text: &str) {
    assert!(
        !text.contains(SECRET) && !text.contains("Pw%2DS3cret"),
        "{what} leaks the password: {text}"
    );
}

fn check_error(what: &str, err: &brook::Error) {
    assert_clean(what, &err.to_string());
    assert_clean(what, &format!("{err:?}"));
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        assert_clean(what, &s.to_string());
        source = s.source();
    }
}

/// A listener that answers every connection like an HTTP server.
async fn http_peer() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    address
}

/// A port nothing listens on.
async fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    drop(listener);
    address
}

#[tokio::test]
async fn parse_errors_never_show_the_password() {
    for uri in [
        format!("mongodb://u:{SECRET}@h:0/"),
        format!("mongodb://u:{SECRET}:x@h/"),
        format!("mongodb://u:{SECRET}%zz@h/"),
        format!("mongodb://u:{SECRET}@"),
        format!("mongodb://u:{SECRET}@h/?w"),
        format!("mongodb://u:{SECRET}@h/?readPreference=primary&readPreferenceTags=a:b"),
        format!(
            "mongodb://u:{SECRET}@h/?tlsCertificateKeyFilePassword={SECRET}&tls=false&tlsCAFile=x"
        ),
        format!("mongodb+srv://u:{SECRET}@h:27017/"),
        format!("mongodb://u:{SECRET}@a,b/?loadBalanced=true"),
    ] {
        match ClientOptions::parse(&uri) {
            Err(e) => check_error(&uri, &e),
            Ok(o) => {
                assert_clean(&uri, &format!("{o:?}"));
                for w in &o.warnings {
                    assert_clean(&uri, &w.to_string());
                }
            }
        }
    }
}

#[tokio::test]
async fn connect_errors_never_show_the_password() {
    let refused = closed_port().await;
    let http = http_peer().await;
    for uri in [
        format!("mongodb://u:{SECRET}@{refused}/?serverSelectionTimeoutMS=300"),
        format!("mongodb://u:{SECRET}@{http}/?serverSelectionTimeoutMS=300"),
        format!(
            "mongodb://u:{SECRET}@{refused}/?serverSelectionTimeoutMS=300\
             &tlsCertificateKeyFilePassword={SECRET}&tls=true"
        ),
        format!("mongodb://u:{SECRET}@{refused}/?serverSelectionTimeoutMS=300&foo=bar"),
    ] {
        let options = ClientOptions::parse(&uri).expect("parses");
        assert_clean("options Debug", &format!("{options:?}"));
        let err = tokio::time::timeout(Duration::from_secs(10), Client::with_options(options))
            .await
            .expect("bounded")
            .expect_err("cannot connect");
        check_error(&redact_uri(&uri), &err);
    }
    assert_clean("redacted", &redact_uri(&format!("mongodb://u:{SECRET}@h/")));
}

#[tokio::test]
async fn a_peer_that_is_not_mongodb_is_named_as_such() {
    let http = http_peer().await;
    let err = Client::connect(&format!(
        "mongodb://{http}/?serverSelectionTimeoutMS=500&directConnection=true"
    ))
    .await
    .expect_err("not MongoDB");
    let text = err.to_string();
    assert!(text.contains("not a MongoDB server"), "{text}");
    assert!(text.contains("HTTP"), "{text}");
    assert!(!text.contains("1347703880"), "{text}");
}

/// Every `tracing` event and span field brook emits, as text.
#[derive(Clone, Default)]
pub(crate) struct Captured(pub(crate) std::sync::Arc<std::sync::Mutex<Vec<String>>>);

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
}

impl tracing::Subscriber for Captured {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }

    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut line = String::from(span.metadata().name());
        span.record(&mut Fields(&mut line));
        self.0.lock().unwrap().push(line);
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut line = String::new();
        values.record(&mut Fields(&mut line));
        self.0.lock().unwrap().push(line);
    }

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = String::from(event.metadata().target());
        event.record(&mut Fields(&mut line));
        self.0.lock().unwrap().push(line);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// With every `tracing` event captured (this test's runtime is single-threaded, so the
/// thread's default subscriber sees brook's tasks too): a failed authentication and
/// connections refused with a password in the URI log no password.
#[tokio::test]
async fn no_log_line_shows_the_password() {
    // With one dispatcher in the process, tracing-core caches "never" for a callsite
    // first hit on a thread without a subscriber (another test's, under `cargo test`): a
    // second dispatcher makes it ask this thread's subscriber.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let captured = Captured::default();
    let _guard = tracing::subscriber::set_default(captured.clone());
    let fake = brook_testkit::FakeServer::start(
        brook_testkit::ServerConfig::replica_set("rs0").with_auth(
            brook_testkit::AuthConfig::new().user(
                "admin",
                "app",
                "the-right-one",
                &["SCRAM-SHA-256"],
            ),
        ),
    )
    .await
    .expect("starts");
    let client = Client::connect(&format!(
        "mongodb://app:{SECRET}@{}/?serverSelectionTimeoutMS=2000&heartbeatFrequencyMS=500",
        fake.host_port()
    ))
    .await
    .expect("monitors do not authenticate");
    let err = client
        .database("app")
        .run_command(bson::doc! { "ping": 1 })
        .await
        .expect_err("wrong password");
    assert!(err.is_auth(), "{err}");
    check_error("failed auth", &err);
    client.shutdown().await;
    let refused = closed_port().await;
    let _ = Client::connect(&format!(
        "mongodb://app:{SECRET}@{refused}/?serverSelectionTimeoutMS=300"
    ))
    .await
    .expect_err("refused");
    let lines = captured.0.lock().unwrap().clone();
    assert!(lines.len() > 10, "brook logged: {lines:?}");
    for line in &lines {
        assert_clean("a log line", line);
    }
}
