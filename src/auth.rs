//! Signed URLs: with `auth.secret`, a stream request must carry `expires` (unix seconds) and
//! `token` = lowercase hex HMAC-SHA256(secret, "QUEUE\nEXPIRES"), as query parameters or
//! cookies. When `queue.bind` takes request values that the queue name does not fix, each is
//! signed too, as a line `category:name=VALUE` after those two, in the order of
//! `QueueConfig::signed_values` ("QUEUE\nEXPIRES\nquery:user=alice"). Whoever can mint tokens (the application's backend) decides who reads which queue;
//! this server only checks, in constant time, without a database.

use crate::http::query::{cookie_value, header_value, query_value};
use crate::http::RequestHead;
use crate::refusal::Refusal;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What a stream request's token is checked against.
#[derive(Debug, Clone)]
pub struct Signing {
    /// The secret in force first, then a previous one still accepted during a rotation.
    pub keys: Vec<Vec<u8>>,
    /// The longest a token may still be valid when presented, in seconds (`auth.max_ttl`).
    pub max_ttl: Option<u64>,
    /// The request values signed besides the queue name (`QueueConfig::signed_values`).
    pub values: Vec<String>,
}

impl Signing {
    /// Checks the request's token for `queue` at `now` (unix seconds) with each key in turn.
    pub fn check(&self, queue: &str, head: &RequestHead, now: u64) -> Result<(), Refusal> {
        let mut values = Vec::with_capacity(self.values.len());
        for placeholder in &self.values {
            let value = request_value(head, placeholder).unwrap_or_default();
            // A line break would let a value pose as the next line of the signed text.
            let value = String::from_utf8(value)
                .ok()
                .filter(|v| !v.contains(['\r', '\n']))
                .ok_or(Refusal::TokenInvalid)?;
            values.push((placeholder.clone(), value));
        }
        let mut outcome = Err(Refusal::TokenMissing);
        for key in &self.keys {
            outcome = check(key, queue, &values, head, now);
            if outcome != Err(Refusal::TokenInvalid) {
                break;
            }
        }
        outcome?;
        // A token valid for longer than the server allows is refused, however it was minted: a
        // leaked one must not open a queue for a year.
        let expires = token_field(head, "expires").and_then(|e| e.parse::<u64>().ok());
        match (self.max_ttl, expires) {
            (Some(max), Some(expires)) if expires.saturating_sub(now) > max => {
                Err(Refusal::TokenTooLong)
            }
            _ => Ok(()),
        }
    }
}

/// A token field (`expires`, `token`), from the query or a cookie.
fn token_field(head: &RequestHead, name: &str) -> Option<String> {
    query_value(head.query(), name)
        .or_else(|| cookie_value(&head.headers, name))
        .and_then(|v| String::from_utf8(v).ok())
}

/// The value of a placeholder (`query:user`) in the request.
fn request_value(head: &RequestHead, placeholder: &str) -> Option<Vec<u8>> {
    let (category, name) = placeholder.split_once(':')?;
    match category {
        "query" => query_value(head.query(), name),
        "cookie" => cookie_value(&head.headers, name),
        "header" => header_value(&head.headers, name).map(|v| v.as_bytes().to_vec()),
        _ => None,
    }
}

/// When a token minted now for `ttl` seconds expires; `None` when that is past the clock's end.
pub fn expiry(now: u64, ttl: u64) -> Option<u64> {
    now.checked_add(ttl)
}

/// Checks the request's token for `queue` and the signed request `values` at `now` (unix
/// seconds).
pub fn check(
    key: &[u8],
    queue: &str,
    values: &[(String, String)],
    head: &RequestHead,
    now: u64,
) -> Result<(), Refusal> {
    let value = |name: &str| token_field(head, name);
    let (Some(expires), Some(token)) = (value("expires"), value("token")) else {
        return Err(Refusal::TokenMissing);
    };
    let (Ok(deadline), Some(tag)) = (expires.parse::<u64>(), from_hex(&token)) else {
        return Err(Refusal::TokenInvalid);
    };
    // `verify_slice` compares in constant time: the answer tells nothing of how close a guess was.
    if signature(key, queue, deadline, values)
        .verify_slice(&tag)
        .is_err()
    {
        return Err(Refusal::TokenInvalid);
    }
    if deadline <= now {
        return Err(Refusal::TokenExpired);
    }
    Ok(())
}

/// The token for `queue` and the request `values` it signs (`category:name`, value) until
/// `expires`.
pub fn token(key: &[u8], queue: &str, values: &[(String, String)], expires: u64) -> String {
    let tag = signature(key, queue, expires, values)
        .finalize()
        .into_bytes();
    tag.iter().map(|b| format!("{b:02x}")).collect()
}

type HmacSha256 = Hmac<Sha256>;

/// The MAC of "QUEUE\nEXPIRES" and a line `category:name=VALUE` for each signed request
/// value, ready to finalize or verify.
fn signature(key: &[u8], queue: &str, expires: u64, values: &[(String, String)]) -> HmacSha256 {
    let mut mac = signer(key).chain_update(format!("{queue}\n{expires}"));
    for (placeholder, value) in values {
        mac.update(format!("\n{placeholder}={value}").as_bytes());
    }
    mac
}

fn signer(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length (a long one is hashed first): this cannot fail.
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// The 32 bytes a token spells as 64 lowercase hex digits; `None` for anything else.
fn from_hex(token: &str) -> Option<[u8; 32]> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let digits = token.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut tag = [0u8; 32];
    for (byte, pair) in tag.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(tag)
}

/// The request values a token signs (`signed`, from `QueueConfig::signed_values`), from
/// `token --value category:name=VALUE` arguments: each one signed, and no other.
pub fn values_given(signed: &[String], given: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut values = Vec::new();
    for placeholder in signed {
        let prefix = format!("{placeholder}=");
        let value = given
            .iter()
            .find_map(|v| v.strip_prefix(&prefix))
            .ok_or_else(|| {
                format!(
                    "queue.bind takes {placeholder} from the request, so the token signs it: \
                     give --value {placeholder}=VALUE"
                )
            })?;
        values.push((placeholder.clone(), value.to_string()));
    }
    if let Some(extra) = given
        .iter()
        .find(|v| !values.iter().any(|(p, _)| v.starts_with(&format!("{p}="))))
    {
        return Err(format!(
            "--value {extra}: the token signs no such value (queue.bind takes only: {})",
            if values.is_empty() {
                "none".to_string()
            } else {
                values
                    .iter()
                    .map(|(p, _)| p.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::parse_head;
    use sha2::Digest;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn hmac_sha256(key: &[u8], message: &[u8]) -> String {
        hex(&signer(key).chain_update(message).finalize().into_bytes())
    }

    #[test]
    fn sha256_matches_the_standard_vectors() {
        // FIPS 180-4 examples, through the crate as this build configures it.
        let sha256 = |parts: &[&[u8]]| {
            let mut hash = Sha256::new();
            for part in parts {
                hash.update(part);
            }
            hex(&hash.finalize())
        };
        assert_eq!(
            sha256(&[b""]),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256(&[b"abc"]),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let long = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        assert_eq!(
            sha256(&[long]),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(sha256(&[b"ab", b"c"]), sha256(&[b"abc"]));
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        assert_eq!(
            hmac_sha256(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Case 6: a key longer than the block is hashed first.
        assert_eq!(
            hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn the_token_is_what_openssl_computes() {
        // printf 'q\n1700000000' | openssl dgst -sha256 -hmac s3cret
        assert_eq!(
            token(b"s3cret", "q", &[], 1_700_000_000),
            "41d0a5f8fa3db5006ac6ebfc7fa3dbb4af59182476e1bf2ae97ab3b51423ea60"
        );
    }

    #[test]
    fn only_64_lowercase_hex_digits_are_a_token() {
        let good = token(b"k", "q", &[], 2000);
        assert_eq!(from_hex(&good).map(|tag| hex(&tag)), Some(good.clone()));
        for bad in [
            good.to_uppercase(),
            good[..62].to_string(),
            format!("{good}00"),
            format!("{}g", &good[..63]),
            format!("+{}", &good[1..]),
            format!("{}\u{e9}", &good[..62]),
            String::new(),
        ] {
            assert_eq!(from_hex(&bad), None, "{bad:?}");
            let target = format!("/?expires=2000&token={bad}");
            assert_eq!(
                check(b"k", "q", &[], &head(&target, None), 1000),
                Err(Refusal::TokenInvalid),
                "{bad:?}"
            );
        }
    }

    fn head(target: &str, cookie: Option<&str>) -> RequestHead {
        let cookie = cookie
            .map(|c| format!("Cookie: {c}\r\n"))
            .unwrap_or_default();
        let text = format!("GET {target} HTTP/1.1\r\n{cookie}\r\n");
        parse_head(text.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn signed_request_values_are_lines_after_the_expiry() {
        // printf 'u-alice-phone\n2000\nquery:user=alice' | openssl dgst -sha256 -hmac k
        let values = [("query:user".to_string(), "alice".to_string())];
        let good = token(b"k", "u-alice-phone", &values, 2000);
        assert_eq!(
            good,
            hmac_sha256(b"k", b"u-alice-phone\n2000\nquery:user=alice")
        );
        let signing = Signing {
            keys: vec![b"k".to_vec()],
            max_ttl: None,
            values: vec!["query:user".to_string()],
        };
        let target = |user: &str| format!("/?user={user}&device=phone&expires=2000&token={good}");
        let check = |user: &str| signing.check("u-alice-phone", &head(&target(user), None), 1000);
        assert_eq!(check("alice"), Ok(()));
        // The same queue name, split otherwise: another user's routing key.
        assert_eq!(check("alice-x"), Err(Refusal::TokenInvalid));
        assert_eq!(check("alice%0Aquery:user=bob"), Err(Refusal::TokenInvalid));
    }

    #[test]
    fn the_token_command_takes_exactly_the_signed_values() {
        let signed = ["query:user".to_string()];
        let given = |v: &[&str]| {
            values_given(
                &signed,
                &v.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            given(&["query:user=alice"]),
            Ok(vec![("query:user".to_string(), "alice".to_string())])
        );
        assert!(given(&[]).unwrap_err().contains("--value query:user=VALUE"));
        assert!(given(&["query:user=a", "query:x=1"])
            .unwrap_err()
            .contains("query:x=1"));
    }

    #[test]
    fn requests_are_checked_by_query_or_cookie() {
        let key = b"k";
        let good = token(key, "q", &[], 2000);
        assert_eq!(
            check(
                key,
                "q",
                &[],
                &head(&format!("/?id=q&expires=2000&token={good}"), None),
                1000
            ),
            Ok(())
        );
        let cookies = format!("expires=2000; token={good}");
        assert_eq!(
            check(key, "q", &[], &head("/?id=q", Some(&cookies)), 1000),
            Ok(())
        );
        assert_eq!(
            check(key, "q", &[], &head("/?id=q", None), 1000),
            Err(Refusal::TokenMissing)
        );
        assert_eq!(
            check(
                key,
                "q",
                &[],
                &head(&format!("/?id=q&expires=2000&token={good}"), None),
                2000
            ),
            Err(Refusal::TokenExpired)
        );
        assert_eq!(
            check(
                key,
                "other",
                &[],
                &head(&format!("/?expires=2000&token={good}"), None),
                1000
            ),
            Err(Refusal::TokenInvalid)
        );
        assert_eq!(
            check(
                key,
                "q",
                &[],
                &head(&format!("/?expires=2001&token={good}"), None),
                1000
            ),
            Err(Refusal::TokenInvalid)
        );
        assert_eq!(
            check(
                b"x",
                "q",
                &[],
                &head(&format!("/?expires=2000&token={good}"), None),
                1000
            ),
            Err(Refusal::TokenInvalid)
        );
        assert_eq!(
            check(key, "q", &[], &head("/?expires=soon&token=00", None), 1000),
            Err(Refusal::TokenInvalid)
        );
    }
}
