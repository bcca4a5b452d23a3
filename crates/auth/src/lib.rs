//! MongoDB authentication for brook, without IO: the SCRAM-SHA-1 and SCRAM-SHA-256
//! client conversations, SASLprep, MongoDB's SCRAM-SHA-1 password digest, the PLAIN
//! payload and the MONGODB-X509 `authenticate` command, as the MongoDB Authentication
//! specification describes them.
//!
//! Nothing here reads a socket, a clock or a random source: the driver
//! (`brook-conn`) hands in the random bytes of the nonce, sends the command documents
//! this crate builds and hands back the replies.
//!
//! # Use
//!
//! ```
//! use brook_auth::{Authenticator, Credential, Mechanism, Step};
//! let cred = Credential::new(Some("user".into()), Some("pencil".into()), "admin".into(), None);
//! let mut auth = Authenticator::new(&cred, Mechanism::ScramSha256, &[7; 24]).unwrap();
//! let first = auth.start_command(); // { saslStart: 1, mechanism: "SCRAM-SHA-256", … }
//! assert_eq!(first.get_str("mechanism").unwrap(), "SCRAM-SHA-256");
//! // send `first` to `cred.source()`, then loop:
//! // match auth.handle_reply(&reply)? { Step::Continue(next) => send next, Step::Done => break }
//! ```
//!
//! A SCRAM conversation is done only once the server's signature was verified: a server
//! that answers `done: true` without proving it knows the password is refused
//! ([`AuthError::ServerSignature`]).
//!
//! Salted passwords are cached per [`Credential`] (its clones share the cache), keyed by
//! mechanism, password, salt and iteration count: a pool opening its tenth connection
//! does not run PBKDF2 a tenth time.

#![forbid(unsafe_code)]

pub mod scram;

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bson::spec::BinarySubtype;
use bson::{Binary, Bson, Document, doc};

use crate::scram::{SaltedPasswordCache, ScramClient, ScramMechanism, nonce_from_random};

/// An authentication mechanism named by `authMechanism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mechanism {
    /// SCRAM-SHA-1.
    ScramSha1,
    /// SCRAM-SHA-256.
    ScramSha256,
    /// PLAIN (LDAP through `$external`).
    Plain,
    /// MONGODB-X509: the TLS client certificate.
    X509,
    /// GSSAPI (Kerberos): not supported by brook.
    Gssapi,
    /// MONGODB-AWS: not supported by brook.
    Aws,
    /// MONGODB-OIDC: not supported by brook.
    Oidc,
}

impl Mechanism {
    /// The name as in `authMechanism` and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::Plain => "PLAIN",
            Mechanism::X509 => "MONGODB-X509",
            Mechanism::Gssapi => "GSSAPI",
            Mechanism::Aws => "MONGODB-AWS",
            Mechanism::Oidc => "MONGODB-OIDC",
        }
    }

    /// The mechanism of that name (ASCII case ignored), if brook knows it.
    pub fn from_name(name: &str) -> Option<Mechanism> {
        [
            Mechanism::ScramSha1,
            Mechanism::ScramSha256,
            Mechanism::Plain,
            Mechanism::X509,
            Mechanism::Gssapi,
            Mechanism::Aws,
            Mechanism::Oidc,
        ]
        .into_iter()
        .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// Whether brook can authenticate with it.
    pub fn is_supported(self) -> bool {
        matches!(
            self,
            Mechanism::ScramSha1 | Mechanism::ScramSha256 | Mechanism::Plain | Mechanism::X509
        )
    }

    /// The mechanism to use when none was given: SCRAM-SHA-256 when the server lists it
    /// in `saslSupportedMechs`, SCRAM-SHA-1 otherwise (also when the list is missing).
    pub fn negotiate(sasl_supported_mechs: Option<&[String]>) -> Mechanism {
        match sasl_supported_mechs {
            Some(list) if list.iter().any(|m| m == "SCRAM-SHA-256") => Mechanism::ScramSha256,
            _ => Mechanism::ScramSha1,
        }
    }

    fn scram(self) -> Option<ScramMechanism> {
        match self {
            Mechanism::ScramSha1 => Some(ScramMechanism::Sha1),
            Mechanism::ScramSha256 => Some(ScramMechanism::Sha256),
            _ => None,
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to authenticate as. Its `Debug` never shows the password.
#[derive(Clone)]
pub struct Credential {
    username: Option<String>,
    password: Option<String>,
    source: String,
    mechanism: Option<Mechanism>,
    cache: Arc<SaltedPasswordCache>,
}

impl Credential {
    /// A credential. `source` is the database the user is defined in (already resolved:
    /// `admin`, the URI's database, or `$external`); `mechanism` `None` means negotiate.
    pub fn new(
        username: Option<String>,
        password: Option<String>,
        source: String,
        mechanism: Option<Mechanism>,
    ) -> Credential {
        Credential {
            username,
            password,
            source,
            mechanism,
            cache: Arc::new(SaltedPasswordCache::new()),
        }
    }

    /// The user name.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The password (kept out of every `Debug` and error).
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The database the user is defined in.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The mechanism asked for, `None` to negotiate.
    pub fn mechanism(&self) -> Option<Mechanism> {
        self.mechanism
    }

    /// The salted-password cache shared by this credential's clones.
    pub fn cache(&self) -> &SaltedPasswordCache {
        &self.cache
    }

    /// `"<source>.<user>"`, the value of the hello's `saslSupportedMechs`.
    pub fn sasl_supported_mechs_name(&self) -> Option<String> {
        self.username
            .as_ref()
            .map(|u| format!("{}.{u}", self.source))
    }
}

impl PartialEq for Credential {
    /// Equal when they name the same user, password, source and mechanism (the cache
    /// is not compared).
    fn eq(&self, other: &Credential) -> bool {
        self.username == other.username
            && self.password == other.password
            && self.source == other.source
            && self.mechanism == other.mechanism
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("source", &self.source)
            .field("mechanism", &self.mechanism)
            .finish()
    }
}

/// Why authentication failed. No variant ever carries the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The mechanism needs a user name and the credential has none.
    #[error("{0} needs a user name")]
    MissingUsername(Mechanism),
    /// The mechanism needs a password and the credential has none.
    #[error("{0} needs a password")]
    MissingPassword(Mechanism),
    /// brook does not implement the mechanism.
    #[error("the {0} authentication mechanism is not supported by brook")]
    Unsupported(Mechanism),
    /// The password contains characters SASLprep prohibits (which ones is not said: it
    /// is a secret).
    #[error("the password contains characters SASLprep (RFC 4013) prohibits")]
    SaslPrep,
    /// The server refused: an `ok: 0` reply or a SCRAM `e=` attribute.
    #[error("the server refused authentication: {message}")]
    Server {
        /// The server's error code, if any.
        code: Option<i32>,
        /// The server's message.
        message: String,
    },
    /// The server's nonce does not extend the client's.
    #[error("the server's nonce does not extend the client's")]
    NonceMismatch,
    /// The server asked for fewer PBKDF2 iterations than the specification allows.
    #[error("the server asked for {0} iterations, fewer than the minimum 4096")]
    IterationCount(u32),
    /// The server's signature is missing or wrong: it did not prove it knows the
    /// password, so it is not trusted.
    #[error("the server could not prove it knows the password (server signature missing or wrong)")]
    ServerSignature,
    /// A reply or SCRAM message that does not follow the protocol.
    #[error("malformed authentication reply: {reason}")]
    Malformed {
        /// What was wrong.
        reason: String,
    },
}

impl AuthError {
    /// The server's error code, when the server refused with one.
    pub fn code(&self) -> Option<i32> {
        match self {
            AuthError::Server { code, .. } => *code,
            _ => None,
        }
    }
}

/// What the driver does next. Not `#[non_exhaustive]`, on purpose: a driver handles
/// every step, and a new one must break its build rather than fall into a guess.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Send this command (to the credential's source database) and hand back its reply.
    Continue(Document),
    /// Authenticated.
    Done,
}

#[derive(Debug)]
enum State {
    /// SCRAM: client-first sent (in saslStart or speculatively).
    ScramFirst(ScramClient),
    /// SCRAM: client-final sent.
    ScramFinal {
        client: ScramClient,
        conversation_id: Bson,
    },
    /// SCRAM verified, but the server had not said done (no skipEmptyExchange): an empty
    /// saslContinue was sent.
    ScramEmpty,
    /// PLAIN saslStart or X.509 authenticate sent: one reply finishes it.
    OneShot,
    /// Finished (successfully or not).
    Finished,
}

/// One authentication conversation on one connection. Build it, send
/// [`start_command`](Authenticator::start_command) (or put
/// [`speculative_command`](Authenticator::speculative_command) in the hello), then feed
/// each reply to [`handle_reply`](Authenticator::handle_reply) until [`Step::Done`].
/// Its `Debug` never shows the password.
pub struct Authenticator {
    mechanism: Mechanism,
    username: Option<String>,
    password: Option<String>,
    source: String,
    cache: Arc<SaltedPasswordCache>,
    state: State,
}

impl Authenticator {
    /// Starts authenticating `credential` with `mechanism` (the credential's own, or
    /// the negotiated one). `random` makes the SCRAM client nonce.
    pub fn new(
        credential: &Credential,
        mechanism: Mechanism,
        random: &[u8; 24],
    ) -> Result<Authenticator, AuthError> {
        Authenticator::with_nonce(credential, mechanism, nonce_from_random(random))
    }

    /// [`new`](Authenticator::new) with the SCRAM client nonce given as it goes on the
    /// wire (for the specification's example conversations).
    pub fn with_nonce(
        credential: &Credential,
        mechanism: Mechanism,
        client_nonce: String,
    ) -> Result<Authenticator, AuthError> {
        let state = match mechanism {
            Mechanism::ScramSha1 | Mechanism::ScramSha256 | Mechanism::Plain => {
                let user = credential
                    .username()
                    .ok_or(AuthError::MissingUsername(mechanism))?;
                let password = credential
                    .password()
                    .ok_or(AuthError::MissingPassword(mechanism))?;
                match mechanism.scram() {
                    Some(scram) => {
                        State::ScramFirst(ScramClient::new(scram, user, password, client_nonce)?)
                    }
                    None => State::OneShot,
                }
            }
            Mechanism::X509 => State::OneShot,
            other => return Err(AuthError::Unsupported(other)),
        };
        Ok(Authenticator {
            mechanism,
            username: credential.username.clone(),
            password: credential.password.clone(),
            source: credential.source.clone(),
            cache: Arc::clone(&credential.cache),
            state,
        })
    }

    /// The mechanism in use.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The database the commands go to (`$external` for X.509).
    pub fn source(&self) -> &str {
        match self.mechanism {
            Mechanism::X509 => "$external",
            _ => &self.source,
        }
    }

    /// The first command, without `$db`: `saslStart` (SCRAM with
    /// `options.skipEmptyExchange`, PLAIN) or `authenticate` (X.509).
    pub fn start_command(&self) -> Document {
        match (&self.state, self.mechanism) {
            (State::ScramFirst(client), _) => doc! {
                "saslStart": 1,
                "mechanism": self.mechanism.name(),
                "payload": binary(client.client_first()),
                "options": { "skipEmptyExchange": true },
            },
            (_, Mechanism::X509) => {
                let mut d = doc! { "authenticate": 1, "mechanism": "MONGODB-X509" };
                if let Some(user) = &self.username {
                    d.insert("user", user.clone());
                }
                d
            }
            _ => {
                // PLAIN: authzid (empty) NUL authcid NUL password.
                let mut payload = vec![0u8];
                payload.extend_from_slice(self.username.as_deref().unwrap_or("").as_bytes());
                payload.push(0);
                payload.extend_from_slice(self.password.as_deref().unwrap_or("").as_bytes());
                doc! {
                    "saslStart": 1,
                    "mechanism": "PLAIN",
                    "payload": binary(payload),
                    "autoAuthorize": 1,
                }
            }
        }
    }

    /// The hello's `speculativeAuthenticate` document: the first command with `db`, for
    /// SCRAM and X.509 (the specification speculates with no other mechanism).
    pub fn speculative_command(&self) -> Option<Document> {
        match self.mechanism {
            Mechanism::ScramSha1 | Mechanism::ScramSha256 | Mechanism::X509 => {
                let mut d = self.start_command();
                d.insert("db", self.source().to_owned());
                Some(d)
            }
            _ => None,
        }
    }

    /// Hands in a reply (to the first command, to the hello's `speculativeAuthenticate`,
    /// or to a `saslContinue`).
    pub fn handle_reply(&mut self, reply: &Document) -> Result<Step, AuthError> {
        let result = self.step(reply);
        if !matches!(result, Ok(Step::Continue(_))) {
            self.state = State::Finished;
        }
        result
    }

    fn step(&mut self, reply: &Document) -> Result<Step, AuthError> {
        check_ok(reply)?;
        match std::mem::replace(&mut self.state, State::Finished) {
            State::ScramFirst(mut client) => {
                let conversation_id = conversation_id(reply)?;
                if reply.get_bool("done").unwrap_or(false) {
                    return Err(AuthError::ServerSignature);
                }
                let payload = payload(reply)?;
                let client_final = client.handle_server_first(&payload, &self.cache)?;
                let next = doc! {
                    "saslContinue": 1,
                    "conversationId": conversation_id.clone(),
                    "payload": binary(client_final),
                };
                self.state = State::ScramFinal {
                    client,
                    conversation_id,
                };
                Ok(Step::Continue(next))
            }
            State::ScramFinal {
                mut client,
                conversation_id,
            } => {
                client.handle_server_final(&payload(reply)?)?;
                if reply.get_bool("done").unwrap_or(false) {
                    return Ok(Step::Done);
                }
                // A server without skipEmptyExchange wants one more, empty, round.
                self.state = State::ScramEmpty;
                Ok(Step::Continue(doc! {
                    "saslContinue": 1,
                    "conversationId": conversation_id,
                    "payload": binary(Vec::new()),
                }))
            }
            State::ScramEmpty => {
                if reply.get_bool("done").unwrap_or(false) {
                    Ok(Step::Done)
                } else {
                    Err(malformed(
                        "the server did not finish after the empty exchange",
                    ))
                }
            }
            State::OneShot => {
                if self.mechanism == Mechanism::Plain && !reply.get_bool("done").unwrap_or(true) {
                    return Err(malformed("PLAIN: the server wants more than one round"));
                }
                Ok(Step::Done)
            }
            State::Finished => Err(malformed("a reply after the conversation ended")),
        }
    }
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("source", &self.source)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn binary(bytes: Vec<u8>) -> Binary {
    Binary {
        subtype: BinarySubtype::Generic,
        bytes,
    }
}

fn malformed(reason: &str) -> AuthError {
    AuthError::Malformed {
        reason: reason.to_owned(),
    }
}

fn check_ok(reply: &Document) -> Result<(), AuthError> {
    let ok = match reply.get("ok") {
        Some(Bson::Double(v)) => *v == 1.0,
        Some(Bson::Int32(v)) => *v == 1,
        Some(Bson::Int64(v)) => *v == 1,
        Some(Bson::Boolean(v)) => *v,
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let code = match reply.get("code") {
        Some(Bson::Int32(c)) => Some(*c),
        Some(Bson::Int64(c)) => i32::try_from(*c).ok(),
        Some(Bson::Double(c)) => Some(*c as i32),
        _ => None,
    };
    Err(AuthError::Server {
        code,
        message: reply
            .get_str("errmsg")
            .unwrap_or("authentication failed")
            .to_owned(),
    })
}

fn conversation_id(reply: &Document) -> Result<Bson, AuthError> {
    match reply.get("conversationId") {
        Some(id @ (Bson::Int32(_) | Bson::Int64(_))) => Ok(id.clone()),
        _ => Err(malformed("the reply has no conversationId")),
    }
}

fn payload(reply: &Document) -> Result<Vec<u8>, AuthError> {
    match reply.get("payload") {
        Some(Bson::Binary(b)) => Ok(b.bytes.clone()),
        // Some servers (and some proxies) send the payload as a base64 string.
        Some(Bson::String(s)) => B64
            .decode(s)
            .map_err(|_| malformed("the payload string is not base64")),
        _ => Err(malformed("the reply has no payload")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(user: &str, pw: &str) -> Credential {
        Credential::new(Some(user.into()), Some(pw.into()), "admin".into(), None)
    }

    #[test]
    fn debug_redacts_password() {
        let c = cred("u", "hunter2-secret");
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"));
        let a = Authenticator::new(&c, Mechanism::Plain, &[0; 24]).unwrap();
        assert!(!format!("{a:?}").contains("hunter2"));
    }

    #[test]
    fn negotiation() {
        assert_eq!(Mechanism::negotiate(None), Mechanism::ScramSha1);
        let both = vec!["SCRAM-SHA-1".to_owned(), "SCRAM-SHA-256".to_owned()];
        assert_eq!(Mechanism::negotiate(Some(&both)), Mechanism::ScramSha256);
        let one = vec!["SCRAM-SHA-1".to_owned()];
        assert_eq!(Mechanism::negotiate(Some(&one)), Mechanism::ScramSha1);
    }

    #[test]
    fn plain_payload_and_x509_command() {
        let a = Authenticator::new(&cred("user", "pencil"), Mechanism::Plain, &[0; 24]).unwrap();
        let cmd = a.start_command();
        assert_eq!(
            cmd.get_binary_generic("payload").unwrap(),
            b"\0user\0pencil"
        );
        assert!(a.speculative_command().is_none());
        let x = Credential::new(Some("CN=me".into()), None, "$external".into(), None);
        let a = Authenticator::new(&x, Mechanism::X509, &[0; 24]).unwrap();
        assert_eq!(
            a.speculative_command().unwrap(),
            doc! { "authenticate": 1, "mechanism": "MONGODB-X509", "user": "CN=me", "db": "$external" }
        );
        let anon = Credential::new(None, None, "$external".into(), None);
        let a = Authenticator::new(&anon, Mechanism::X509, &[0; 24]).unwrap();
        assert_eq!(
            a.start_command(),
            doc! { "authenticate": 1, "mechanism": "MONGODB-X509" }
        );
    }

    #[test]
    fn unsupported_and_missing() {
        let c = cred("u", "p");
        for m in [Mechanism::Gssapi, Mechanism::Aws, Mechanism::Oidc] {
            let e = Authenticator::new(&c, m, &[0; 24]).unwrap_err();
            assert_eq!(e, AuthError::Unsupported(m));
            assert!(e.to_string().contains("not supported"));
        }
        let nopw = Credential::new(Some("u".into()), None, "admin".into(), None);
        assert_eq!(
            Authenticator::new(&nopw, Mechanism::ScramSha256, &[0; 24]).unwrap_err(),
            AuthError::MissingPassword(Mechanism::ScramSha256)
        );
    }

    #[test]
    fn server_refusal_is_typed() {
        let mut a = Authenticator::new(&cred("u", "p"), Mechanism::ScramSha256, &[0; 24]).unwrap();
        let e = a
            .handle_reply(&doc! { "ok": 0.0, "code": 18, "errmsg": "Authentication failed." })
            .unwrap_err();
        assert_eq!(e.code(), Some(18));
        // Nothing more is accepted after a failure.
        assert!(a.handle_reply(&doc! { "ok": 1.0 }).is_err());
    }

    #[test]
    fn done_without_signature_is_refused() {
        let mut a = Authenticator::new(&cred("u", "p"), Mechanism::ScramSha256, &[0; 24]).unwrap();
        let e = a
            .handle_reply(
                &doc! { "ok": 1.0, "conversationId": 1, "done": true, "payload": binary(vec![]) },
            )
            .unwrap_err();
        assert_eq!(e, AuthError::ServerSignature);
    }
}
