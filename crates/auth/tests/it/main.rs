//! brook-auth's integration tests: the SCRAM conversations of the MongoDB
//! Authentication specification, read from `$BROOK_SPEC_TESTS` (default
//! `../shared/spec-tests` beside the workspace), `auth/scram-test-vectors.extracted.json`.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use brook_auth::scram::{
    SaltedPasswordCache, ScramClient, ScramMechanism, mongo_password_digest, sasl_prep,
};
use brook_auth::{AuthError, Authenticator, Credential, Mechanism, Step};
use bson::spec::BinarySubtype;
use bson::{Binary, Bson, Document, doc};
use serde_json::Value;

fn vectors() -> Value {
    let root = match std::env::var("BROOK_SPEC_TESTS") {
        Ok(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/spec-tests"),
    };
    let file = root.join("auth/scram-test-vectors.extracted.json");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "SCRAM vectors not found at {} ({e}; set BROOK_SPEC_TESTS to the spec-tests folder)",
            file.display()
        )
    });
    serde_json::from_str(&text).expect("vectors are JSON")
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string {key}"))
}

fn mechanism(v: &Value) -> (Mechanism, ScramMechanism) {
    match s(v, "mechanism") {
        "SCRAM-SHA-1" => (Mechanism::ScramSha1, ScramMechanism::Sha1),
        "SCRAM-SHA-256" => (Mechanism::ScramSha256, ScramMechanism::Sha256),
        other => panic!("unknown mechanism {other}"),
    }
}

fn scram_cases() -> Vec<Value> {
    let v = vectors();
    let cases = v["scram"].as_array().expect("scram array").clone();
    assert_eq!(cases.len(), 2, "one conversation per mechanism");
    cases
}

/// The messages of each example conversation, byte for byte.
#[test]
fn spec_conversations_messages() {
    for case in scram_cases() {
        let (_, m) = mechanism(&case);
        let mut client = ScramClient::new(
            m,
            s(&case, "username"),
            s(&case, "password"),
            s(&case, "client_nonce").to_owned(),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(client.client_first()).unwrap(),
            s(&case, "client_first")
        );
        let cache = SaltedPasswordCache::new();
        let client_final = client
            .handle_server_first(s(&case, "server_first").as_bytes(), &cache)
            .unwrap();
        assert_eq!(
            String::from_utf8(client_final).unwrap(),
            s(&case, "client_final"),
            "{}",
            s(&case, "mechanism")
        );
        client
            .handle_server_final(s(&case, "server_final").as_bytes())
            .unwrap();
        assert!(client.is_verified());
    }
}

/// The same conversations as commands: saslStart and saslContinue documents as the
/// vectors' `wire` lists them, replies handed back, done after the signature check.
#[test]
fn spec_conversations_on_the_wire() {
    for case in scram_cases() {
        let (mech, _) = mechanism(&case);
        let cred = Credential::new(
            Some(s(&case, "username").into()),
            Some(s(&case, "password").into()),
            "admin".into(),
            Some(mech),
        );
        let mut auth =
            Authenticator::with_nonce(&cred, mech, s(&case, "client_nonce").into()).unwrap();
        let wire = case["wire"].as_array().unwrap();
        let mut sent: Option<Document> = Some(auth.start_command());
        let mut done = false;
        for step in wire {
            let payload = B64.decode(s(step, "payload_base64")).unwrap();
            if step.get("reply").is_some() {
                let reply = doc! {
                    "ok": 1.0,
                    "conversationId": step["conversationId"].as_i64().unwrap() as i32,
                    "done": step["done"].as_bool().unwrap(),
                    "payload": Binary { subtype: BinarySubtype::Generic, bytes: payload },
                };
                match auth.handle_reply(&reply).unwrap() {
                    Step::Continue(next) => sent = Some(next),
                    Step::Done => done = true,
                }
                continue;
            }
            let cmd = sent.take().expect("a command is due");
            let name = s(step, "cmd");
            assert_eq!(cmd.keys().next().map(String::as_str), Some(name));
            assert_eq!(
                cmd.get_binary_generic("payload").unwrap(),
                &payload,
                "{name}"
            );
            if name == "saslStart" {
                assert_eq!(cmd.get_str("mechanism").unwrap(), s(step, "mechanism"));
                assert_eq!(
                    cmd.get_document("options").unwrap(),
                    &doc! { "skipEmptyExchange": true }
                );
            } else {
                assert_eq!(
                    cmd.get("conversationId"),
                    Some(&Bson::Int32(step["conversationId"].as_i64().unwrap() as i32))
                );
            }
        }
        assert!(done, "{}: not done", s(&case, "mechanism"));
    }
}

/// A server-final whose signature is not the one the password gives is refused.
#[test]
fn spec_conversation_with_wrong_server_signature_is_refused() {
    for case in scram_cases() {
        let (_, m) = mechanism(&case);
        let mut client = ScramClient::new(
            m,
            s(&case, "username"),
            s(&case, "password"),
            s(&case, "client_nonce").to_owned(),
        )
        .unwrap();
        client
            .handle_server_first(
                s(&case, "server_first").as_bytes(),
                &SaltedPasswordCache::new(),
            )
            .unwrap();
        let mut sig = B64.decode(&s(&case, "server_final")[2..]).unwrap();
        sig[0] ^= 1;
        let tampered = format!("v={}", B64.encode(sig));
        assert_eq!(
            client.handle_server_final(tampered.as_bytes()),
            Err(AuthError::ServerSignature)
        );
        assert!(!client.is_verified());
    }
}

/// A wrong password gives another proof than the vectors'.
#[test]
fn wrong_password_gives_another_proof() {
    for case in scram_cases() {
        let (_, m) = mechanism(&case);
        let mut client = ScramClient::new(
            m,
            s(&case, "username"),
            "crayon",
            s(&case, "client_nonce").into(),
        )
        .unwrap();
        let client_final = client
            .handle_server_first(
                s(&case, "server_first").as_bytes(),
                &SaltedPasswordCache::new(),
            )
            .unwrap();
        assert_ne!(
            String::from_utf8(client_final).unwrap(),
            s(&case, "client_final")
        );
    }
}

#[test]
fn spec_sha1_password_digest() {
    let case = &scram_cases()[0];
    assert_eq!(s(case, "mechanism"), "SCRAM-SHA-1");
    assert_eq!(
        mongo_password_digest(s(case, "username"), s(case, "password")),
        s(case, "derived_mongo_hashed_password")
    );
}

#[test]
fn spec_saslprep_expectations() {
    let v = vectors();
    let list = v["saslprep_live_server_prose_test"]["derived_saslprep_expectations"]
        .as_array()
        .unwrap();
    assert_eq!(list.len(), 4);
    for e in list {
        assert_eq!(sasl_prep(s(e, "input")).unwrap(), s(e, "output"));
    }
    // A prohibited character (a control character) is refused, without naming it.
    let err = sasl_prep("s3cr\u{0007}et").unwrap_err();
    assert_eq!(err, AuthError::SaslPrep);
    assert!(!err.to_string().contains("s3cr") && !format!("{err:?}").contains("s3cr"));
}

#[test]
fn spec_rules() {
    let v = vectors();
    let rules = &v["rules_from_spec"];
    assert_eq!(
        rules["min_iteration_count"].as_u64(),
        Some(u64::from(brook_auth::scram::MIN_ITERATIONS))
    );
    // SHA-256 usernames are not SASLprep'd, passwords are.
    let c = ScramClient::new(
        ScramMechanism::Sha256,
        "I\u{00AD}X",
        "I\u{00AD}X",
        "n".into(),
    )
    .unwrap();
    assert_eq!(c.client_first(), "n,,n=I\u{00AD}X,r=n".as_bytes());
}

/// The cache: the same credential authenticating twice runs PBKDF2 once.
#[test]
fn salted_password_cache_is_shared_by_clones() {
    let case = &scram_cases()[1];
    let cred = Credential::new(
        Some(s(case, "username").into()),
        Some(s(case, "password").into()),
        "admin".into(),
        Some(Mechanism::ScramSha256),
    );
    let clone = cred.clone();
    for c in [&cred, &clone] {
        let mut auth =
            Authenticator::with_nonce(c, Mechanism::ScramSha256, s(case, "client_nonce").into())
                .unwrap();
        let server_first = B64.encode(s(case, "server_first"));
        let reply = doc! {
            "ok": 1, "conversationId": 1, "done": false,
            "payload": Binary { subtype: BinarySubtype::Generic,
                bytes: B64.decode(server_first).unwrap() },
        };
        assert!(matches!(auth.handle_reply(&reply), Ok(Step::Continue(_))));
    }
    assert_eq!(cred.cache().computed(), 1);
}
