//! Authentication on one connection, against the testkit's SCRAM server side.

use brook_conn::{AuthError, ConnError, Connection, ConnectionOptions, Credential, Mechanism};
use brook_testkit::{AuthConfig, FakeServer, ServerConfig};

use crate::within;

const PASSWORD: &str = "cache-Me-Once-9";

async fn server() -> FakeServer {
    FakeServer::start(ServerConfig::standalone().with_auth(AuthConfig::new().user(
        "admin",
        "user",
        PASSWORD,
        &["SCRAM-SHA-256", "SCRAM-SHA-1"],
    )))
    .await
    .unwrap()
}

fn options(password: &str, mechanism: Option<Mechanism>) -> ConnectionOptions {
    ConnectionOptions {
        credential: Some(Credential::new(
            Some("user".into()),
            Some(password.into()),
            "admin".into(),
            mechanism,
        )),
        ..ConnectionOptions::default()
    }
}

#[tokio::test]
async fn reconnecting_does_not_redo_pbkdf2() {
    within(async {
        let fake = server().await;
        let address = fake.host_port().parse().unwrap();
        for mechanism in [Mechanism::ScramSha256, Mechanism::ScramSha1] {
            let opts = options(PASSWORD, Some(mechanism));
            for _ in 0..3 {
                Connection::connect(&address, &opts.clone()).await.unwrap();
            }
            let cred = opts.credential.as_ref().unwrap();
            assert_eq!(cred.cache().computed(), 1, "{mechanism}");
        }
        let auth = fake.config().auth.clone().unwrap();
        assert_eq!(auth.authenticated_connections(), 6);
    })
    .await;
}

#[tokio::test]
async fn a_failed_authentication_is_typed_and_keeps_the_password_out() {
    within(async {
        let fake = server().await;
        let address = fake.host_port().parse().unwrap();
        let wrong = "wrong-Secret-31";
        let err = Connection::connect(&address, &options(wrong, None))
            .await
            .unwrap_err();
        assert!(err.is_auth(), "{err}");
        assert!(!err.is_network() && !err.is_protocol() && !err.is_timeout());
        match &err {
            ConnError::Auth {
                mechanism,
                user,
                source,
                ..
            } => {
                assert_eq!(*mechanism, "SCRAM-SHA-256");
                assert_eq!(user.as_deref(), Some("user"));
                assert_eq!(source.code(), Some(18));
            }
            other => panic!("not an auth error: {other:?}"),
        }
        let shown = format!("{err} {err:?} {:?}", options(wrong, None));
        assert!(!shown.contains(wrong), "{shown}");
    })
    .await;
}

#[tokio::test]
async fn unsupported_mechanisms_fail_before_the_hello() {
    within(async {
        let fake = server().await;
        let address = fake.host_port().parse().unwrap();
        for mechanism in [Mechanism::Gssapi, Mechanism::Aws, Mechanism::Oidc] {
            let err = Connection::connect(&address, &options(PASSWORD, Some(mechanism)))
                .await
                .unwrap_err();
            assert!(
                matches!(&err, ConnError::Auth { source: AuthError::Unsupported(m), .. } if *m == mechanism),
                "{err:?}"
            );
            assert!(err.to_string().contains("not supported"), "{err}");
        }
        assert!(fake.commands_named("hello").is_empty());
    })
    .await;
}
