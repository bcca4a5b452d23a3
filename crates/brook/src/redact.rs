//! Connection strings fit to show: the password and every secret-bearing option replaced.

/// What a secret is replaced with.
const MASK: &str = "****";

/// URI options whose value is a secret (lowercase).
const SECRET_OPTIONS: [&str; 2] = ["tlscertificatekeyfilepassword", "proxypassword"];

/// `uri` with its password (the part of the userinfo after the first `:`) and the
/// values of `tlsCertificateKeyFilePassword` and `proxyPassword` replaced by `****`, so
/// that it can go into an error, a log line or a status display. Works on any string,
/// valid connection string or not: when in doubt it hides more, never less (everything
/// between the first `:` after the scheme and the last `@` is taken for the password).
///
/// ```
/// assert_eq!(
///     brook::redact_uri("mongodb://app:s3cret@db.example.com/?replicaSet=rs0"),
///     "mongodb://app:****@db.example.com/?replicaSet=rs0"
/// );
/// ```
pub fn redact_uri(uri: &str) -> String {
    let (scheme, rest) = match uri.find("://") {
        Some(i) => uri.split_at(i + 3),
        None => ("", uri),
    };
    let mut out = String::with_capacity(uri.len());
    out.push_str(scheme);
    let rest = match rest.rfind('@') {
        Some(at) => {
            let (userinfo, after) = rest.split_at(at);
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..=colon]);
                    out.push_str(MASK);
                }
                None => out.push_str(userinfo),
            }
            after
        }
        None => rest,
    };
    match rest.find('?') {
        Some(q) => {
            out.push_str(&rest[..=q]);
            let query = &rest[q + 1..];
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                match pair.split_once('=') {
                    Some((key, _))
                        if SECRET_OPTIONS.contains(&key.to_ascii_lowercase().as_str()) =>
                    {
                        out.push_str(key);
                        out.push('=');
                        out.push_str(MASK);
                    }
                    _ => out.push_str(pair),
                }
            }
        }
        None => out.push_str(rest),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact_uri;

    #[test]
    fn hides_the_password_and_secret_options() {
        for (uri, shown) in [
            (
                "mongodb://u:pw@h:27017/db?w=1",
                "mongodb://u:****@h:27017/db?w=1",
            ),
            ("mongodb://u@h/", "mongodb://u@h/"),
            ("mongodb://h/?appName=x", "mongodb://h/?appName=x"),
            (
                "mongodb+srv://u:p%40ss@cluster.example.com/",
                "mongodb+srv://u:****@cluster.example.com/",
            ),
            // An unescaped `@` or `:` in the password: everything up to the last `@`.
            ("mongodb://u:a@b:c@h/", "mongodb://u:****@h/"),
            (
                "mongodb://h/?tls=true&tlsCertificateKeyFilePassword=k3y&ProxyPassword=x",
                "mongodb://h/?tls=true&tlsCertificateKeyFilePassword=****&ProxyPassword=****",
            ),
            ("not a uri u:pw@h", "not a uri u:****@h"),
        ] {
            assert_eq!(redact_uri(uri), shown, "{uri}");
        }
    }
}
