//! The server side of authentication, for end-to-end tests of the driver's: users with
//! passwords and mechanisms, `saslSupportedMechs` in the hello, `speculativeAuthenticate`,
//! `saslStart`/`saslContinue` for SCRAM-SHA-1, SCRAM-SHA-256 and PLAIN, `authenticate`
//! for MONGODB-X509, and commands refused until the connection authenticated.
//!
//! The SCRAM server checks the client's proof itself (RFC 5802, server side) with the
//! hash primitives of `brook-auth` (the same crates the driver uses); the conversation
//! logic is written here, separately from the client's.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use brook_auth::scram::ScramMechanism;
use bson::spec::BinarySubtype;
use bson::{Binary, Bson, Document, doc};

/// One user the fake server knows.
#[derive(Clone)]
pub struct User {
    /// The database the user is defined in (`admin`, `$external`…).
    pub db: String,
    /// The user name (as stored: not SASLprep'd).
    pub name: String,
    /// The password (as stored; SCRAM-SHA-256 SASLprep's it, as MongoDB does).
    pub password: String,
    /// Mechanisms the user may use: `SCRAM-SHA-1`, `SCRAM-SHA-256`, `PLAIN`,
    /// `MONGODB-X509`.
    pub mechanisms: Vec<String>,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("db", &self.db)
            .field("name", &self.name)
            .field("mechanisms", &self.mechanisms)
            .finish_non_exhaustive()
    }
}

/// What the fake server's authentication does.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The users.
    pub users: Vec<User>,
    /// Answer `speculativeAuthenticate` in the hello (as MongoDB 4.4+ does). Default
    /// `true`; `false` plays a server that ignores it.
    pub speculative: bool,
    /// Send a server signature that does not match (a server that does not know the
    /// password): the driver must refuse it.
    pub wrong_server_signature: bool,
    /// Honour `skipEmptyExchange` (finish after the server-final message). Default
    /// `true`; `false` plays a server that wants the extra empty round.
    pub skip_empty_exchange: bool,
    /// PBKDF2 iterations the server asks for.
    pub iterations: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            users: Vec::new(),
            speculative: true,
            wrong_server_signature: false,
            skip_empty_exchange: true,
            iterations: 4096,
        }
    }
}

impl AuthConfig {
    /// No users yet.
    pub fn new() -> AuthConfig {
        AuthConfig::default()
    }

    /// Adds a user of `db` with these mechanisms.
    pub fn user(mut self, db: &str, name: &str, password: &str, mechanisms: &[&str]) -> Self {
        self.users.push(User {
            db: db.to_owned(),
            name: name.to_owned(),
            password: password.to_owned(),
            mechanisms: mechanisms.iter().map(|m| (*m).to_owned()).collect(),
        });
        self
    }
}

/// A SCRAM conversation under way on one connection.
struct ScramState {
    db: String,
    user: String,
    mechanism: ScramMechanism,
    salted: Vec<u8>,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    skip_empty: bool,
    /// Server-final sent, waiting for the empty round.
    awaiting_empty: bool,
}

/// The authentication side of a fake server: its configuration and the state of each
/// connection.
pub struct AuthServer {
    config: AuthConfig,
    conversations: Mutex<HashMap<u64, ScramState>>,
    authenticated: Mutex<HashMap<u64, String>>,
    speculative_answered: AtomicU64,
    nonces: AtomicU64,
}

impl fmt::Debug for AuthServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthServer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn failed() -> Document {
    doc! {
        "ok": 0.0,
        "errmsg": "Authentication failed.",
        "code": 18,
        "codeName": "AuthenticationFailed",
    }
}

fn binary(bytes: Vec<u8>) -> Binary {
    Binary {
        subtype: BinarySubtype::Generic,
        bytes,
    }
}

fn payload(cmd: &Document) -> Option<Vec<u8>> {
    match cmd.get("payload") {
        Some(Bson::Binary(b)) => Some(b.bytes.clone()),
        Some(Bson::String(s)) => B64.decode(s).ok(),
        _ => None,
    }
}

/// RFC 5802 `saslname` unescaped.
fn unescape(name: &str) -> String {
    name.replace("=2C", ",").replace("=3D", "=")
}

impl AuthServer {
    /// The server side of `config`.
    pub fn new(config: AuthConfig) -> AuthServer {
        AuthServer {
            config,
            conversations: Mutex::new(HashMap::new()),
            authenticated: Mutex::new(HashMap::new()),
            speculative_answered: AtomicU64::new(0),
            nonces: AtomicU64::new(1),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// How many hellos got a `speculativeAuthenticate` answer.
    pub fn speculative_answered(&self) -> u64 {
        self.speculative_answered.load(Ordering::Relaxed)
    }

    /// The user connection `id` authenticated as (`db.name`), if it did.
    pub fn authenticated_as(&self, connection_id: u64) -> Option<String> {
        crate::listen::lock(&self.authenticated)
            .get(&connection_id)
            .cloned()
    }

    /// How many connections authenticated.
    pub fn authenticated_connections(&self) -> usize {
        crate::listen::lock(&self.authenticated).len()
    }

    fn find(&self, db: &str, name: &str, mechanism: &str) -> Option<&User> {
        self.config
            .users
            .iter()
            .find(|u| u.db == db && u.name == name && u.mechanisms.iter().any(|m| m == mechanism))
    }

    /// Adds `saslSupportedMechs` and `speculativeAuthenticate` to a hello reply.
    pub(crate) fn decorate_hello(
        &self,
        connection_id: u64,
        hello: &Document,
        reply: &mut Document,
    ) {
        if let Ok(name) = hello.get_str("saslSupportedMechs")
            && let Some((db, user)) = name.split_once('.')
        {
            let mechs: Vec<String> = self
                .config
                .users
                .iter()
                .filter(|u| u.db == db && u.name == user)
                .flat_map(|u| u.mechanisms.iter().cloned())
                .collect();
            if !mechs.is_empty() {
                reply.insert("saslSupportedMechs", mechs);
            }
        }
        if !self.config.speculative {
            return;
        }
        let Ok(spec) = hello.get_document("speculativeAuthenticate") else {
            return;
        };
        let db = spec.get_str("db").unwrap_or("admin").to_owned();
        let answer = if spec.contains_key("saslStart") {
            self.sasl_start(connection_id, &db, spec)
        } else if spec.contains_key("authenticate") {
            self.authenticate(connection_id, &db, spec)
        } else {
            return;
        };
        // A failed speculation is left out of the hello, as MongoDB does.
        if answer.get_f64("ok").ok() == Some(1.0) {
            let mut answer = answer;
            answer.remove("ok");
            reply.insert("speculativeAuthenticate", answer);
            self.speculative_answered.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether connection `id` may run `command` (before authenticating only the
    /// handshake, the authentication commands and `ping` are allowed).
    pub(crate) fn allows(&self, connection_id: u64, command: &str) -> bool {
        matches!(
            command,
            "hello"
                | "isMaster"
                | "ismaster"
                | "saslStart"
                | "saslContinue"
                | "authenticate"
                | "ping"
                | "buildInfo"
                | "buildinfo"
                | "endSessions"
        ) || crate::listen::lock(&self.authenticated).contains_key(&connection_id)
    }

    /// The reply to an authentication command, `None` for other commands.
    pub(crate) fn answer(&self, connection_id: u64, db: &str, cmd: &Document) -> Option<Document> {
        let name = cmd.keys().next()?.as_str();
        Some(match name {
            "saslStart" => self.sasl_start(connection_id, db, cmd),
            "saslContinue" => self.sasl_continue(connection_id, cmd),
            "authenticate" => self.authenticate(connection_id, db, cmd),
            _ => return None,
        })
    }

    /// The reply refusing a command that needs authentication.
    pub(crate) fn unauthorized(command: &str) -> Document {
        doc! {
            "ok": 0.0,
            "errmsg": format!("command {command} requires authentication"),
            "code": 13,
            "codeName": "Unauthorized",
        }
    }

    fn done(&self, connection_id: u64, db: &str, user: &str) {
        crate::listen::lock(&self.authenticated).insert(connection_id, format!("{db}.{user}"));
    }

    fn authenticate(&self, connection_id: u64, db: &str, cmd: &Document) -> Document {
        if cmd.get_str("mechanism").ok() != Some("MONGODB-X509") || db != "$external" {
            return failed();
        }
        // Without TLS there is no certificate to read the subject from: the user named, or
        // the only X.509 user.
        let user = match cmd.get_str("user") {
            Ok(name) => self.find("$external", name, "MONGODB-X509"),
            Err(_) => {
                let mut x509 = self.config.users.iter().filter(|u| {
                    u.db == "$external" && u.mechanisms.iter().any(|m| m == "MONGODB-X509")
                });
                match (x509.next(), x509.next()) {
                    (Some(u), None) => Some(u),
                    _ => None,
                }
            }
        };
        match user {
            Some(u) => {
                self.done(connection_id, "$external", &u.name);
                doc! { "dbname": "$external", "user": u.name.clone(), "ok": 1.0 }
            }
            None => failed(),
        }
    }

    fn sasl_start(&self, connection_id: u64, db: &str, cmd: &Document) -> Document {
        let Ok(mechanism) = cmd.get_str("mechanism") else {
            return failed();
        };
        let Some(payload) = payload(cmd) else {
            return failed();
        };
        match mechanism {
            "PLAIN" => {
                let mut parts = payload.split(|b| *b == 0);
                let (_authzid, user, password) = (parts.next(), parts.next(), parts.next());
                let (Some(user), Some(password)) = (user, password) else {
                    return failed();
                };
                let user = String::from_utf8_lossy(user);
                match self.find(db, &user, "PLAIN") {
                    Some(u) if u.password.as_bytes() == password => {
                        self.done(connection_id, db, &u.name);
                        doc! { "conversationId": 1, "done": true, "payload": binary(Vec::new()), "ok": 1.0 }
                    }
                    _ => failed(),
                }
            }
            "SCRAM-SHA-1" | "SCRAM-SHA-256" => {
                let scram = if mechanism == "SCRAM-SHA-1" {
                    ScramMechanism::Sha1
                } else {
                    ScramMechanism::Sha256
                };
                let skip_empty = self.config.skip_empty_exchange
                    && cmd
                        .get_document("options")
                        .and_then(|o| o.get_bool("skipEmptyExchange"))
                        .unwrap_or(false);
                self.scram_first(connection_id, db, scram, &payload, skip_empty)
                    .unwrap_or_else(failed)
            }
            _ => failed(),
        }
    }

    fn scram_first(
        &self,
        connection_id: u64,
        db: &str,
        mechanism: ScramMechanism,
        payload: &[u8],
        skip_empty: bool,
    ) -> Option<Document> {
        let text = std::str::from_utf8(payload).ok()?;
        let bare = text.strip_prefix("n,,")?;
        let mut user = None;
        let mut client_nonce = None;
        for part in bare.split(',') {
            match part.split_once('=') {
                Some(("n", v)) => user = Some(unescape(v)),
                Some(("r", v)) => client_nonce = Some(v),
                _ => {}
            }
        }
        let (user, client_nonce) = (user?, client_nonce?);
        let found = self.find(db, &user, mechanism.name())?;
        let prepared = mechanism
            .prepare_password(&found.name, &found.password)
            .ok()?;
        let salt = mechanism.hash(format!("salt:{db}.{user}").as_bytes());
        let salt = salt.get(..16)?.to_vec();
        let iterations = self.config.iterations;
        let salted = mechanism.salt_password(&prepared, &salt, iterations);
        let n = self.nonces.fetch_add(1, Ordering::Relaxed);
        let nonce = format!("{client_nonce}srv{connection_id:x}x{n:x}");
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(&salt));
        crate::listen::lock(&self.conversations).insert(
            connection_id,
            ScramState {
                db: db.to_owned(),
                user: user.clone(),
                mechanism,
                salted,
                client_first_bare: bare.to_owned(),
                server_first: server_first.clone(),
                nonce,
                skip_empty,
                awaiting_empty: false,
            },
        );
        Some(doc! {
            "conversationId": 1,
            "done": false,
            "payload": binary(server_first.into_bytes()),
            "ok": 1.0,
        })
    }

    fn sasl_continue(&self, connection_id: u64, cmd: &Document) -> Document {
        let mut conversations = crate::listen::lock(&self.conversations);
        let Some(state) = conversations.get_mut(&connection_id) else {
            return failed();
        };
        if state.awaiting_empty {
            let (db, user) = (state.db.clone(), state.user.clone());
            conversations.remove(&connection_id);
            drop(conversations);
            self.done(connection_id, &db, &user);
            return doc! { "conversationId": 1, "done": true, "payload": binary(Vec::new()), "ok": 1.0 };
        }
        let Some(payload) = payload(cmd) else {
            return failed();
        };
        let Ok(text) = std::str::from_utf8(&payload) else {
            return failed();
        };
        let Some((without_proof, proof)) = text.rsplit_once(",p=") else {
            return failed();
        };
        if without_proof != format!("c=biws,r={}", state.nonce) {
            conversations.remove(&connection_id);
            return failed();
        }
        let Ok(proof) = B64.decode(proof) else {
            return failed();
        };
        let m = state.mechanism;
        let auth_message = format!(
            "{},{},{without_proof}",
            state.client_first_bare, state.server_first
        );
        let client_key_expected = m.hmac(&state.salted, b"Client Key");
        let stored_key = m.hash(&client_key_expected);
        let client_signature = m.hmac(&stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        if proof.len() != client_signature.len() || m.hash(&client_key) != stored_key {
            conversations.remove(&connection_id);
            return failed();
        }
        let server_key = m.hmac(&state.salted, b"Server Key");
        let mut signature = m.hmac(&server_key, auth_message.as_bytes());
        if self.config.wrong_server_signature
            && let Some(b) = signature.first_mut()
        {
            *b ^= 0xff;
        }
        let server_final = format!("v={}", B64.encode(signature)).into_bytes();
        let done = state.skip_empty;
        if done {
            let (db, user) = (state.db.clone(), state.user.clone());
            conversations.remove(&connection_id);
            drop(conversations);
            self.done(connection_id, &db, &user);
        } else {
            state.awaiting_empty = true;
        }
        doc! { "conversationId": 1, "done": done, "payload": binary(server_final), "ok": 1.0 }
    }
}
