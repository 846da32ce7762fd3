//! Values a request carries: query parameters, cookies and headers, decoded as Go's `net/http`
//! decodes them, so that a queue name is the same here as in the original.

/// The first value of `key` in a query string, decoded as a form value (`+` is a space).
/// A pair with broken percent-encoding is skipped, as Go's `url.Query()` does.
pub fn query_value(query: &str, key: &str) -> Option<Vec<u8>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = form_decode(k)?;
        if k != key.as_bytes() {
            return None;
        }
        form_decode(v)
    })
}

/// A query value decoded as HTML forms encode it (`+` is a space); `None` for a broken escape.
pub fn form_decode(text: &str) -> Option<Vec<u8>> {
    decode(text, true)
}

/// `%XX` escapes decoded, `+` kept as it is (URL user info and paths); `None` for a broken escape.
pub fn percent_decode(text: &str) -> Option<Vec<u8>> {
    decode(text, false)
}

fn decode(text: &str, plus_is_space: bool) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

/// The first cookie named `key` across all `Cookie` headers, with surrounding quotes removed.
/// A cookie whose value has bytes a cookie may not hold is skipped, as Go's `r.Cookie` does.
pub fn cookie_value(headers: &[(String, String)], key: &str) -> Option<Vec<u8>> {
    headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("cookie"))
        .flat_map(|(_, value)| value.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            if name != key {
                return None;
            }
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            let valid = value
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && !matches!(b, b'"' | b';' | b'\\'));
            valid.then(|| value.as_bytes().to_vec())
        })
}

/// The first value of header `key`, of any case, trimmed.
pub fn header_value<'a>(headers: &'a [(String, String)], key: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(key))
        .map(|(_, value)| value.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_and_percent_decoding_differ_only_in_plus() {
        assert_eq!(form_decode("a+b%2Fc").as_deref(), Some(&b"a b/c"[..]));
        assert_eq!(percent_decode("a+b%2Fc").as_deref(), Some(&b"a+b/c"[..]));
        assert_eq!(form_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
    }

    #[test]
    fn the_first_good_query_value_wins() {
        assert_eq!(
            query_value("x=1&id=a%2Fb+c&id=2", "id").as_deref(),
            Some(&b"a/b c"[..])
        );
        assert_eq!(query_value("id=%zz&id=2", "id").as_deref(), Some(&b"2"[..]));
        assert_eq!(query_value("", "id"), None);
    }

    #[test]
    fn cookies_are_read_across_headers_and_unquoted() {
        let headers = vec![
            ("Cookie".to_string(), "a=1".to_string()),
            ("cookie".to_string(), "other=1; sid=\"s42\"".to_string()),
        ];
        assert_eq!(cookie_value(&headers, "sid").as_deref(), Some(&b"s42"[..]));
        let bad = vec![("Cookie".to_string(), "sid=a\\b".to_string())];
        assert_eq!(cookie_value(&bad, "sid"), None);
    }
}
