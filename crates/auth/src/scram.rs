//! The SCRAM client conversation (RFC 5802 as the MongoDB Authentication specification
//! uses it): client-first, server-first → client-final, server-final checked. No IO:
//! messages in and out are byte strings, the nonce is given.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::AuthError;

/// The smallest iteration count the specification lets a client accept.
pub const MIN_ITERATIONS: u32 = 4096;

/// The hash a SCRAM mechanism uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ScramMechanism {
    /// SCRAM-SHA-1 (the password is MongoDB's digest of user and password).
    Sha1,
    /// SCRAM-SHA-256 (the password is SASLprep'd).
    Sha256,
}

impl ScramMechanism {
    /// The mechanism's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha1 => "SCRAM-SHA-1",
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
        }
    }

    /// The password SCRAM salts: for SHA-1 the hex MD5 of `user:mongo:password`, for
    /// SHA-256 the password after SASLprep.
    pub fn prepare_password(self, username: &str, password: &str) -> Result<String, AuthError> {
        match self {
            ScramMechanism::Sha1 => Ok(mongo_password_digest(username, password)),
            ScramMechanism::Sha256 => sasl_prep(password),
        }
    }

    /// HMAC with this mechanism's hash.
    pub fn hmac(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha1 => hmac_with::<Hmac<Sha1>>(key, message),
            ScramMechanism::Sha256 => hmac_with::<Hmac<Sha256>>(key, message),
        }
    }

    /// The mechanism's hash.
    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha1 => Sha1::digest(data).to_vec(),
            ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    /// `Hi()` of RFC 5802: PBKDF2 with this mechanism's HMAC.
    pub fn salt_password(self, prepared_password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramMechanism::Sha1 => {
                let mut out = [0u8; 20];
                pbkdf2::pbkdf2_hmac::<Sha1>(
                    prepared_password.as_bytes(),
                    salt,
                    iterations,
                    &mut out,
                );
                out.to_vec()
            }
            ScramMechanism::Sha256 => {
                let mut out = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(
                    prepared_password.as_bytes(),
                    salt,
                    iterations,
                    &mut out,
                );
                out.to_vec()
            }
        }
    }
}

fn hmac_with<M: Mac + KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    match <M as KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(message);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// MongoDB's SCRAM-SHA-1 password: `hex(md5(username + ":mongo:" + password))`.
pub fn mongo_password_digest(username: &str, password: &str) -> String {
    let mut md5 = Md5::new();
    md5.update(username.as_bytes());
    md5.update(b":mongo:");
    md5.update(password.as_bytes());
    let digest = md5.finalize();
    let mut hex = String::with_capacity(32);
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// SASLprep (RFC 4013) of a password, as SCRAM-SHA-256 requires. The error never
/// names the offending character (it is part of a secret).
pub fn sasl_prep(password: &str) -> Result<String, AuthError> {
    stringprep::saslprep(password)
        .map(|p| p.into_owned())
        .map_err(|_| AuthError::SaslPrep)
}

/// A client nonce from 24 random bytes (base64, as the other drivers send).
pub fn nonce_from_random(random: &[u8; 24]) -> String {
    B64.encode(random)
}

/// `saslname` of RFC 5802: `=` and `,` escaped.
fn escape_username(username: &str) -> String {
    username.replace('=', "=3D").replace(',', "=2C")
}

/// Salted passwords already computed, keyed by (mechanism, hash of the prepared
/// password, salt, iteration count), so that opening another connection with the same
/// credential does not run PBKDF2 again. Shared by the clones of a
/// [`Credential`](crate::Credential).
#[derive(Default)]
pub struct SaltedPasswordCache {
    entries: Mutex<HashMap<CacheKey, Vec<u8>>>,
    computed: AtomicU64,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    mechanism: ScramMechanism,
    password_hash: [u8; 32],
    salt: Vec<u8>,
    iterations: u32,
}

/// Entries kept at most (a client talks to few deployments; a full cache is emptied).
const CACHE_LIMIT: usize = 64;

impl fmt::Debug for SaltedPasswordCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaltedPasswordCache")
            .field("computed", &self.computed())
            .finish_non_exhaustive()
    }
}

impl SaltedPasswordCache {
    /// An empty cache.
    pub fn new() -> SaltedPasswordCache {
        SaltedPasswordCache::default()
    }

    /// How many times PBKDF2 ran through this cache (a miss each).
    pub fn computed(&self) -> u64 {
        self.computed.load(Ordering::Relaxed)
    }

    /// The salted password, computed once per key.
    pub fn salted_password(
        &self,
        mechanism: ScramMechanism,
        prepared_password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Vec<u8> {
        let mut password_hash = [0u8; 32];
        password_hash.copy_from_slice(&Sha256::digest(prepared_password.as_bytes()));
        let key = CacheKey {
            mechanism,
            password_hash,
            salt: salt.to_vec(),
            iterations,
        };
        if let Ok(entries) = self.entries.lock()
            && let Some(found) = entries.get(&key)
        {
            return found.clone();
        }
        let salted = mechanism.salt_password(prepared_password, salt, iterations);
        self.computed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CACHE_LIMIT {
                entries.clear();
            }
            entries.insert(key, salted.clone());
        }
        salted
    }
}

/// Where a [`ScramClient`] is in its conversation.
#[derive(Clone, PartialEq, Eq)]
enum Phase {
    /// Client-first made; waiting for server-first.
    Started,
    /// Client-final made; waiting for server-final, which must carry this signature.
    FinalSent { server_signature: Vec<u8> },
    /// The server proved it knows the password.
    Verified,
}

/// One SCRAM conversation on the client side.
///
/// ```
/// use brook_auth::scram::{ScramClient, ScramMechanism, SaltedPasswordCache};
/// let mut c = ScramClient::new(ScramMechanism::Sha256, "user", "pencil",
///     "rOprNGfwEbeRWgbNEkqO".into()).unwrap();
/// assert_eq!(c.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
/// let cache = SaltedPasswordCache::new();
/// let final_msg = c.handle_server_first(
///     b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
///     &cache).unwrap();
/// assert!(final_msg.ends_with(b",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="));
/// c.handle_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").unwrap();
/// assert!(c.is_verified());
/// ```
pub struct ScramClient {
    mechanism: ScramMechanism,
    prepared_password: String,
    client_nonce: String,
    client_first_bare: String,
    phase: Phase,
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramClient")
            .field("mechanism", &self.mechanism)
            .field("client_first_bare", &self.client_first_bare)
            .field("verified", &self.is_verified())
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// Starts a conversation for `username` (not SASLprep'd: the specification says so
    /// for both mechanisms) with `password` (prepared here) and the client nonce.
    pub fn new(
        mechanism: ScramMechanism,
        username: &str,
        password: &str,
        client_nonce: String,
    ) -> Result<ScramClient, AuthError> {
        let prepared_password = mechanism.prepare_password(username, password)?;
        let client_first_bare = format!("n={},r={client_nonce}", escape_username(username));
        Ok(ScramClient {
            mechanism,
            prepared_password,
            client_nonce,
            client_first_bare,
            phase: Phase::Started,
        })
    }

    /// The mechanism.
    pub fn mechanism(&self) -> ScramMechanism {
        self.mechanism
    }

    /// The client-first message (`n,,` GS2 header and the bare message).
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// Reads the server-first message and returns the client-final message (with the
    /// proof). The salted password comes from `cache` when it holds one.
    pub fn handle_server_first(
        &mut self,
        server_first: &[u8],
        cache: &SaltedPasswordCache,
    ) -> Result<Vec<u8>, AuthError> {
        if self.phase != Phase::Started {
            return Err(malformed("a second server-first message"));
        }
        let text = std::str::from_utf8(server_first)
            .map_err(|_| malformed("server-first message is not UTF-8"))?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for part in text.split(',') {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| malformed("server-first attribute without `=`"))?;
            match key {
                "m" => return Err(malformed("server-first asks for a mandatory extension")),
                "r" => nonce = Some(value),
                "s" => salt = Some(value),
                "i" => iterations = Some(value),
                "e" => return Err(server_refused(value)),
                _ => {}
            }
        }
        let nonce = nonce.ok_or_else(|| malformed("server-first has no nonce (r=)"))?;
        let salt = salt.ok_or_else(|| malformed("server-first has no salt (s=)"))?;
        let iterations = iterations.ok_or_else(|| malformed("server-first has no i="))?;
        if !nonce.starts_with(&self.client_nonce) || nonce.len() <= self.client_nonce.len() {
            return Err(AuthError::NonceMismatch);
        }
        let salt = B64
            .decode(salt)
            .map_err(|_| malformed("server-first salt is not base64"))?;
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| malformed("server-first iteration count is not a number"))?;
        if iterations < MIN_ITERATIONS {
            return Err(AuthError::IterationCount(iterations));
        }
        let m = self.mechanism;
        let salted = cache.salted_password(m, &self.prepared_password, &salt, iterations);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let client_key = m.hmac(&salted, b"Client Key");
        let stored_key = m.hash(&client_key);
        let client_signature = m.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = m.hmac(&salted, b"Server Key");
        let server_signature = m.hmac(&server_key, auth_message.as_bytes());
        self.phase = Phase::FinalSent { server_signature };
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server-final message: the server must prove it knows the password
    /// (`v=` its signature). Anything else refuses the server.
    pub fn handle_server_final(&mut self, server_final: &[u8]) -> Result<(), AuthError> {
        let Phase::FinalSent { server_signature } = &self.phase else {
            return Err(malformed("server-final message out of turn"));
        };
        let text = std::str::from_utf8(server_final)
            .map_err(|_| malformed("server-final message is not UTF-8"))?;
        let mut verifier = None;
        for part in text.split(',') {
            match part.split_once('=') {
                Some(("e", reason)) => return Err(server_refused(reason)),
                Some(("v", v)) => verifier = Some(v),
                _ => {}
            }
        }
        let verifier = verifier.ok_or(AuthError::ServerSignature)?;
        let got = B64
            .decode(verifier)
            .map_err(|_| AuthError::ServerSignature)?;
        // Compared without an early exit.
        let same = got.len() == server_signature.len()
            && got
                .iter()
                .zip(server_signature)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return Err(AuthError::ServerSignature);
        }
        self.phase = Phase::Verified;
        Ok(())
    }

    /// True once the server's signature was checked.
    pub fn is_verified(&self) -> bool {
        self.phase == Phase::Verified
    }
}

fn malformed(reason: &str) -> AuthError {
    AuthError::Malformed {
        reason: reason.to_owned(),
    }
}

fn server_refused(reason: &str) -> AuthError {
    AuthError::Server {
        code: None,
        message: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_escaping() {
        let c = ScramClient::new(ScramMechanism::Sha256, "a=b,c", "p", "N".into()).unwrap();
        assert_eq!(c.client_first(), b"n,,n=a=3Db=2Cc,r=N");
    }

    #[test]
    fn refuses_short_iterations_and_foreign_nonce() {
        let cache = SaltedPasswordCache::new();
        let mut c = ScramClient::new(ScramMechanism::Sha256, "u", "p", "abc".into()).unwrap();
        assert!(matches!(
            c.handle_server_first(b"r=abcXYZ,s=AAAA,i=1000", &cache),
            Err(AuthError::IterationCount(1000))
        ));
        let mut c = ScramClient::new(ScramMechanism::Sha256, "u", "p", "abc".into()).unwrap();
        assert!(matches!(
            c.handle_server_first(b"r=zzzXYZ,s=AAAA,i=4096", &cache),
            Err(AuthError::NonceMismatch)
        ));
        let mut c = ScramClient::new(ScramMechanism::Sha256, "u", "p", "abc".into()).unwrap();
        assert!(matches!(
            c.handle_server_first(b"r=abc,s=AAAA,i=4096", &cache),
            Err(AuthError::NonceMismatch)
        ));
    }

    #[test]
    fn final_before_first_is_refused() {
        let mut c = ScramClient::new(ScramMechanism::Sha1, "u", "p", "abc".into()).unwrap();
        assert!(c.handle_server_final(b"v=AAAA").is_err());
        assert!(!c.is_verified());
    }

    #[test]
    fn cache_computes_once_per_key() {
        let cache = SaltedPasswordCache::new();
        let a = cache.salted_password(ScramMechanism::Sha256, "p", b"salt", 4096);
        let b = cache.salted_password(ScramMechanism::Sha256, "p", b"salt", 4096);
        assert_eq!(a, b);
        assert_eq!(cache.computed(), 1);
        cache.salted_password(ScramMechanism::Sha256, "q", b"salt", 4096);
        cache.salted_password(ScramMechanism::Sha256, "p", b"salt", 4097);
        cache.salted_password(ScramMechanism::Sha1, "p", b"salt", 4096);
        cache.salted_password(ScramMechanism::Sha256, "p", b"pepper", 4096);
        assert_eq!(cache.computed(), 5);
    }
}
