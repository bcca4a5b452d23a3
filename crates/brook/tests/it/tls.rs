//! TLS end to end: `brook::Client` against the testkit's fake server behind TLS, with
//! certificates made in the test (rcgen) and written to a temporary directory.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use brook::Client;
use brook_testkit::ProtocolVersion;
use brook_testkit::{FakeServer, Identity, Leaf, ServerConfig, TestCa, TlsServer};
use bson::doc;

/// A directory of PEM files for one test, removed on drop.
struct PemDir(PathBuf);

impl PemDir {
    fn new() -> PemDir {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "brook-tls-it-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        PemDir(dir)
    }

    /// Writes `contents` to `name` and returns the path, ready for a URI.
    fn write(&self, name: &str, contents: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

impl Drop for PemDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A standalone fake server behind `tls`.
async fn tls_server(tls: &Arc<TlsServer>) -> FakeServer {
    let mut config = ServerConfig::standalone();
    config.tls = Some(Arc::clone(tls));
    FakeServer::start(config).await.expect("fake server starts")
}

/// Connects to `host` (on the server's port) with `query` (options after `?`) and pings.
async fn ping(host: &str, server: &FakeServer, query: &str) -> Result<(), brook::Error> {
    let uri = format!(
        "mongodb://{host}:{}/?directConnection=true&serverSelectionTimeoutMS=2000&{query}",
        server.addr().port()
    );
    let client = Client::connect(&uri).await?;
    client
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await?;
    client.shutdown().await;
    Ok(())
}

/// A CA, a server certificate it issued for `names`, and the CA file written out.
struct Pki {
    ca: TestCa,
    dir: PemDir,
    ca_file: String,
}

fn pki() -> Pki {
    let ca = TestCa::new("brook test CA");
    let dir = PemDir::new();
    let ca_file = dir.write("ca.pem", &ca.cert_pem());
    Pki { ca, dir, ca_file }
}

fn assert_mentions(err: &brook::Error, words: &[&str]) {
    let shown = format!("{err} / {err:?}");
    for word in words {
        assert!(shown.contains(word), "{word:?} not in: {shown}");
    }
}

#[tokio::test]
async fn a_good_chain_is_trusted_through_the_ca_file_and_sni_names_the_host() {
    let pki = pki();
    let tls = TlsServer::new(&pki.ca.issue(&Leaf::server(&["localhost"])));
    let server = tls_server(&tls).await;
    ping(
        "localhost",
        &server,
        &format!("tls=true&tlsCAFile={}", pki.ca_file),
    )
    .await
    .unwrap();
    let handshakes = tls.handshakes();
    assert!(!handshakes.is_empty());
    for h in &handshakes {
        assert_eq!(h.error, None);
        assert_eq!(h.sni.as_deref(), Some("localhost"));
        assert_eq!(h.version, Some(ProtocolVersion::TLSv1_3));
        assert!(!h.client_certificate);
    }
}

#[tokio::test]
async fn an_ip_address_is_checked_against_the_certificate_and_sends_no_sni() {
    let pki = pki();
    let tls = TlsServer::new(&pki.ca.issue(&Leaf::server(&["127.0.0.1"])));
    let server = tls_server(&tls).await;
    // tlsCAFile alone turns TLS on.
    ping("127.0.0.1", &server, &format!("tlsCAFile={}", pki.ca_file))
        .await
        .unwrap();
    assert!(
        tls.handshakes()
            .iter()
            .all(|h| h.sni.is_none() && h.error.is_none())
    );
}

#[tokio::test]
async fn an_unknown_issuer_is_refused() {
    let pki = pki();
    let stranger = TestCa::new("someone else");
    let tls = TlsServer::new(&stranger.issue(&Leaf::server(&["localhost"])));
    let server = tls_server(&tls).await;
    let err = ping(
        "localhost",
        &server,
        &format!("tls=true&tlsCAFile={}", pki.ca_file),
    )
    .await
    .unwrap_err();
    assert_mentions(&err, &["UnknownIssuer"]);
    assert!(tls.handshakes().iter().all(|h| h.error.is_some()));
}

#[tokio::test]
async fn without_a_ca_file_a_private_ca_is_not_trusted() {
    // The default roots (the operating system's) do not hold the test's CA.
    let pki = pki();
    let tls = TlsServer::new(&pki.ca.issue(&Leaf::server(&["localhost"])));
    let server = tls_server(&tls).await;
    let err = ping("localhost", &server, "tls=true").await.unwrap_err();
    // Where the machine has no CA store at all, the error says that instead.
    let shown = format!("{err} / {err:?}");
    assert!(
        shown.contains("UnknownIssuer") || shown.contains("no trusted root certificate"),
        "{shown}"
    );
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let pki = pki();
    let tls = TlsServer::new(&pki.ca.issue(&Leaf::server(&["localhost"]).expired()));
    let server = tls_server(&tls).await;
    let err = ping(
        "localhost",
        &server,
        &format!("tls=true&tlsCAFile={}", pki.ca_file),
    )
    .await
    .unwrap_err();
    assert_mentions(&err, &["certificate expired"]);
}

#[tokio::test]
async fn a_wrong_host_name_is_refused_unless_invalid_host_names_are_allowed() {
    let pki = pki();
    let tls = TlsServer::new(&pki.ca.issue(&Leaf::server(&["db.example.com"])));
    let server = tls_server(&tls).await;
    let trust = format!("tls=true&tlsCAFile={}", pki.ca_file);
    let err = ping("localhost", &server, &trust).await.unwrap_err();
    assert_mentions(&err, &["certificate not valid for name \"localhost\""]);
    ping(
        "localhost",
        &server,
        &format!("{trust}&tlsAllowInvalidHostnames=true"),
    )
    .await
    .unwrap();
    ping("localhost", &server, &format!("{trust}&tlsInsecure=true"))
        .await
        .unwrap();
}

#[tokio::test]
async fn allowing_invalid_host_names_still_requires_a_trusted_chain() {
    let pki = pki();
    let stranger = TestCa::new("someone else");
    let tls = TlsServer::new(&stranger.issue(&Leaf::server(&["db.example.com"])));
    let server = tls_server(&tls).await;
    let err = ping(
        "localhost",
        &server,
        &format!(
            "tls=true&tlsCAFile={}&tlsAllowInvalidHostnames=true",
            pki.ca_file
        ),
    )
    .await
    .unwrap_err();
    assert_mentions(&err, &["UnknownIssuer"]);
}

#[tokio::test]
async fn tls_insecure_accepts_any_certificate() {
    let tls = TlsServer::new(&Identity::self_signed(&["somewhere.else"]));
    let server = tls_server(&tls).await;
    ping("localhost", &server, "tls=true&tlsInsecure=true")
        .await
        .unwrap();
    ping(
        "localhost",
        &server,
        "tls=true&tlsAllowInvalidCertificates=true",
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_client_certificate_the_server_requires_is_presented_from_the_key_file() {
    let pki = pki();
    let tls = TlsServer::builder(&pki.ca.issue(&Leaf::server(&["localhost"])))
        .require_client_certificate(&pki.ca)
        .build();
    let server = tls_server(&tls).await;
    let trust = format!("tls=true&tlsCAFile={}", pki.ca_file);

    // Without one, the server ends the handshake.
    ping("localhost", &server, &trust).await.unwrap_err();
    let refused = tls.handshakes();
    assert!(!refused.is_empty());
    assert!(refused.iter().all(|h| h.error.is_some()), "{refused:?}");

    let client = pki.ca.issue(&Leaf::client("app-user"));
    let key_file = pki.dir.write("client.pem", &client.pem());
    ping(
        "localhost",
        &server,
        &format!("{trust}&tlsCertificateKeyFile={key_file}"),
    )
    .await
    .unwrap();
    let accepted: Vec<_> = tls.handshakes().into_iter().skip(refused.len()).collect();
    assert!(!accepted.is_empty());
    assert!(
        accepted
            .iter()
            .all(|h| h.client_certificate && h.error.is_none()),
        "{accepted:?}"
    );
}

#[tokio::test]
async fn tls_1_2_only_and_tls_1_3_only_servers_are_both_reached() {
    let pki = pki();
    let identity = pki.ca.issue(&Leaf::server(&["localhost"]));
    let trust = format!("tls=true&tlsCAFile={}", pki.ca_file);
    for (tls, version) in [
        (
            TlsServer::builder(&identity).tls12_only().build(),
            ProtocolVersion::TLSv1_2,
        ),
        (
            TlsServer::builder(&identity).tls13_only().build(),
            ProtocolVersion::TLSv1_3,
        ),
    ] {
        let server = tls_server(&tls).await;
        ping("localhost", &server, &trust).await.unwrap();
        let handshakes = tls.handshakes();
        assert!(!handshakes.is_empty());
        assert!(
            handshakes.iter().all(|h| h.version == Some(version)),
            "{handshakes:?}"
        );
    }
}

const ENCRYPTED_KEY: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----\n\
    MIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQIc2FsdHNhbHQCAggA\n\
    -----END ENCRYPTED PRIVATE KEY-----\n";

#[tokio::test]
async fn an_encrypted_key_file_is_refused_saying_so() {
    let pki = pki();
    let tls = TlsServer::new(&pki.ca.issue(&Leaf::server(&["localhost"])));
    let server = tls_server(&tls).await;
    let client = pki.ca.issue(&Leaf::client("app-user"));
    let key_file = pki.dir.write(
        "encrypted.pem",
        &format!("{}{ENCRYPTED_KEY}", client.cert_pem),
    );
    let err = ping(
        "localhost",
        &server,
        &format!(
            "tls=true&tlsCAFile={}&tlsCertificateKeyFile={key_file}",
            pki.ca_file
        ),
    )
    .await
    .unwrap_err();
    assert_mentions(&err, &["encrypted", "tlsCertificateKeyFilePassword"]);
    // Refused before any handshake.
    assert!(tls.handshakes().is_empty());

    // Giving the password does not help: the option is refused outright.
    let err = Client::connect(&format!(
        "mongodb://localhost:{}/?tls=true&tlsCertificateKeyFile={key_file}\
         &tlsCertificateKeyFilePassword=k3y-pw",
        server.addr().port()
    ))
    .await
    .unwrap_err();
    assert!(err.is_unsupported(), "{err:?}");
    assert_mentions(&err, &["tlsCertificateKeyFilePassword"]);
    assert!(!format!("{err} {err:?}").contains("k3y-pw"));
}

#[tokio::test]
async fn revocation_switches_that_ask_for_no_check_are_accepted() {
    let pki = pki();
    let tls = TlsServer::new(&pki.ca.issue(&Leaf::server(&["localhost"])));
    let server = tls_server(&tls).await;
    let trust = format!("tls=true&tlsCAFile={}", pki.ca_file);
    for switch in [
        "tlsDisableOCSPEndpointCheck",
        "tlsDisableCertificateRevocationCheck",
    ] {
        ping("localhost", &server, &format!("{trust}&{switch}=true"))
            .await
            .unwrap();
        // Asking for a check brook does not make is refused.
        let err = ping("localhost", &server, &format!("{trust}&{switch}=false"))
            .await
            .unwrap_err();
        assert!(err.is_unsupported(), "{err:?}");
        assert_mentions(&err, &[switch]);
    }
}

/// MONGODB-X509 end to end: the client certificate from `tlsCertificateKeyFile` is
/// presented in the TLS handshake (which the server requires), and the `authenticate`
/// command, without a user name (the server takes it from the certificate), opens the
/// connection for an insert the server refuses to unauthenticated connections.
#[tokio::test]
async fn x509_authentication_over_tls_with_the_key_file_certificate() {
    let pki = pki();
    let tls = TlsServer::builder(&pki.ca.issue(&Leaf::server(&["localhost"])))
        .require_client_certificate(&pki.ca)
        .build();
    let auth =
        brook_testkit::AuthConfig::new().user("$external", "CN=app-user", "", &["MONGODB-X509"]);
    let mut config = ServerConfig::replica_set("rs0").with_auth(auth);
    config.tls = Some(Arc::clone(&tls));
    let server = FakeServer::start(config).await.expect("starts");
    let client_cert = pki.ca.issue(&Leaf::client("app-user"));
    let key_file = pki.dir.write("client.pem", &client_cert.pem());
    let uri = format!(
        "mongodb://localhost:{}/?directConnection=true&serverSelectionTimeoutMS=2000\
         &tls=true&tlsCAFile={}&tlsCertificateKeyFile={key_file}&authMechanism=MONGODB-X509",
        server.addr().port(),
        pki.ca_file
    );
    let client = Client::connect(&uri).await.expect("connects");
    client
        .database("app")
        .collection::<bson::Document>("c")
        .insert_one(doc! { "a": 1 })
        .await
        .expect("authenticated by certificate");
    client.shutdown().await;
    let authenticated = server
        .config()
        .auth
        .as_ref()
        .map_or(0, |a| a.authenticated_connections());
    assert!(authenticated >= 1);
    let handshakes = tls.handshakes();
    assert!(
        handshakes
            .iter()
            .all(|h| h.client_certificate && h.error.is_none()),
        "{handshakes:?}"
    );
    let sent: Vec<bson::Document> = server
        .commands_named("hello")
        .into_iter()
        .filter_map(|h| h.body.get_document("speculativeAuthenticate").ok().cloned())
        .collect();
    assert!(
        sent.iter()
            .any(|d| *d
                == doc! { "authenticate": 1, "mechanism": "MONGODB-X509", "db": "$external" }),
        "{sent:?}"
    );
}
