//! Authentication on a new connection, after the hello (the MongoDB Authentication
//! specification's handshake rules). The conversation itself is `brook-auth`'s, without
//! IO; this module chooses the mechanism, puts `saslSupportedMechs` and
//! `speculativeAuthenticate` in the hello, and shuttles the commands.
//!
//! * No mechanism given: the hello asks for `saslSupportedMechs: "<source>.<user>"` and
//!   speculates with SCRAM-SHA-256; when the server does not answer the speculation, the
//!   mechanism is SCRAM-SHA-256 if the server lists it, SCRAM-SHA-1 otherwise.
//! * SCRAM and MONGODB-X509 speculate in the hello; a server that answers continues
//!   from there (`saslContinue`), one that ignores it gets `saslStart` / `authenticate`.
//! * PLAIN: `saslStart` against the credential's source (`$external` by default).
//! * GSSAPI, MONGODB-AWS, MONGODB-OIDC: refused before anything is sent.
//!
//! Failures are [`ConnError::Auth`]: mechanism and user named, the password never.

use brook_auth::{AuthError, Authenticator, Credential, Mechanism, Step};
use brook_command::{Hello, ServerAddress};
use bson::Document;

use crate::error::ConnError;

/// An authentication prepared before the hello.
pub(crate) struct Pending {
    /// The speculative conversation, when one was put in the hello.
    speculative: Option<Authenticator>,
}

/// The failure of authenticating `credential` with `mechanism`.
pub(crate) fn auth_error(
    address: &ServerAddress,
    mechanism: Mechanism,
    credential: &Credential,
    source: AuthError,
) -> ConnError {
    ConnError::Auth {
        address: address.clone(),
        mechanism: mechanism.name(),
        user: credential.username().map(str::to_owned),
        source,
    }
}

fn random_nonce(address: &ServerAddress) -> Result<[u8; 24], ConnError> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| ConnError::Io {
        address: address.clone(),
        source: std::io::Error::other(format!("no randomness for the SCRAM nonce: {e}")),
        wire_version: None,
    })?;
    Ok(bytes)
}

fn authenticator(
    address: &ServerAddress,
    credential: &Credential,
    mechanism: Mechanism,
) -> Result<Authenticator, ConnError> {
    let random = random_nonce(address)?;
    Authenticator::new(credential, mechanism, &random)
        .map_err(|e| auth_error(address, mechanism, credential, e))
}

/// Fills in the hello's `saslSupportedMechs` and `speculativeAuthenticate`; refuses an
/// unsupported mechanism before anything is sent.
pub(crate) fn prepare(
    address: &ServerAddress,
    credential: &Credential,
    hello: &mut Hello,
) -> Result<Pending, ConnError> {
    let given = credential.mechanism();
    if let Some(m) = given
        && !m.is_supported()
    {
        return Err(auth_error(
            address,
            m,
            credential,
            AuthError::Unsupported(m),
        ));
    }
    let speculative = match given {
        Some(m) => Some(authenticator(address, credential, m)?),
        None => {
            hello.sasl_supported_mechs = credential.sasl_supported_mechs_name();
            // A password SASLprep refuses may still do for SCRAM-SHA-1: then no speculation.
            authenticator(address, credential, Mechanism::ScramSha256).ok()
        }
    };
    hello.speculative_authenticate = speculative
        .as_ref()
        .and_then(Authenticator::speculative_command);
    let speculative = speculative.filter(|a| a.speculative_command().is_some());
    Ok(Pending { speculative })
}

/// Where the conversation starts after the hello: from the hello's
/// `speculativeAuthenticate` reply when the server gave one, else from the first command
/// of the credential's (or the negotiated) mechanism.
pub(crate) fn start(
    address: &ServerAddress,
    credential: &Credential,
    pending: Pending,
    speculative_reply: Option<Document>,
    sasl_supported_mechs: Option<&[String]>,
) -> Result<(Authenticator, Step), ConnError> {
    match (pending.speculative, speculative_reply) {
        (Some(mut auth), Some(mut reply)) => {
            // The hello's sub-document has no `ok` of its own: the hello succeeded.
            reply.insert("ok", 1.0);
            let step = next(address, credential, &mut auth, &reply)?;
            Ok((auth, step))
        }
        (speculative, _) => {
            let mechanism = credential
                .mechanism()
                .unwrap_or_else(|| Mechanism::negotiate(sasl_supported_mechs));
            let auth = match speculative {
                Some(a) if a.mechanism() == mechanism => a,
                _ => authenticator(address, credential, mechanism)?,
            };
            let first = auth.start_command();
            Ok((auth, Step::Continue(first)))
        }
    }
}

/// Hands one reply to the conversation.
pub(crate) fn next(
    address: &ServerAddress,
    credential: &Credential,
    auth: &mut Authenticator,
    reply: &Document,
) -> Result<Step, ConnError> {
    auth.handle_reply(reply)
        .map_err(|e| auth_error(address, auth.mechanism(), credential, e))
}
