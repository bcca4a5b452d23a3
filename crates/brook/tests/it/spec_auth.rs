//! Runs the Authentication spec's connection-string tests
//! (`auth/tests/legacy/connection-string.json` from mongodb/specifications, read from
//! `$BROOK_SPEC_TESTS`, default `../shared/spec-tests` beside the workspace) against
//! `ClientOptions::parse` and `ClientOptions::auth_credential`: the credential's fields,
//! the mechanism and source defaults, and the URIs that must be refused.

use std::path::{Path, PathBuf};

use brook::ClientOptions;
use serde_json::{Value, json};

/// Cases brook does not pass, as `(description, reason)`. A listed case that passes, or
/// that matches no case, fails the run, so the list stays exact.
const KNOWN_GAPS: &[(&str, &str)] = &[(
    "should throw an exception if username and password provided (MONGODB-AWS)",
    "contradicts \"should use username and password if specified (MONGODB-AWS)\" in the \
     same file (both give a user and a password with MONGODB-AWS); brook keeps the valid \
     reading, and refuses MONGODB-AWS at connect anyway",
)];

fn spec_file() -> PathBuf {
    let root = match std::env::var_os("BROOK_SPEC_TESTS").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/spec-tests"),
    };
    root.join("auth/tests/legacy/connection-string.json")
}

/// The parsed credential in the spec file's JSON shape.
fn credential_json(o: &ClientOptions) -> Value {
    match o.auth_credential() {
        None => Value::Null,
        Some(c) => json!({
            "username": c.username,
            "password": c.password,
            "source": c.source,
            "mechanism": c.mechanism,
            "mechanism_properties": if c.mechanism_properties.is_empty() {
                Value::Null
            } else {
                json!(c.mechanism_properties)
            },
        }),
    }
}

fn check_case(case: &Value) -> Result<(), String> {
    let uri = case["uri"].as_str().ok_or("no uri")?;
    let valid = case["valid"].as_bool().unwrap_or(true);
    match (valid, ClientOptions::parse(uri)) {
        (false, Err(_)) => Ok(()),
        (false, Ok(o)) => Err(format!(
            "parsed an invalid URI; credential {}",
            credential_json(&o)
        )),
        (true, Err(e)) => Err(format!("refused a valid URI: {e}")),
        (true, Ok(o)) => {
            let Some(want) = case.get("credential") else {
                return Ok(());
            };
            let got = credential_json(&o);
            if &got == want {
                Ok(())
            } else {
                Err(format!("credential: got {got}, expected {want}"))
            }
        }
    }
}

#[test]
fn auth_connection_string_spec() {
    let file = spec_file();
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "auth spec tests not found at {} ({e}; set BROOK_SPEC_TESTS)",
            file.display()
        )
    });
    let doc: Value = serde_json::from_str(&text).expect("spec file is JSON");
    let cases = doc["tests"].as_array().expect("tests array");
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    let mut gaps_hit = vec![false; KNOWN_GAPS.len()];
    let mut failures = Vec::new();
    for case in cases {
        let description = case["description"].as_str().unwrap_or_default();
        let gap = KNOWN_GAPS.iter().position(|(d, _)| *d == description);
        match (check_case(case), gap) {
            (Ok(()), None) => {}
            (Ok(()), Some(_)) => failures.push(format!(
                "{description}: listed in KNOWN_GAPS but passes; remove it"
            )),
            (Err(_), Some(i)) => gaps_hit[i] = true,
            (Err(e), None) => failures.push(format!("{description}: {e}")),
        }
    }
    for (hit, (d, _)) in gaps_hit.iter().zip(KNOWN_GAPS) {
        if !hit {
            failures.push(format!("KNOWN_GAPS entry matched no failing case: {d}"));
        }
    }
    eprintln!(
        "auth/tests/legacy/connection-string.json: {} cases, {} passed, {} known gap(s)",
        cases.len(),
        cases.len() - KNOWN_GAPS.len() - failures.len(),
        KNOWN_GAPS.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// A credential's password never shows in the options' `Debug`.
#[test]
fn credential_debug_is_redacted() {
    let o = ClientOptions::parse("mongodb://user:s3cr3t-pw@localhost/?authMechanism=SCRAM-SHA-256")
        .unwrap();
    let shown = format!("{o:?} {:?}", o.auth_credential());
    assert!(!shown.contains("s3cr3t-pw"), "{shown}");
}
