//! Signed URLs: with `auth.secret`, a stream request must carry `expires` (unix seconds) and
//! `token` = lowercase hex HMAC-SHA256(secret, "QUEUE\nEXPIRES"), as query parameters or
//! cookies. Whoever can mint tokens (the application's backend) decides who reads which queue;
//! this server only checks, in constant time, without a database.

use crate::http::query::{cookie_value, query_value};
use crate::http::RequestHead;
use crate::refusal::Refusal;

/// Checks the request's token for `queue` at `now` (unix seconds).
pub fn check(key: &[u8], queue: &str, head: &RequestHead, now: u64) -> Result<(), Refusal> {
    let value = |name: &str| {
        query_value(head.query(), name)
            .or_else(|| cookie_value(&head.headers, name))
            .and_then(|v| String::from_utf8(v).ok())
    };
    let (Some(expires), Some(token)) = (value("expires"), value("token")) else {
        return Err(Refusal::TokenMissing);
    };
    let Ok(deadline) = expires.parse::<u64>() else {
        return Err(Refusal::TokenInvalid);
    };
    if !constant_time_eq(
        token.as_bytes(),
        self::token(key, queue, deadline).as_bytes(),
    ) {
        return Err(Refusal::TokenInvalid);
    }
    if deadline <= now {
        return Err(Refusal::TokenExpired);
    }
    Ok(())
}

/// The token for `queue` until `expires`.
pub fn token(key: &[u8], queue: &str, expires: u64) -> String {
    let mac = hmac_sha256(key, format!("{queue}\n{expires}").as_bytes());
    mac.iter().map(|b| format!("{b:02x}")).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&sha256(&[key]));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner_pad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let outer_pad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner = sha256(&[&inner_pad, message]);
    sha256(&[&outer_pad, &inner])
}

/// SHA-256 (FIPS 180-4) of the concatenated `parts`.
fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut state: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let length: usize = parts.iter().map(|p| p.len()).sum();
    let mut message: Vec<u8> = Vec::with_capacity(length + 72);
    for part in parts {
        message.extend_from_slice(part);
    }
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&((length as u64) * 8).to_be_bytes());
    for chunk in message.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in chunk.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = state;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let choice = (e & f) ^ (!e & g);
            let t1 = h
                .wrapping_add(s1)
                .wrapping_add(choice)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let majority = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(majority);
            h = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *s = s.wrapping_add(v);
        }
    }
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::parse_head;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha256_matches_the_standard_vectors() {
        assert_eq!(
            hex(&sha256(&[b""])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256(&[b"abc"])),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let long = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        assert_eq!(
            hex(&sha256(&[long])),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(hex(&sha256(&[b"ab", b"c"])), hex(&sha256(&[b"abc"])));
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Case 6: a key longer than the block is hashed first.
        let mac = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            hex(&mac),
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
