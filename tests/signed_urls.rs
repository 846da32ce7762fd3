//! Signed URLs: with `auth.secret` set, a stream needs a token minted by `eventsourced token`
//! for its queue (in the query or as cookies); a missing, wrong or expired token is refused
//! with 403 and the reason.

mod support;

use std::process::Command;
use support::{unique, Amqp, Server, Stream};

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

/// The README's recipe: one queue per device of a user, each bound to the user's routing key,
/// with a signed URL per device that covers the user value the binding takes.
#[test]
fn a_user_with_several_devices_gets_a_queue_per_device_and_every_message_on_each() {
    let config = [
        ("EVENTSOURCED_AUTH_SECRET", "s3cret"),
        (
            "EVENTSOURCED_QUEUE_PATTERN",
            "u-${query:user}-${query:device}",
        ),
        (
            "EVENTSOURCED_QUEUE_BIND",
            "[{exchange: amq.topic, routing_key: 'user.${query:user}'}]",
        ),
    ];
    let server = Server::start(&config).ready();
    let user = unique("alice").replace('.', "-");
    let mint_for = |device: &str| {
        let queue = format!("u-{user}-{device}");
        let out = Command::new(env!("CARGO_BIN_EXE_eventsourced"))
            .args(["token", &queue, "--ttl", "600", "--value"])
            .arg(format!("query:user={user}"))
            .envs(config)
            .output()
            .expect("run eventsourced token");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (phone, laptop) = (mint_for("phone"), mint_for("laptop"));
    let open = |device: &str, signed: &str| {
        let target = format!("/?user={user}&device={device}&{signed}");
        let stream = Stream::open(server.addr, &target, &[]);
        assert_eq!(stream.status, 200, "{target}");
        stream
    };
    let mut streams = [open("phone", &phone), open("laptop", &laptop)];
    let amqp = Amqp::connect();
    amqp.publish_to("amq.topic", &format!("user.{user}"), "for every device");
    for stream in &mut streams {
        assert_eq!(stream.next_data().as_deref(), Some("for every device"));
    }
    // The phone's token, the same queue name split otherwise: another user's binding.
    let (head, tail) = user.rsplit_once('-').expect("a unique name has a dash");
    let resplit = format!("/?user={head}&device={tail}-phone&{phone}");
    assert_eq!(format!("u-{head}-{tail}-phone"), format!("u-{user}-phone"));
    let answer = server.get(&resplit, &[]);
    assert_eq!(answer.status, 403, "{resplit}");
    assert_eq!(
        answer.header("X-Status-Reason"),
        Some("auth: token invalid")
    );
}
