//! Signed URLs: with `auth.secret`, a stream request must carry `expires` (unix seconds) and
//! `token` = lowercase hex HMAC-SHA256(secret, "QUEUE\nEXPIRES"), as query parameters or
//! cookies. Whoever can mint tokens (the application's backend) decides who reads which queue;
//! this server only checks, in constant time, without a database.

use crate::http::query::{cookie_value, query_value};
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
}

impl Signing {
    /// Checks the request's token for `queue` at `now` (unix seconds) with each key in turn.
    pub fn check(&self, queue: &str, head: &RequestHead, now: u64) -> Result<(), Refusal> {
        let mut outcome = Err(Refusal::TokenMissing);
        for key in &self.keys {
            outcome = check(key, queue, head, now);
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

/// When a token minted now for `ttl` seconds expires; `None` when that is past the clock's end.
pub fn expiry(now: u64, ttl: u64) -> Option<u64> {
    now.checked_add(ttl)
}

/// Checks the request's token for `queue` at `now` (unix seconds).
pub fn check(key: &[u8], queue: &str, head: &RequestHead, now: u64) -> Result<(), Refusal> {
    let value = |name: &str| token_field(head, name);
    let (Some(expires), Some(token)) = (value("expires"), value("token")) else {
        return Err(Refusal::TokenMissing);
    };
    let (Ok(deadline), Some(tag)) = (expires.parse::<u64>(), from_hex(&token)) else {
        return Err(Refusal::TokenInvalid);
    };
    // `verify_slice` compares in constant time: the answer tells nothing of how close a guess was.
    if signature(key, queue, deadline).verify_slice(&tag).is_err() {
        return Err(Refusal::TokenInvalid);
    }
    if deadline <= now {
        return Err(Refusal::TokenExpired);
    }
    Ok(())
}

/// The token for `queue` until `expires`.
pub fn token(key: &[u8], queue: &str, expires: u64) -> String {
    let tag = signature(key, queue, expires).finalize().into_bytes();
    tag.iter().map(|b| format!("{b:02x}")).collect()
}

type HmacSha256 = Hmac<Sha256>;

/// The MAC of "QUEUE\nEXPIRES", ready to finalize or verify.
fn signature(key: &[u8], queue: &str, expires: u64) -> HmacSha256 {
    signer(key).chain_update(format!("{queue}\n{expires}"))
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
            token(b"s3cret", "q", 1_700_000_000),
            "41d0a5f8fa3db5006ac6ebfc7fa3dbb4af59182476e1bf2ae97ab3b51423ea60"
        );
    }

    #[test]
    fn only_64_lowercase_hex_digits_are_a_token() {
        let good = token(b"k", "q", 2000);
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
                check(b"k", "q", &head(&target, None), 1000),
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
    fn requests_are_checked_by_query_or_cookie() {
        let key = b"k";
        let good = token(key, "q", 2000);
        assert_eq!(
            check(
                key,
                "q",
                &head(&format!("/?id=q&expires=2000&token={good}"), None),
                1000
            ),
            Ok(())
        );
        let cookies = format!("expires=2000; token={good}");
        assert_eq!(
            check(key, "q", &head("/?id=q", Some(&cookies)), 1000),
            Ok(())
        );
        assert_eq!(
            check(key, "q", &head("/?id=q", None), 1000),
            Err(Refusal::TokenMissing)
        );
        assert_eq!(
            check(
                key,
                "q",
                &head(&format!("/?id=q&expires=2000&token={good}"), None),
                2000
            ),
            Err(Refusal::TokenExpired)
        );
        assert_eq!(
            check(
                key,
                "other",
                &head(&format!("/?expires=2000&token={good}"), None),
                1000
            ),
            Err(Refusal::TokenInvalid)
        );
        assert_eq!(
            check(
                key,
                "q",
                &head(&format!("/?expires=2001&token={good}"), None),
                1000
            ),
            Err(Refusal::TokenInvalid)
        );
        assert_eq!(
            check(
                b"x",
                "q",
                &head(&format!("/?expires=2000&token={good}"), None),
                1000
            ),
            Err(Refusal::TokenInvalid)
        );
        assert_eq!(
            check(key, "q", &head("/?expires=soon&token=00", None), 1000),
            Err(Refusal::TokenInvalid)
        );
    }
}
