//! Signed URLs: with `auth.secret` set, a stream needs a token minted by `eventsourced token`
//! for its queue (in the query or as cookies); a missing, wrong or expired token is refused
//! with 403 and the reason.

mod support;

use std::process::Command;
use support::{unique, Server, Stream};

fn mint(queue: &str, ttl: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_eventsourced"))
        .args(["token", queue, "--ttl", ttl])
        .env("EVENTSOURCED_AUTH_SECRET", "s3cret")
        .output()
        .expect("run eventsourced token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn signed_urls_are_required_when_a_secret_is_set() {
    let server = Server::start(&[("EVENTSOURCED_AUTH_SECRET", "s3cret")]).ready();
    let queue = unique("signed");
    let signed = mint(&queue, "600");
    let ok = Stream::open(server.addr, &format!("/?id={queue}&{signed}"), &[]);
    assert_eq!(ok.status, 200);
    drop(ok);
    // The same, as cookies.
    let other = unique("signed-cookie");
    let by_cookie = Stream::open(
        server.addr,
        &format!("/?id={other}"),
        &[("Cookie", &mint(&other, "600").replace('&', "; "))],
    );
    assert_eq!(by_cookie.status, 200);
    let refusals = [
        (format!("/?id={queue}"), "auth: token missing"),
        (format!("/?id={queue}x&{signed}"), "auth: token invalid"),
        (
            format!("/?id={queue}&{}", signed.replace("token=", "token=0")),
            "auth: token invalid",
        ),
        (
            format!("/?id={queue}&{}", mint(&queue, "0")),
            "auth: token expired",
        ),
    ];
    for (target, reason) in refusals {
        let answer = server.get(&target, &[]);
        assert_eq!(answer.status, 403, "{target}");
        assert_eq!(answer.header("X-Status-Reason"), Some(reason), "{target}");
    }
}
