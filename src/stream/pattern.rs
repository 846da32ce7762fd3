//! The queue-name pattern (`queue.pattern`): which parts of a request name the client's queue.
//!
//! Parsed once at start; resolving it against a request is a pure function, so every refusal a
//! client can provoke is decided here and tested without sockets.

use crate::http::query::{cookie_value, header_value, query_value};
use crate::refusal::Refusal;
use std::fmt;

/// A parsed pattern such as `queue-${query:id}-${cookie:sid}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Query(String),
    Cookie(String),
    Header(String),
}

/// Why a pattern in the configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternError {
    /// `${` without its closing `}`.
    Unclosed,
    /// A placeholder whose category is not `query`, `cookie` or `header`.
    Category(String),
    /// A placeholder without a name after the colon.
    EmptyName(String),
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatternError::Unclosed => f.write_str("a \"${\" is not closed by \"}\""),
            PatternError::Category(p) => write!(
                f,
                "placeholder \"${{{p}}}\" must be ${{query:NAME}}, ${{cookie:NAME}} or ${{header:NAME}}"
            ),
            PatternError::EmptyName(p) => write!(f, "placeholder \"${{{p}}}\" names nothing"),
        }
    }
}

impl std::error::Error for PatternError {}

/// A binding of the client's queue (`queue.bind`); both names may use the placeholders.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub exchange: Pattern,
    #[serde(default = "Pattern::empty")]
    pub routing_key: Pattern,
}

/// What the pattern may read from a request.
#[derive(Clone, Copy)]
pub struct RequestParts<'a> {
    /// The raw query string, after `?` and before any `#`.
    pub query: &'a str,
    /// Every request header as (name, value), in the order received.
    pub headers: &'a [(String, String)],
}

impl<'a> RequestParts<'a> {
    pub fn of(head: &'a crate::http::RequestHead) -> RequestParts<'a> {
        RequestParts {
            query: head.query(),
            headers: &head.headers,
        }
    }
}

impl Pattern {
    /// The pattern that names nothing: an empty routing key.
    pub fn empty() -> Pattern {
        Pattern {
            source: String::new(),
            parts: Vec::new(),
        }
    }

    pub fn parse(source: &str) -> Result<Pattern, PatternError> {
        // The original drops white space and newlines from the pattern before reading it.
        let compact: String = source.chars().filter(|c| !c.is_whitespace()).collect();
        let mut parts = Vec::new();
        let mut rest = compact.as_str();
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or(PatternError::Unclosed)?;
            let inner = &after[..end];
            let (category, name) = inner
                .split_once(':')
                .ok_or_else(|| PatternError::Category(inner.to_string()))?;
            if name.is_empty() {
                return Err(PatternError::EmptyName(inner.to_string()));
            }
            parts.push(match category {
                "query" => Part::Query(name.to_string()),
                "cookie" => Part::Cookie(name.to_string()),
                "header" => Part::Header(name.to_string()),
                _ => return Err(PatternError::Category(inner.to_string())),
            });
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(Pattern {
            source: source.to_string(),
            parts,
        })
    }

    /// Every placeholder, as `category:name`, in order (repeats included).
    pub fn placeholders(&self) -> Vec<String> {
        self.parts
            .iter()
            .filter_map(|part| match part {
                Part::Literal(_) => None,
                Part::Query(name) => Some(format!("query:{name}")),
                Part::Cookie(name) => Some(format!("cookie:{name}")),
                Part::Header(name) => Some(format!("header:{name}")),
            })
            .collect()
    }

    /// The pattern as configured, for `-c`.
    pub fn as_configured(&self) -> &str {
        &self.source
    }

    /// The queue name this request asks for, or why there is none.
    pub fn resolve(&self, request: &RequestParts<'_>) -> Result<String, Refusal> {
        validate_queue_name(self.substitute(request, QUEUE_NAME_WILDCARDS)?)
    }

    /// The name this pattern gives a binding's exchange or routing key for a request: at most
    /// 255 bytes of UTF-8 without control characters; `amq.` allowed where the pattern's own
    /// text has it. A request value may not hold `.`: in a topic key it would add words, and in
    /// an exchange name reach `amq.*`.
    pub fn resolve_binding(&self, request: &RequestParts<'_>) -> Result<String, Refusal> {
        let text = String::from_utf8(self.substitute(request, BINDING_WILDCARDS)?)
            .map_err(|_| Refusal::InvalidQueueName)?;
        if text.len() > 255 || text.chars().any(char::is_control) {
            return Err(Refusal::InvalidQueueName);
        }
        // `amq.` names the broker's own exchanges: only the configuration may say it.
        let configured_amq =
            matches!(self.parts.first(), Some(Part::Literal(l)) if is_amq(l.as_bytes()));
        if is_amq(text.as_bytes()) && !configured_amq {
            return Err(Refusal::InvalidQueueName);
        }
        Ok(text)
    }

    /// The pattern filled in; a request value holding any byte of `forbidden` is refused.
    fn substitute(&self, request: &RequestParts<'_>, forbidden: &[u8]) -> Result<Vec<u8>, Refusal> {
        let mut name: Vec<u8> = Vec::new();
        for part in &self.parts {
            let value = match part {
                Part::Literal(text) => Some(text.as_bytes().to_vec()),
                Part::Query(key) => query_value(request.query, key),
                Part::Cookie(key) => cookie_value(request.headers, key),
                Part::Header(key) => {
                    header_value(request.headers, key).map(|v| v.as_bytes().to_vec())
                }
            };
            let from_request = !matches!(part, Part::Literal(_));
            match value {
                Some(v) if from_request && v.iter().any(|b| forbidden.contains(b)) => {
                    return Err(Refusal::Wildcard)
                }
                Some(v) if !v.is_empty() => name.extend_from_slice(&v),
                _ => return Err(Refusal::MissingParameter),
            }
        }
        Ok(name)
    }
}

/// True for a name in the broker's reserved `amq.` space, in any case.
fn is_amq(name: &[u8]) -> bool {
    name.len() >= 4 && name[..4].eq_ignore_ascii_case(b"amq.")
}

/// What AMQP routing treats specially, refused in a request value that names a queue: the same
/// value usually fills a binding too, where it would match other users' messages.
const QUEUE_NAME_WILDCARDS: &[u8] = b"*#";
/// As `QUEUE_NAME_WILDCARDS`, and the word separator of topic keys.
const BINDING_WILDCARDS: &[u8] = b"*#.";

/// RabbitMQ's limits plus ours: at most 255 bytes, not `amq.` in any case, UTF-8 without
/// control characters (so a name is always safe to log and to declare).
fn validate_queue_name(name: Vec<u8>) -> Result<String, Refusal> {
    if name.is_empty() || name.len() > 255 {
        return Err(Refusal::InvalidQueueName);
    }
    if is_amq(&name) {
        return Err(Refusal::InvalidQueueName);
    }
    let name = String::from_utf8(name).map_err(|_| Refusal::InvalidQueueName)?;
    if name.chars().any(char::is_control) {
        return Err(Refusal::InvalidQueueName);
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(pattern: &str, query: &str, headers: &[(&str, &str)]) -> Result<String, Refusal> {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        Pattern::parse(pattern).unwrap().resolve(&RequestParts {
            query,
            headers: &headers,
        })
    }

    #[test]
    fn query_parameter_is_the_default_case() {
        assert_eq!(resolve("${query:id}", "id=demo", &[]), Ok("demo".into()));
        assert_eq!(
            resolve("${query:id}", "x=1&id=a%2Fb+c&id=2", &[]),
            Ok("a/b c".into())
        );
    }

    #[test]
    fn literal_text_stays_between_placeholders() {
        let headers = [("Cookie", "other=1; sid=\"s42\"")];
        assert_eq!(
            resolve("queue-${query:id}-${cookie:sid}-name", "id=7", &headers),
            Ok("queue-7-s42-name".into())
        );
    }

    #[test]
    fn white_space_in_the_pattern_is_dropped() {
        assert_eq!(resolve(" q-\n ${query:id} ", "id=1", &[]), Ok("q-1".into()));
    }

    #[test]
    fn header_placeholder_ignores_name_case() {
        let headers = [("X-User", " u1 ")];
        assert_eq!(
            resolve("u.${header:x-user}", "", &headers),
            Ok("u.u1".into())
        );
    }

    #[test]
    fn missing_or_empty_values_are_refused() {
        assert_eq!(
            resolve("${query:id}", "", &[]),
            Err(Refusal::MissingParameter)
        );
        assert_eq!(
            resolve("${query:id}", "id=", &[]),
            Err(Refusal::MissingParameter)
        );
        assert_eq!(
            resolve("${query:id}", "id=%zz", &[]),
            Err(Refusal::MissingParameter)
        );
        assert_eq!(
            resolve("${cookie:sid}", "", &[]),
            Err(Refusal::MissingParameter)
        );
        let bad_cookie = [("Cookie", "sid=a\\b")];
        assert_eq!(
            resolve("${cookie:sid}", "", &bad_cookie),
            Err(Refusal::MissingParameter)
        );
    }

    #[test]
    fn reserved_long_and_unclean_names_are_refused() {
        assert_eq!(
            resolve("${query:id}", "id=amq.x", &[]),
            Err(Refusal::InvalidQueueName)
        );
        assert_eq!(
            resolve("${query:id}", "id=AmQ.x", &[]),
            Err(Refusal::InvalidQueueName)
        );
        assert_eq!(
            resolve("amq.${query:id}", "id=x", &[]),
            Err(Refusal::InvalidQueueName)
        );
        let long = format!("id={}", "a".repeat(256));
        assert_eq!(
            resolve("${query:id}", &long, &[]),
            Err(Refusal::InvalidQueueName)
        );
        let fits = format!("id={}", "a".repeat(255));
        assert!(resolve("${query:id}", &fits, &[]).is_ok());
        assert_eq!(
            resolve("${query:id}", "id=a%00b", &[]),
            Err(Refusal::InvalidQueueName)
        );
        assert_eq!(
            resolve("${query:id}", "id=a%0Ab", &[]),
            Err(Refusal::InvalidQueueName)
        );
        assert_eq!(
            resolve("${query:id}", "id=%FF", &[]),
            Err(Refusal::InvalidQueueName)
        );
    }

    #[test]
    fn other_names_may_use_amq_and_be_empty() {
        let topic = Pattern::parse("amq.topic").unwrap();
        assert_eq!(
            topic.resolve_binding(&RequestParts {
                query: "",
                headers: &[]
            }),
            Ok("amq.topic".into())
        );
        let key = Pattern::parse("user.${query:id}").unwrap();
        let parts = RequestParts {
            query: "id=ann",
            headers: &[],
        };
        assert_eq!(key.resolve_binding(&parts), Ok("user.ann".into()));
        let empty = Pattern::parse("").unwrap();
        assert_eq!(empty.resolve_binding(&parts), Ok(String::new()));
    }

    #[test]
    fn routing_wildcards_from_the_request_are_refused() {
        for query in ["id=%23", "id=a.*", "id=x.%23.y", "id=*"] {
            assert_eq!(
                resolve("${query:id}", query, &[]),
                Err(Refusal::Wildcard),
                "{query}"
            );
        }
        // A dot is fine in a queue name (an e-mail address as the id)...
        assert_eq!(
            resolve("${query:id}", "id=a%40b.com", &[]),
            Ok("a@b.com".into())
        );
        // ...but not in a value that fills a binding, where it would add words to the key.
        let key = Pattern::parse("user.${query:id}").unwrap();
        let parts = |query| RequestParts {
            query,
            headers: &[],
        };
        assert_eq!(key.resolve_binding(&parts("id=ann")), Ok("user.ann".into()));
        for query in ["id=a.b", "id=%23", "id=a*"] {
            assert_eq!(
                key.resolve_binding(&parts(query)),
                Err(Refusal::Wildcard),
                "{query}"
            );
        }
        // Literal wildcards in the configuration stay what the configuration says.
        let all = Pattern::parse("news.#").unwrap();
        assert_eq!(all.resolve_binding(&parts("")), Ok("news.#".into()));
    }

    #[test]
    fn only_the_configuration_names_an_amq_exchange() {
        let parts = RequestParts {
            query: "ex=amq",
            headers: &[],
        };
        let from_request = Pattern::parse("${query:ex}.topic").unwrap();
        assert_eq!(
            from_request.resolve_binding(&parts),
            Err(Refusal::InvalidQueueName)
        );
        let configured = Pattern::parse("amq.topic").unwrap();
        assert_eq!(configured.resolve_binding(&parts), Ok("amq.topic".into()));
    }

    #[test]
    fn broken_patterns_are_refused_at_start() {
        assert_eq!(Pattern::parse("${query:id"), Err(PatternError::Unclosed));
        assert!(matches!(
            Pattern::parse("${path:x}"),
            Err(PatternError::Category(_))
        ));
        assert!(matches!(
            Pattern::parse("${query}"),
            Err(PatternError::Category(_))
        ));
        assert!(matches!(
            Pattern::parse("${query:}"),
            Err(PatternError::EmptyName(_))
        ));
    }
}
