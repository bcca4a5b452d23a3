//! Runs the Connection String and URI Options spec tests (JSON from
//! mongodb/specifications, read from `$BROOK_SPEC_TESTS`, default `../shared/spec-tests`
//! beside the workspace) against `ClientOptions::parse`.
//!
//! A case fails unless it is listed in [`KNOWN_GAPS`]; a listed gap that passes, or that
//! matches no case, fails the run too, so the list stays exact.

use std::path::{Path, PathBuf};

use brook::{Acknowledgment, ClientOptions, Host};
use serde_json::{Map, Value, json};

/// Cases brook does not pass, as `(file, description, reason)`.
const KNOWN_GAPS: &[(&str, &str, &str)] = &[];

fn spec_dir() -> PathBuf {
    match std::env::var_os("BROOK_SPEC_TESTS").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/spec-tests"),
    }
}

fn ms(d: Option<std::time::Duration>) -> Option<Value> {
    d.map(|d| json!(d.as_millis() as u64))
}

fn string_map(m: &std::collections::BTreeMap<String, String>) -> Value {
    Value::Object(m.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
}

/// The parsed value of an option, in the spec files' JSON shape.
fn option_value(o: &ClientOptions, key: &str) -> Option<Value> {
    let cred = o.credential.as_ref();
    match key {
        "appname" => o.app_name.as_ref().map(|v| json!(v)),
        "authmechanism" => cred.and_then(|c| c.mechanism.as_ref()).map(|v| json!(v)),
        "authmechanismproperties" => cred
            .filter(|c| !c.mechanism_properties.is_empty())
            .map(|c| string_map(&c.mechanism_properties)),
        "authsource" => cred.and_then(|c| c.source.as_ref()).map(|v| json!(v)),
        "compressors" => o.compressors.as_ref().map(|v| json!(v)),
        "zlibcompressionlevel" => o.zlib_compression_level.map(|v| json!(v)),
        "connecttimeoutms" => ms(o.connect_timeout),
        "sockettimeoutms" => ms(o.socket_timeout),
        "serverselectiontimeoutms" => ms(o.server_selection_timeout),
        "timeoutms" => ms(o.timeout),
        "maxpoolsize" => o.max_pool_size.map(|v| json!(v)),
        "minpoolsize" => o.min_pool_size.map(|v| json!(v)),
        "maxidletimems" => ms(o.max_idle_time),
        "maxconnecting" => o.max_connecting.map(|v| json!(v)),
        "waitqueuetimeoutms" => ms(o.wait_queue_timeout),
        "directconnection" => o.direct_connection.map(|v| json!(v)),
        "replicaset" => o.replica_set.as_ref().map(|v| json!(v)),
        "loadbalanced" => o.load_balanced.map(|v| json!(v)),
        "tls" | "ssl" => o.tls.map(|v| json!(v)),
        "tlscafile" => o.tls_ca_file.as_ref().map(|v| json!(v)),
        "tlscertificatekeyfile" => o.tls_certificate_key_file.as_ref().map(|v| json!(v)),
        "tlscertificatekeyfilepassword" => o
            .tls_certificate_key_file_password
            .as_ref()
            .map(|v| json!(v)),
        "tlsallowinvalidcertificates" => o.tls_allow_invalid_certificates.map(|v| json!(v)),
        "tlsallowinvalidhostnames" => o.tls_allow_invalid_hostnames.map(|v| json!(v)),
        "tlsinsecure" => o.tls_insecure.map(|v| json!(v)),
        "tlsdisableocspendpointcheck" => o.tls_disable_ocsp_endpoint_check.map(|v| json!(v)),
        "tlsdisablecertificaterevocationcheck" => {
            o.tls_disable_certificate_revocation_check.map(|v| json!(v))
        }
        "readpreference" => o.read_preference.map(|v| json!(v.name())),
        "readpreferencetags" => o
            .read_preference_tags
            .as_ref()
            .map(|sets| Value::Array(sets.iter().map(string_map).collect())),
        "maxstalenessseconds" => o.max_staleness_seconds.map(|v| json!(v)),
        "readconcernlevel" => o.read_concern_level.as_ref().map(|v| json!(v)),
        "w" => o.w.as_ref().map(|w| match w {
            Acknowledgment::Nodes(n) => json!(n),
            Acknowledgment::Majority => json!("majority"),
            Acknowledgment::Custom(s) => json!(s),
            other => json!(format!("{other:?}")),
        }),
        "wtimeoutms" => ms(o.w_timeout),
        "journal" => o.journal.map(|v| json!(v)),
        "retrywrites" => o.retry_writes.map(|v| json!(v)),
        "retryreads" => o.retry_reads.map(|v| json!(v)),
        "heartbeatfrequencyms" => ms(o.heartbeat_frequency),
        "localthresholdms" => ms(o.local_threshold),
        "servermonitoringmode" => o.server_monitoring_mode.map(|v| json!(v.as_str())),
        "serverselectiontryonce" => o.server_selection_try_once.map(|v| json!(v)),
        "srvservicename" => o.srv_service_name.as_ref().map(|v| json!(v)),
        "srvmaxhosts" => o.srv_max_hosts.map(|v| json!(v)),
        "proxyhost" => o.proxy_host.as_ref().map(|v| json!(v)),
        "proxyport" => o.proxy_port.map(|v| json!(v)),
        "proxyusername" => o.proxy_username.as_ref().map(|v| json!(v)),
        "proxypassword" => o.proxy_password.as_ref().map(|v| json!(v)),
        "maxadaptiveretries" => o.max_adaptive_retries.map(|v| json!(v)),
        "enableoverloadretargeting" => o.enable_overload_retargeting.map(|v| json!(v)),
        _ => None,
    }
}

fn check_hosts(o: &ClientOptions, expected: &[Value]) -> Result<(), String> {
    if o.hosts.len() != expected.len() {
        return Err(format!("hosts {:?}, expected {expected:?}", o.hosts));
    }
    for (got, want) in o.hosts.iter().zip(expected) {
        let host = want.get("host").and_then(Value::as_str);
        if host != Some(got.host()) {
            return Err(format!("host {got:?}, expected {want}"));
        }
        if let Some(port) = want.get("port").and_then(Value::as_u64)
            && got.port().map(u64::from) != Some(port)
        {
            return Err(format!("port of {got:?}, expected {want}"));
        }
        let is_unix = matches!(got, Host::Unix { .. });
        if let Some(kind) = want.get("type").and_then(Value::as_str)
            && (kind == "unix") != is_unix
        {
            return Err(format!("host type of {got:?}, expected {kind}"));
        }
    }
    Ok(())
}

fn check_auth(o: &ClientOptions, auth: &Map<String, Value>) -> Result<(), String> {
    let cred = o.credential.as_ref();
    if let Some(user) = auth.get("username").and_then(Value::as_str)
        && cred.and_then(|c| c.username.as_deref()) != Some(user)
    {
        return Err(format!("username: got {cred:?}, expected {user:?}"));
    }
    if let Some(pw) = auth.get("password").and_then(Value::as_str)
        && cred.and_then(|c| c.password.as_deref()) != Some(pw)
    {
        return Err(format!("password differs (expected {pw:?})"));
    }
    if let Some(db) = auth.get("db").and_then(Value::as_str)
        && o.default_database.as_deref() != Some(db)
    {
        return Err(format!("db: got {:?}, expected {db:?}", o.default_database));
    }
    Ok(())
}

fn check_case(case: &Value) -> Result<(), String> {
    let uri = case.get("uri").and_then(Value::as_str).ok_or("no uri")?;
    let valid = case.get("valid").and_then(Value::as_bool).unwrap_or(true);
    let warning = case
        .get("warning")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let parsed = ClientOptions::parse(uri);
    let o = match (valid, parsed) {
        (false, Err(_)) => return Ok(()),
        (false, Ok(o)) => return Err(format!("parsed an invalid URI: {o:?}")),
        (true, Err(e)) => return Err(format!("refused a valid URI: {e}")),
        (true, Ok(o)) => o,
    };
    if warning && o.warnings.is_empty() {
        return Err("expected a warning, got none".into());
    }
    if !warning && !o.warnings.is_empty() {
        return Err(format!("unexpected warnings: {:?}", o.warnings));
    }
    if let Some(hosts) = case.get("hosts").and_then(Value::as_array) {
        check_hosts(&o, hosts)?;
    }
    if let Some(auth) = case.get("auth").and_then(Value::as_object) {
        check_auth(&o, auth)?;
    }
    if let Some(options) = case.get("options").and_then(Value::as_object) {
        for (key, want) in options {
            let got = option_value(&o, &key.to_ascii_lowercase());
            if got.as_ref() != Some(want) {
                return Err(format!("option {key}: got {got:?}, expected {want}"));
            }
        }
    }
    Ok(())
}

#[test]
fn connection_string_and_uri_options_spec() {
    let root = spec_dir();
    assert!(
        root.is_dir(),
        "spec tests not found at {} (set BROOK_SPEC_TESTS)",
        root.display()
    );
    let mut failures = Vec::new();
    let mut gaps_hit = vec![false; KNOWN_GAPS.len()];
    let mut cases = 0;
    for sub in ["connection-string/tests", "uri-options/tests"] {
        let dir = root.join(sub);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no JSON spec files in {}", dir.display());
        for file in files {
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = std::fs::read_to_string(&file).expect("readable spec file");
            let json: Value = serde_json::from_str(&text).expect("valid JSON spec file");
            let tests = json
                .get("tests")
                .and_then(Value::as_array)
                .expect("a `tests` array");
            for case in tests {
                cases += 1;
                let desc = case
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or("?");
                let gap = KNOWN_GAPS
                    .iter()
                    .position(|(f, d, _)| *f == name && *d == desc);
                let outcome = check_case(case);
                match (gap, outcome) {
                    (None, Ok(())) => {}
                    (None, Err(e)) => failures.push(format!("{name}: {desc}: {e}")),
                    (Some(i), Ok(())) => {
                        if let Some(hit) = gaps_hit.get_mut(i) {
                            *hit = true;
                        }
                        failures.push(format!("{name}: {desc}: listed as a known gap but passes"))
                    }
                    (Some(i), Err(_)) => {
                        if let Some(hit) = gaps_hit.get_mut(i) {
                            *hit = true;
                        }
                    }
                }
            }
        }
    }
    for (hit, (f, d, _)) in gaps_hit.iter().zip(KNOWN_GAPS) {
        if !hit {
            failures.push(format!("known gap {f}: {d} matched no failing case"));
        }
    }
    assert!(cases > 100, "only {cases} spec cases found");
    assert!(
        failures.is_empty(),
        "{} of {cases} spec cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
