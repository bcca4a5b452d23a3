//! Server addresses: `host[:port]`, with IPv6 literals in brackets.

use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// The port a MongoDB server listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 27017;

/// The address of one server: a host name or IP literal and a TCP port.
///
/// The host is kept without brackets and in lower case (host names are case-insensitive),
/// so `"[::1]:27017"` parses to host `"::1"`. [`Display`](fmt::Display) writes it back as
/// `host:port`, putting IPv6 literals in brackets again, so that display and parse round-trip.
///
/// ```
/// use brook_command::ServerAddress;
/// let a: ServerAddress = "[::1]".parse().unwrap();
/// assert_eq!((a.host.as_str(), a.port), ("::1", 27017));
/// assert_eq!(a.to_string(), "[::1]:27017");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerAddress {
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl ServerAddress {
    /// An address from its parts. The host is taken as given (no brackets for IPv6).
    pub fn new(host: impl Into<String>, port: u16) -> ServerAddress {
        ServerAddress {
            host: host.into(),
            port,
        }
    }

    /// Parses `host`, `host:port`, `[ipv6]` or `[ipv6]:port`; the port defaults to
    /// [`DEFAULT_PORT`].
    ///
    /// Refused with [`AddressError`]: an empty host, a port that is not a
    /// number in `1..=65535`, an unbracketed IPv6 literal with a port (`::1:27017` is
    /// ambiguous; a bare `::1` is accepted), a bracketed part that is not an IPv6
    /// address, and Unix domain socket paths (not supported).
    pub fn parse(input: &str) -> Result<ServerAddress, AddressError> {
        let invalid = |reason: &'static str| AddressError {
            address: input.to_owned(),
            reason,
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(invalid("empty address"));
        }
        if s.starts_with('/') || s.ends_with(".sock") {
            return Err(invalid("unix domain sockets are not supported"));
        }

        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let Some(close) = rest.find(']') else {
                return Err(invalid("missing ']' after an IPv6 address"));
            };
            let (inside, after) = rest.split_at(close);
            let after = after.strip_prefix(']').unwrap_or(after);
            if inside.parse::<Ipv6Addr>().is_err() {
                return Err(invalid("the part in brackets is not an IPv6 address"));
            }
            let port = if after.is_empty() {
                None
            } else if let Some(p) = after.strip_prefix(':') {
                Some(p)
            } else {
                return Err(invalid("unexpected characters after ']'"));
            };
            (inside, port)
        } else if s.matches(':').count() > 1 {
            // More than one colon without brackets: only a bare IPv6 literal makes sense.
            if s.parse::<Ipv6Addr>().is_err() {
                return Err(invalid(
                    "an IPv6 address with a port must be written in brackets",
                ));
            }
            (s, None)
        } else if let Some((h, p)) = s.split_once(':') {
            (h, Some(p))
        } else {
            (s, None)
        };

        if host.is_empty() {
            return Err(invalid("empty host"));
        }
        if host
            .chars()
            .any(|c| c.is_whitespace() || c == '/' || c == '@')
        {
            return Err(invalid(
                "the host contains a character a host name cannot have",
            ));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(0) => return Err(invalid("port 0 is not a valid server port")),
                Ok(n) if p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(invalid("the port is not a number in 1..=65535")),
            },
        };
        Ok(ServerAddress {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// True when the host is an IPv6 literal (displayed in brackets).
    pub fn is_ipv6(&self) -> bool {
        self.host.parse::<Ipv6Addr>().is_ok()
    }
}

impl From<SocketAddr> for ServerAddress {
    /// The socket address's IP (IPv6 without brackets) and port.
    fn from(addr: SocketAddr) -> ServerAddress {
        ServerAddress::new(addr.ip().to_string(), addr.port())
    }
}

impl FromStr for ServerAddress {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<ServerAddress, AddressError> {
        ServerAddress::parse(s)
    }
}

impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_ipv6() {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A server address that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid server address {address:?}: {reason}")]
pub struct AddressError {
    /// The text as given.
    pub address: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> (String, u16) {
        let a = ServerAddress::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        (a.host, a.port)
    }

    fn err(s: &str) -> &'static str {
        match ServerAddress::parse(s) {
            Err(AddressError { reason, address }) => {
                assert_eq!(address, s);
                reason
            }
            other => panic!("{s}: expected InvalidAddress, got {other:?}"),
        }
    }

    #[test]
    fn host_with_and_without_port() {
        assert_eq!(ok("localhost"), ("localhost".into(), 27017));
        assert_eq!(ok("localhost:27018"), ("localhost".into(), 27018));
        assert_eq!(ok("Example.COM:1"), ("example.com".into(), 1));
        assert_eq!(ok("10.0.0.1:65535"), ("10.0.0.1".into(), 65535));
        assert_eq!(ok("  db1  "), ("db1".into(), 27017));
    }

    #[test]
    fn ipv6_literals() {
        assert_eq!(ok("[::1]:27017"), ("::1".into(), 27017));
        assert_eq!(ok("[::1]"), ("::1".into(), 27017));
        assert_eq!(ok("[fe80::1:2]:1234"), ("fe80::1:2".into(), 1234));
        assert_eq!(ok("::1"), ("::1".into(), 27017));
        assert_eq!(ok("[2001:DB8::1]:5"), ("2001:db8::1".into(), 5));
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "localhost:27017",
            "[::1]:27018",
            "10.1.2.3:1",
            "[fe80::1]:27017",
        ] {
            let a = ServerAddress::parse(s).unwrap();
            assert_eq!(a.to_string(), s);
            assert_eq!(a.to_string().parse::<ServerAddress>().unwrap(), a);
        }
        assert_eq!(ServerAddress::new("::1", 5).to_string(), "[::1]:5");
        assert!(ServerAddress::new("::1", 5).is_ipv6());
        assert!(!ServerAddress::new("h", 5).is_ipv6());
        let v6: SocketAddr = "[::1]:99".parse().unwrap();
        assert_eq!(ServerAddress::from(v6).to_string(), "[::1]:99");
        let v4: SocketAddr = "127.0.0.1:98".parse().unwrap();
        assert_eq!(ServerAddress::from(v4), ServerAddress::new("127.0.0.1", 98));
    }

    #[test]
    fn refused() {
        assert_eq!(err(""), "empty address");
        assert_eq!(err("   "), "empty address");
        assert_eq!(err(":27017"), "empty host");
        assert_eq!(err("host:"), "the port is not a number in 1..=65535");
        assert_eq!(err("host:0"), "port 0 is not a valid server port");
        assert_eq!(err("host:65536"), "the port is not a number in 1..=65535");
        assert_eq!(err("host:+5"), "the port is not a number in 1..=65535");
        assert_eq!(err("host:port"), "the port is not a number in 1..=65535");
        assert_eq!(err("[::1"), "missing ']' after an IPv6 address");
        assert_eq!(err("[::1]x"), "unexpected characters after ']'");
        assert_eq!(err("[::1]:"), "the port is not a number in 1..=65535");
        assert_eq!(
            err("[host]:1"),
            "the part in brackets is not an IPv6 address"
        );
        assert_eq!(
            err("::1:27017:x"),
            "an IPv6 address with a port must be written in brackets"
        );
        assert_eq!(
            err("/tmp/mongodb-27017.sock"),
            "unix domain sockets are not supported"
        );
        assert_eq!(
            err("a b:1"),
            "the host contains a character a host name cannot have"
        );
        assert_eq!(
            err("user@host"),
            "the host contains a character a host name cannot have"
        );
    }
}
