//! Authentication end to end: brook against the testkit's SCRAM/PLAIN/X.509 server side,
//! through real sockets.

use brook::{Client, Error};
use brook_testkit::{AuthConfig, FakeServer, ReceivedCommand, ServerConfig};
use bson::{Document, doc};

const PASSWORD: &str = "pencil-Secret-42";

async fn server(auth: AuthConfig) -> FakeServer {
    FakeServer::start(ServerConfig::replica_set("rs0").with_auth(auth))
        .await
        .expect("fake server starts")
}

fn uri(server: &FakeServer, userinfo: &str, query: &str) -> String {
    format!(
        "mongodb://{userinfo}@{}/?serverSelectionTimeoutMS=3000&connectTimeoutMS=3000{query}",
        server.host_port()
    )
}

/// Connects and runs an insert, which the server refuses unless authenticated.
async fn insert(uri: &str) -> Result<(), Error> {
    let client = Client::connect(uri).await?;
    client
        .database("app")
        .collection::<Document>("c")
        .insert_one(doc! { "a": 1 })
        .await
        .map(drop)
}

fn authenticated(server: &FakeServer) -> usize {
    server
        .config()
        .auth
        .as_ref()
        .map_or(0, |a| a.authenticated_connections())
}

fn named(server: &FakeServer, name: &str) -> Vec<ReceivedCommand> {
    server.commands_named(name)
}

/// Hellos that carried a speculative authentication, and their mechanism.
fn speculative_mechanisms(server: &FakeServer) -> Vec<String> {
    named(server, "hello")
        .into_iter()
        .filter_map(|c| {
            c.body
                .get_document("speculativeAuthenticate")
                .ok()
                .map(|s| s.get_str("mechanism").unwrap_or("").to_owned())
        })
        .collect()
}

/// The error shows mechanism and user, and never the password (Display and Debug).
fn assert_auth_error(err: &Error, mechanism: &str, user: &str, password: &str) {
    let shown = format!("{err} | {err:?}");
    assert!(shown.contains("authentication"), "{shown}");
    assert!(shown.contains(mechanism), "{shown}");
    assert!(shown.contains(user), "{shown}");
    assert!(!shown.contains(password), "password leaked: {shown}");
    assert!(
        !err.is_network(),
        "not retryable as a network error: {shown}"
    );
    assert!(!err.is_retryable_read(), "{shown}");
    assert!(err.is_auth(), "{shown}");
}

#[tokio::test]
async fn a_failed_authentication_marks_the_server_unknown() {
    use brook::monitoring::{DescriptionEvent, EventHandler, SdamEvent, ServerType};
    use std::sync::{Arc, Mutex};

    let fake = server(AuthConfig::new().user("admin", "user", PASSWORD, &["SCRAM-SHA-256"])).await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let mut options =
        brook::ClientOptions::parse(&uri(&fake, "user:not-the-Pencil-77", "")).unwrap();
    options.sdam_event_handler = Some(EventHandler::new(move |e: &SdamEvent| {
        sink.lock().unwrap().push(e.clone());
    }));
    let client = Client::with_options(options).await.unwrap();
    let err = client
        .database("app")
        .collection::<Document>("c")
        .insert_one(doc! { "a": 1 })
        .await
        .unwrap_err();
    assert!(err.is_auth(), "{err}");
    let went_unknown = events.lock().unwrap().iter().any(|e| {
        matches!(e, SdamEvent::Description(DescriptionEvent::ServerDescriptionChanged { new, .. })
            if new.server_type == ServerType::Unknown)
    });
    assert!(
        went_unknown,
        "SDAM: the server is marked Unknown after a failed authentication"
    );
}

#[tokio::test]
async fn scram_sha_256_speculative() {
    let fake = server(AuthConfig::new().user("admin", "user", PASSWORD, &["SCRAM-SHA-256"])).await;
    insert(&uri(
        &fake,
        &format!("user:{PASSWORD}"),
        "&authMechanism=SCRAM-SHA-256",
    ))
    .await
    .unwrap();
    assert!(authenticated(&fake) >= 1);
    assert!(
        speculative_mechanisms(&fake)
            .iter()
            .all(|m| m == "SCRAM-SHA-256")
    );
    // Speculation answered: no saslStart, one saslContinue per authenticated connection.
    assert!(named(&fake, "saslStart").is_empty());
    assert_eq!(named(&fake, "saslContinue").len(), authenticated(&fake));
    for c in named(&fake, "saslContinue") {
        assert_eq!(c.db, "admin");
    }
    // A mechanism was given: no saslSupportedMechs asked.
    assert!(
        named(&fake, "hello")
            .iter()
            .all(|h| !h.body.contains_key("saslSupportedMechs"))
    );
}

#[tokio::test]
async fn scram_sha_1_non_speculative() {
    let mut auth = AuthConfig::new().user("admin", "user", PASSWORD, &["SCRAM-SHA-1"]);
    auth.speculative = false;
    let fake = server(auth).await;
    insert(&uri(
        &fake,
        &format!("user:{PASSWORD}"),
        "&authMechanism=SCRAM-SHA-1",
    ))
    .await
    .unwrap();
    let starts = named(&fake, "saslStart");
    assert!(!starts.is_empty());
    for s in &starts {
        assert_eq!(s.body.get_str("mechanism").unwrap(), "SCRAM-SHA-1");
        assert_eq!(
            s.body.get_document("options").unwrap(),
            &doc! { "skipEmptyExchange": true }
        );
    }
    assert_eq!(named(&fake, "saslContinue").len(), starts.len());
    assert!(authenticated(&fake) >= 1);
}

#[tokio::test]
async fn server_without_skip_empty_exchange_gets_the_empty_round() {
    let mut auth = AuthConfig::new().user("admin", "user", PASSWORD, &["SCRAM-SHA-256"]);
    auth.skip_empty_exchange = false;
    let fake = server(auth).await;
    insert(&uri(
        &fake,
        &format!("user:{PASSWORD}"),
        "&authMechanism=SCRAM-SHA-256",
    ))
    .await
    .unwrap();
    // server-first came in the hello; then the proof and the empty round.
    assert_eq!(named(&fake, "saslContinue").len(), 2 * authenticated(&fake));
}

#[tokio::test]
async fn negotiation_picks_sha_256_when_offered() {
    let fake = server(AuthConfig::new().user(
        "admin",
        "user",
        PASSWORD,
        &["SCRAM-SHA-1", "SCRAM-SHA-256"],
    ))
    .await;
    insert(&uri(&fake, &format!("user:{PASSWORD}"), ""))
        .await
        .unwrap();
    let hellos = named(&fake, "hello");
    let asked: Vec<_> = hellos
        .iter()
        .filter_map(|h| h.body.get_str("saslSupportedMechs").ok())
        .collect();
    assert!(!asked.is_empty());
    assert!(asked.iter().all(|a| *a == "admin.user"), "{asked:?}");
    assert!(
        speculative_mechanisms(&fake)
            .iter()
            .all(|m| m == "SCRAM-SHA-256")
    );
    assert!(authenticated(&fake) >= 1);
}

#[tokio::test]
async fn negotiation_falls_back_to_sha_1() {
    // The user has SHA-1 only: the SHA-256 speculation fails, saslSupportedMechs says
    // SCRAM-SHA-1, and the driver starts over with it.
    let fake = server(AuthConfig::new().user("admin", "user", PASSWORD, &["SCRAM-SHA-1"])).await;
    insert(&uri(&fake, &format!("user:{PASSWORD}"), ""))
        .await
        .unwrap();
    let starts = named(&fake, "saslStart");
    assert!(!starts.is_empty());
    assert!(
        starts
            .iter()
            .all(|s| s.body.get_str("mechanism").ok() == Some("SCRAM-SHA-1"))
    );
    assert!(authenticated(&fake) >= 1);
}

#[tokio::test]
async fn wrong_password_is_refused_without_leaking_it() {
    let fake = server(AuthConfig::new().user("admin", "user", PASSWORD, &["SCRAM-SHA-256"])).await;
    let wrong = "not-the-Pencil-77";
    let err = insert(&uri(&fake, &format!("user:{wrong}"), ""))
        .await
        .unwrap_err();
    assert_auth_error(&err, "SCRAM-SHA-256", "user", wrong);
    assert!(err.to_string().contains("Authentication failed"), "{err}");
    assert_eq!(authenticated(&fake), 0);
}

#[tokio::test]
async fn wrong_user_is_refused() {
    let fake = server(AuthConfig::new().user("admin", "user", PASSWORD, &["SCRAM-SHA-256"])).await;
    let err = insert(&uri(
        &fake,
        &format!("someone:{PASSWORD}"),
        "&authMechanism=SCRAM-SHA-256",
    ))
    .await
    .unwrap_err();
    assert_auth_error(&err, "SCRAM-SHA-256", "someone", PASSWORD);
    assert_eq!(authenticated(&fake), 0);
}

#[tokio::test]
async fn wrong_user_source_is_refused() {
    let fake = server(AuthConfig::new().user("admin", "user", PASSWORD, &["SCRAM-SHA-256"])).await;
    let err = insert(&uri(
        &fake,
        &format!("user:{PASSWORD}"),
        "&authMechanism=SCRAM-SHA-256&authSource=other",
    ))
    .await
    .unwrap_err();
    assert_auth_error(&err, "SCRAM-SHA-256", "user", PASSWORD);
}

#[tokio::test]
async fn a_server_that_cannot_prove_the_password_is_refused() {
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-1"] {
        let mut auth = AuthConfig::new().user("admin", "user", PASSWORD, &[mechanism]);
        auth.wrong_server_signature = true;
        let fake = server(auth).await;
        let err = insert(&uri(
            &fake,
            &format!("user:{PASSWORD}"),
            &format!("&authMechanism={mechanism}"),
        ))
        .await
        .unwrap_err();
        assert_auth_error(&err, mechanism, "user", PASSWORD);
        assert!(err.to_string().contains("prove"), "{err}");
        // The server thinks the client authenticated; the client refused the server and
        // sent nothing else.
        assert!(named(&fake, "insert").is_empty());
    }
}

#[tokio::test]
async fn escaped_user_and_sasl_prepped_password() {
    // The user name needs escaping in the URI (`@`, `:`, `%`, `,` and `=` inside) and in
    // SCRAM (`,` and `=`); the password is sent with a soft hyphen SASLprep removes.
    let user = "u@s:e%r,n=1";
    let fake = server(AuthConfig::new().user("admin", user, "IX", &["SCRAM-SHA-256"])).await;
    insert(&uri(
        &fake,
        "u%40s%3Ae%25r%2Cn%3D1:I%C2%ADX",
        "&authMechanism=SCRAM-SHA-256",
    ))
    .await
    .unwrap();
    assert!(authenticated(&fake) >= 1);
    // The spec's prose users: "Ⅸ" with password "Ⅳ", given as "IV" and "I\u{AD}V".
    let fake =
        server(AuthConfig::new().user("admin", "\u{2168}", "\u{2163}", &["SCRAM-SHA-256"])).await;
    for pw in ["IV", "I%C2%ADV"] {
        insert(&uri(&fake, &format!("%E2%85%A8:{pw}"), ""))
            .await
            .unwrap();
    }
    // Without SASLprep "I\u{AD}X" would not be "IX": a different password is refused.
    let fake = server(AuthConfig::new().user("admin", "IX", "IX", &["SCRAM-SHA-256"])).await;
    let err = insert(&uri(&fake, "IX:I%C2%ADY", "&authMechanism=SCRAM-SHA-256"))
        .await
        .unwrap_err();
    assert_auth_error(&err, "SCRAM-SHA-256", "IX", "I\u{AD}Y");
}

#[tokio::test]
async fn non_ascii_password_with_both_mechanisms() {
    let pw = "pässwörd-日本";
    let encoded = "p%C3%A4ssw%C3%B6rd-%E6%97%A5%E6%9C%AC";
    for mechanism in ["SCRAM-SHA-1", "SCRAM-SHA-256"] {
        let fake = server(AuthConfig::new().user("admin", "user", pw, &[mechanism])).await;
        insert(&uri(
            &fake,
            &format!("user:{encoded}"),
            &format!("&authMechanism={mechanism}"),
        ))
        .await
        .unwrap_or_else(|e| panic!("{mechanism}: {e}"));
        assert!(authenticated(&fake) >= 1, "{mechanism}");
    }
}

#[tokio::test]
async fn plain_against_external() {
    let fake = server(AuthConfig::new().user("$external", "ldapuser", PASSWORD, &["PLAIN"])).await;
    insert(&uri(
        &fake,
        &format!("ldapuser:{PASSWORD}"),
        "&authMechanism=PLAIN",
    ))
    .await
    .unwrap();
    let starts = named(&fake, "saslStart");
    assert!(!starts.is_empty());
    for s in &starts {
        assert_eq!(s.db, "$external");
        assert_eq!(s.body.get_str("mechanism").unwrap(), "PLAIN");
    }
    // PLAIN does not speculate.
    assert!(speculative_mechanisms(&fake).is_empty());
    let err = insert(&uri(&fake, "ldapuser:wrong-one-99", "&authMechanism=PLAIN"))
        .await
        .unwrap_err();
    assert_auth_error(&err, "PLAIN", "ldapuser", "wrong-one-99");
}

#[tokio::test]
async fn x509_authenticate_command() {
    // Without TLS the testkit cannot read a certificate: this checks the command the
    // driver sends (speculatively in the hello, and as `authenticate` when the server
    // ignores the speculation).
    let subject = "CN=client,OU=eng,O=brook";
    for speculative in [true, false] {
        let mut auth = AuthConfig::new().user("$external", subject, "", &["MONGODB-X509"]);
        auth.speculative = speculative;
        let fake = server(auth).await;
        insert(&uri(
            &fake,
            "CN%3Dclient%2COU%3Deng%2CO%3Dbrook",
            "&authMechanism=MONGODB-X509",
        ))
        .await
        .unwrap();
        assert!(authenticated(&fake) >= 1);
        let expected = doc! { "authenticate": 1, "mechanism": "MONGODB-X509", "user": subject, "db": "$external" };
        let in_hello: Vec<Document> = named(&fake, "hello")
            .into_iter()
            .filter_map(|h| h.body.get_document("speculativeAuthenticate").ok().cloned())
            .collect();
        assert!(!in_hello.is_empty());
        assert!(in_hello.iter().all(|d| *d == expected), "{in_hello:?}");
        let commands = named(&fake, "authenticate");
        assert_eq!(commands.is_empty(), speculative);
        for c in commands {
            assert_eq!(c.db, "$external");
            assert_eq!(c.body.get_str("user").unwrap(), subject);
        }
    }
}

#[tokio::test]
async fn unsupported_mechanisms_are_refused_at_connect() {
    for (query, name) in [
        ("mongodb://u@127.0.0.1:9/?authMechanism=GSSAPI", "GSSAPI"),
        (
            "mongodb://127.0.0.1:9/?authMechanism=MONGODB-AWS",
            "MONGODB-AWS",
        ),
        (
            "mongodb://127.0.0.1:9/?authMechanism=MONGODB-OIDC&authMechanismProperties=ENVIRONMENT:k8s",
            "MONGODB-OIDC",
        ),
    ] {
        let err = Client::connect(query).await.unwrap_err();
        assert!(err.is_unsupported(), "{err}");
        assert!(err.to_string().contains(name), "{err}");
        assert!(
            err.to_string().contains("not supported")
                || err.to_string().contains("unsupported")
                || err.to_string().contains("does not support"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn unauthenticated_clients_are_refused_and_monitors_never_authenticate() {
    let fake = server(AuthConfig::new().user("admin", "user", PASSWORD, &["SCRAM-SHA-256"])).await;
    // The testkit enforces authentication: without credentials the insert is refused.
    let err = insert(&format!(
        "mongodb://{}/?serverSelectionTimeoutMS=3000",
        fake.host_port()
    ))
    .await
    .unwrap_err();
    assert!(err.to_string().contains("requires authentication"), "{err}");
    fake.clear_commands();
    insert(&uri(&fake, &format!("user:{PASSWORD}"), ""))
        .await
        .unwrap();
    let hellos = named(&fake, "hello");
    let (authenticating, plain): (Vec<_>, Vec<_>) = hellos
        .iter()
        .partition(|h| h.body.contains_key("speculativeAuthenticate"));
    // The monitor's hellos carry neither speculativeAuthenticate nor saslSupportedMechs.
    assert!(!plain.is_empty(), "no monitoring hello seen");
    assert!(
        plain
            .iter()
            .all(|h| !h.body.contains_key("saslSupportedMechs"))
    );
    // Every pool connection authenticated; no monitoring connection did.
    let pool_connections: std::collections::BTreeSet<u64> =
        authenticating.iter().map(|h| h.connection_id).collect();
    let auth = fake.config().auth.clone().unwrap();
    for h in &plain {
        assert_eq!(auth.authenticated_as(h.connection_id), None);
    }
    for id in pool_connections {
        assert_eq!(auth.authenticated_as(id).as_deref(), Some("admin.user"));
    }
}
