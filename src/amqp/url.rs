//! Broker URLs: validated once at start so that a typo is refused with its place in the config,
//! and shown everywhere (logs, errors) with the password hidden.

use std::fmt;

/// An `amqp://` or `amqps://user:password@host:port/vhost?options` URL that amiquip will accept.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    raw: String,
    /// `amqps://`: TLS, with the broker's certificate checked against `host`.
    tls: bool,
    /// `auth_mechanism=external`: the client certificate authenticates, not a password.
    external: bool,
    host: String,
    port: u16,
    has_password: bool,
    /// User and password, percent-decoded; `None` when the URL names no user.
    credentials: Option<(String, String)>,
    /// The vhost, percent-decoded; `/` when the URL has no path or an empty one.
    vhost: String,
    /// `heartbeat`, `channel_max` and `connection_timeout` given in the URL.
    options: Vec<(String, u64)>,
}

/// Why a broker URL was refused. No variant carries text from the URL but a well-formed scheme:
/// a mistyped URL may have its password anywhere, and the message must not show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// A scheme other than `amqp` and `amqps`.
    Scheme(String),
    /// Nothing that reads as `scheme://`.
    NoScheme,
    /// No host between `@` and the port or path.
    MissingHost,
    /// The port is not a number from 1 to 65535.
    Port,
    /// More than one path segment: the path names exactly one vhost.
    Path,
    /// A query option amiquip does not know.
    UnknownOption,
    /// A known option whose value is not a number in its range.
    OptionValue(&'static str),
    /// A broken `%XX` escape in the user, password or vhost.
    Encoding,
    /// `auth_mechanism=external` on `amqp://`: a client certificate needs TLS.
    ExternalWithoutTls,
}

/// What to check when a part looks wrong: characters that end a part early.
const ENCODE_HINT: &str = "a '/', '?', '@' or '%' in the user or password must be percent-encoded";

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::Scheme(s) => {
                write!(f, "scheme {s:?} is not supported: use amqp:// or amqps://")
            }
            UrlError::NoScheme => f.write_str("the URL must start with amqp:// or amqps://"),
            UrlError::MissingHost => write!(f, "the URL names no host ({ENCODE_HINT})"),
            UrlError::Port => write!(
                f,
                "the port is not a number from 1 to 65535 ({ENCODE_HINT})"
            ),
            UrlError::Path => write!(
                f,
                "the path must name one vhost, like /myvhost ({ENCODE_HINT})"
            ),
            UrlError::UnknownOption => write!(
                f,
                "an option is not one of heartbeat, channel_max, connection_timeout, \
                 auth_mechanism ({ENCODE_HINT})"
            ),
            UrlError::OptionValue("auth_mechanism") => {
                f.write_str("option auth_mechanism must be plain or external")
            }
            UrlError::OptionValue(key) => write!(f, "option {key} needs a whole number in range"),
            UrlError::Encoding => {
                f.write_str("a %-escape in the user, password or vhost is broken")
            }
            UrlError::ExternalWithoutTls => f.write_str(
                "auth_mechanism=external logs in with a client certificate, which needs amqps://",
            ),
        }
    }
}

impl std::error::Error for UrlError {}

impl BrokerUrl {
    pub fn parse(raw: &str) -> Result<BrokerUrl, UrlError> {
        let raw = raw.trim();
        let (tls, rest) = match raw.split_once("://") {
            Some(("amqp", rest)) => (false, rest),
            Some(("amqps", rest)) => (true, rest),
            Some((scheme, _)) if is_scheme(scheme) => {
                return Err(UrlError::Scheme(scheme.to_string()))
            }
            _ => return Err(UrlError::NoScheme),
        };
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b, q),
            None => (rest, ""),
        };
        let (authority, path) = match before_query.find('/') {
            Some(i) => before_query.split_at(i),
            None => (before_query, ""),
        };
        if path.len() > 1 && path[1..].contains('/') {
            return Err(UrlError::Path);
        }
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (host, port) = split_host_port(hostport, if tls { 5671 } else { 5672 })?;
        if host.is_empty() {
            return Err(UrlError::MissingHost);
        }
        let mut options = Vec::new();
        let mut external = false;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if key == "auth_mechanism" {
                external = match value.to_ascii_lowercase().as_str() {
                    "plain" => false,
                    "external" => true,
                    _ => return Err(UrlError::OptionValue("auth_mechanism")),
                };
                continue;
            }
            let (key, limit) = match key {
                "heartbeat" => ("heartbeat", u64::from(u16::MAX)),
                "channel_max" => ("channel_max", u64::from(u16::MAX)),
                "connection_timeout" => ("connection_timeout", u64::MAX),
                _ => return Err(UrlError::UnknownOption),
            };
            match value.parse::<u64>() {
                Ok(n) if n <= limit => options.push((key.to_string(), n)),
                _ => return Err(UrlError::OptionValue(key)),
            }
        }
        if external && !tls {
            return Err(UrlError::ExternalWithoutTls);
        }
        let decode = |text: &str| {
            crate::http::query::percent_decode(text)
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or(UrlError::Encoding)
        };
        let credentials = match userinfo {
            Some(info) => {
                let (user, password) = info.split_once(':').unwrap_or((info, "guest"));
                Some((decode(user)?, decode(password)?))
            }
            None => None,
        };
        let vhost = match path.strip_prefix('/') {
            None | Some("") => "/".to_string(),
            Some(name) => decode(name)?,
        };
        Ok(BrokerUrl {
            raw: raw.to_string(),
            tls,
            external,
            host: host.to_string(),
            port,
            has_password: userinfo.is_some_and(|u| u.contains(':')),
            credentials,
            vhost,
            options,
        })
    }

    /// The URL exactly as configured (with its password): for dialling and for `-c` only.
    pub fn as_configured(&self) -> &str {
        &self.raw
    }

    /// `text` with this URL's password replaced, for error messages of libraries that print
    /// the URL they were given.
    pub fn scrub(&self, text: &str) -> String {
        match self.password() {
            Some(password) if !password.is_empty() => text.replace(password, "***"),
            _ => text.to_string(),
        }
    }

    fn password(&self) -> Option<&str> {
        let rest = self.raw.split_once("://")?.1;
        let userinfo = &rest[..rest.rfind('@')?];
        Some(userinfo.split_once(':')?.1)
    }

    /// `host:port`, for messages.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Whether the URL is `amqps://`.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// Whether the client certificate authenticates (`auth_mechanism=external`).
    pub fn external_auth(&self) -> bool {
        self.external
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// User and password to log in with, if the URL names a user.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The user the connection logs in as, when known here: the URL's, or amiquip's `guest`
    /// without one; `None` with a client certificate (the broker takes the name from it).
    pub fn login_user(&self) -> Option<&str> {
        if self.external {
            return None;
        }
        Some(self.credentials().map_or("guest", |(user, _)| user))
    }

    pub fn vhost(&self) -> &str {
        &self.vhost
    }

    /// A tuning option given in the URL (`heartbeat`, `channel_max`, `connection_timeout`).
    pub fn option(&self, key: &str) -> Option<u64> {
        self.options.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

/// `%XX` decoding as URLs use it (a `+` stays a `+`); `None` for a broken escape or non-UTF-8.
/// A URL scheme: a letter, then letters, digits, `+`, `-` or `.`.
fn is_scheme(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_alphabetic())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn split_host_port(hostport: &str, default_port: u16) -> Result<(&str, u16), UrlError> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => return Err(UrlError::MissingHost),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        None | Some("") => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(UrlError::Port),
        },
    };
    Ok((host, port))
}

/// Shown with the password replaced, so that a URL can go into any log line.
impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.has_password {
            return f.write_str(&self.raw);
        }
        let (scheme, rest) = self.raw.split_once("://").unwrap_or(("amqp", &self.raw));
        let at = rest.rfind('@').unwrap_or(0);
        let user = rest[..at].split(':').next().unwrap_or("");
        write!(f, "{scheme}://{user}:***@{}", &rest[at + 1..])
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_original_default() {
        let url = BrokerUrl::parse("amqp://guest:guest@127.0.0.1:5672/").unwrap();
        assert_eq!(url.address(), "127.0.0.1:5672");
        assert_eq!(url.to_string(), "amqp://guest:***@127.0.0.1:5672/");
        assert_eq!(url.as_configured(), "amqp://guest:guest@127.0.0.1:5672/");
    }

    #[test]
    fn defaults_the_port_and_hides_passwords_with_at_signs() {
        let url = BrokerUrl::parse("amqp://u:p%40ss@broker/vh").unwrap();
        assert_eq!(url.address(), "broker:5672");
        assert_eq!(url.to_string(), "amqp://u:***@broker/vh");
        assert!(!url.to_string().contains("p%40ss"));
        assert_eq!(
            url.scrub("failed: amqp://u:p%40ss@broker/vh"),
            "failed: amqp://u:***@broker/vh"
        );
    }

    #[test]
    fn amqps_defaults_to_port_5671_and_may_authenticate_by_certificate() {
        let url = BrokerUrl::parse("amqps://u:secret@broker.example/vh").unwrap();
        assert!(url.tls());
        assert_eq!(url.address(), "broker.example:5671");
        assert_eq!(url.to_string(), "amqps://u:***@broker.example/vh");
        assert!(!url.external_auth());
        let url = BrokerUrl::parse("amqps://broker:5673/?auth_mechanism=external").unwrap();
        assert_eq!(url.address(), "broker:5673");
        assert!(url.external_auth());
        assert!(!BrokerUrl::parse("amqp://h/").unwrap().tls());
        assert_eq!(
            BrokerUrl::parse("amqp://h/?auth_mechanism=external"),
            Err(UrlError::ExternalWithoutTls)
        );
        assert_eq!(
            BrokerUrl::parse("amqps://h/?auth_mechanism=kerberos")
                .unwrap_err()
                .to_string(),
            "option auth_mechanism must be plain or external"
        );
    }

    #[test]
    fn refuses_what_amiquip_would_refuse_later() {
        assert!(matches!(
            BrokerUrl::parse("http://h/"),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(
            BrokerUrl::parse("127.0.0.1:5672"),
            Err(UrlError::NoScheme)
        ));
        assert!(matches!(
            BrokerUrl::parse("amqp://h:99999/"),
            Err(UrlError::Port)
        ));
        assert!(matches!(
            BrokerUrl::parse("amqp://h:x/"),
            Err(UrlError::Port)
        ));
        assert!(matches!(
            BrokerUrl::parse("amqp:///"),
            Err(UrlError::MissingHost)
        ));
        assert!(matches!(
            BrokerUrl::parse("amqp://h/a/b"),
            Err(UrlError::Path)
        ));
        assert!(matches!(
            BrokerUrl::parse("amqp://h/?frame=1"),
            Err(UrlError::UnknownOption)
        ));
        assert!(matches!(
            BrokerUrl::parse("amqp://h/?heartbeat=x"),
            Err(UrlError::OptionValue("heartbeat"))
        ));
    }

    #[test]
    fn errors_never_show_a_piece_of_a_mistyped_password() {
        // Unencoded '/', '?', '@' or ':' in a password end the part they are in early.
        // Every piece of the password here has "Zq" in it.
        for url in [
            "amqp://app:Zq1/Zq2/Zq3@mq/",
            "amqp://app:Zq1?Zq2@mq/",
            "amqp://app:Zq1:Zq2@mq:Zq3/",
            "app:Zq1@mq",
            "amqp://app:Zq1@mq/?Zq2=1",
            "amqp://app:Zq1@mq/%Zq",
            "amqp://app:Zq1@mq:1/?heartbeat=Zq2",
        ] {
            let message = BrokerUrl::parse(url).unwrap_err().to_string();
            assert!(!message.contains("Zq"), "{url}: {message:?}");
        }
    }

    #[test]
    fn decodes_what_the_handshake_needs() {
        let url =
            BrokerUrl::parse("amqp://u%3A1:p%40ss+w@h:1/v%2Fh?heartbeat=5&channel_max=2").unwrap();
        assert_eq!(url.credentials(), Some(("u:1", "p@ss+w")));
        assert_eq!(url.vhost(), "v/h");
        assert_eq!(url.option("heartbeat"), Some(5));
        assert_eq!(url.option("channel_max"), Some(2));
        assert_eq!(url.option("connection_timeout"), None);
        let url = BrokerUrl::parse("amqp://h").unwrap();
        assert_eq!(
            (url.credentials(), url.vhost(), url.port()),
            (None, "/", 5672)
        );
        assert_eq!(BrokerUrl::parse("amqp://h/").unwrap().vhost(), "/");
        assert!(matches!(
            BrokerUrl::parse("amqp://h/%zz"),
            Err(UrlError::Encoding)
        ));
        assert!(matches!(
            BrokerUrl::parse("amqp://h/?heartbeat=70000"),
            Err(UrlError::OptionValue("heartbeat"))
        ));
        let url = BrokerUrl::parse("amqp://[::1]:5673/v").unwrap();
        assert_eq!(url.address(), "[::1]:5673");
    }
}
