//! Shared helpers for brook's integration tests (`tests/it`).
//!
//! The deployment under test is named by `MONGODB_URI`. `cargo xtask test` sets it to the
//! nx-27017 peer it starts; `MONGODB_URI=… cargo xtask test --live` points the same tests at
//! any deployment. When it is unset the tests fail with a message saying how to run them:
//! integration tests never skip silently.
#![forbid(unsafe_code)]

/// The environment variable that names the deployment under test.
pub const MONGODB_URI_VAR: &str = "MONGODB_URI";

/// The port a host without one listens on.
pub const DEFAULT_PORT: u16 = 27017;

/// Why a connection string's seed list could not be read.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeedListError {
    /// The string starts with neither `mongodb://` nor `mongodb+srv://`.
    #[error("a connection string starts with `mongodb://` or `mongodb+srv://`")]
    Scheme,
    /// `mongodb+srv://` needs a DNS SRV lookup, which std cannot do.
    #[error("`mongodb+srv://` seed lists need a DNS SRV lookup; give the hosts with `mongodb://`")]
    Srv,
    /// The host list is empty, or one of its hosts is.
    #[error("empty host in the seed list")]
    EmptyHost,
    /// An IPv6 literal without its closing `]`, or with junk after it.
    #[error("malformed IPv6 host `{0}`")]
    Ipv6(String),
    /// A port that is not a number in 1..=65535.
    #[error("bad port `{0}`")]
    Port(String),
    /// A Unix domain socket path, which these helpers do not connect to.
    #[error("Unix domain socket hosts are not supported: `{0}`")]
    UnixSocket(String),
}

/// The connection string of the deployment under test.
///
/// # Panics
///
/// When `MONGODB_URI` is unset or empty, with a message saying how to run the tests.
pub fn mongodb_uri() -> String {
    match std::env::var(MONGODB_URI_VAR) {
        Ok(uri) if !uri.trim().is_empty() => uri,
        _ => panic!(
            "{MONGODB_URI_VAR} is not set: the integration tests need a deployment. Run them with \
             `cargo xtask test` (which starts an nx-27017 peer and sets it), or set \
             {MONGODB_URI_VAR}=mongodb://host:port/ (e.g. after `cargo xtask peer start`)"
        ),
    }
}

/// The seed list of a `mongodb://` connection string, as `host:port` strings ready for
/// [`std::net::ToSocketAddrs`] (IPv6 hosts keep their brackets; a missing port is
/// [`DEFAULT_PORT`]). User info, the database and the options are ignored.
pub fn seed_addresses(uri: &str) -> Result<Vec<String>, SeedListError> {
    if uri.starts_with("mongodb+srv://") {
        return Err(SeedListError::Srv);
    }
    let rest = uri
        .strip_prefix("mongodb://")
        .ok_or(SeedListError::Scheme)?;
    // The authority ends at the first '/' or '?'; '@', '/' and ':' inside user info must be
    // percent-encoded, so the last '@' ends the user info.
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let hosts = authority
        .rsplit_once('@')
        .map_or(authority, |(_userinfo, hosts)| hosts);
    hosts.split(',').map(seed_address).collect()
}

fn seed_address(host: &str) -> Result<String, SeedListError> {
    if host.is_empty() {
        return Err(SeedListError::EmptyHost);
    }
    if host.ends_with(".sock") {
        return Err(SeedListError::UnixSocket(host.to_owned()));
    }
    let (name, port) = if let Some(v6) = host.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| SeedListError::Ipv6(host.to_owned()))?;
        if addr.is_empty() {
            return Err(SeedListError::Ipv6(host.to_owned()));
        }
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| SeedListError::Ipv6(host.to_owned()))?,
            ),
        };
        (format!("[{addr}]"), port)
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name.to_owned(), Some(port)),
            None => (host.to_owned(), None),
        }
    };
    if name.is_empty() {
        return Err(SeedListError::EmptyHost);
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| SeedListError::Port(p.to_owned()))?,
    };
    Ok(format!("{name}:{port}"))
}

/// The first seed of `uri`, as `host:port`.
///
/// # Panics
///
/// When the seed list cannot be read, naming the connection string and the reason.
pub fn first_seed_address(uri: &str) -> String {
    match seed_addresses(uri) {
        Ok(seeds) => match seeds.into_iter().next() {
            Some(seed) => seed,
            None => panic!("{MONGODB_URI_VAR}={uri} names no host"),
        },
        Err(e) => panic!("cannot read the hosts of {MONGODB_URI_VAR}={uri}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds(uri: &str) -> Result<Vec<String>, SeedListError> {
        seed_addresses(uri)
    }

    #[test]
    fn hosts_ports_and_defaults() {
        assert_eq!(
            seeds("mongodb://127.0.0.1:40989/").unwrap(),
            ["127.0.0.1:40989"]
        );
        assert_eq!(seeds("mongodb://localhost").unwrap(), ["localhost:27017"]);
        assert_eq!(
            seeds("mongodb://a:1,b,c:3/db?replicaSet=rs0").unwrap(),
            ["a:1", "b:27017", "c:3"]
        );
        assert_eq!(seeds("mongodb://h:2?tls=true").unwrap(), ["h:2"]);
    }

    #[test]
    fn user_info_is_skipped() {
        assert_eq!(
            seeds("mongodb://us%40er:p%3Ass@db.example:27018/admin").unwrap(),
            ["db.example:27018"]
        );
    }

    #[test]
    fn ipv6_hosts_keep_their_brackets() {
        assert_eq!(
            seeds("mongodb://[::1]:27019,[fe80::1]/").unwrap(),
            ["[::1]:27019", "[fe80::1]:27017"]
        );
        assert_eq!(
            seeds("mongodb://[::1"),
            Err(SeedListError::Ipv6("[::1".into()))
        );
        assert_eq!(
            seeds("mongodb://[::1]x"),
            Err(SeedListError::Ipv6("[::1]x".into()))
        );
        assert_eq!(seeds("mongodb://[]"), Err(SeedListError::Ipv6("[]".into())));
    }

    #[test]
    fn bad_strings_are_typed_errors() {
        assert_eq!(seeds("http://x"), Err(SeedListError::Scheme));
        assert_eq!(
            seeds("mongodb+srv://cluster0.example"),
            Err(SeedListError::Srv)
        );
        assert_eq!(seeds("mongodb://"), Err(SeedListError::EmptyHost));
        assert_eq!(seeds("mongodb://a,,b"), Err(SeedListError::EmptyHost));
        assert_eq!(seeds("mongodb://:27017"), Err(SeedListError::EmptyHost));
        assert_eq!(seeds("mongodb://h:0"), Err(SeedListError::Port("0".into())));
        assert_eq!(
            seeds("mongodb://h:65536"),
            Err(SeedListError::Port("65536".into()))
        );
        assert_eq!(seeds("mongodb://h:x"), Err(SeedListError::Port("x".into())));
        assert_eq!(
            seeds("mongodb://%2Ftmp%2Fmongodb-27017.sock"),
            Err(SeedListError::UnixSocket(
                "%2Ftmp%2Fmongodb-27017.sock".into()
            ))
        );
    }

    #[test]
    #[should_panic(expected = "cannot read the hosts")]
    fn first_seed_panics_with_the_reason() {
        first_seed_address("mongodb+srv://cluster0.example");
    }
}
