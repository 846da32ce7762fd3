//! `eventsourced publish`: the message is confirmed by the broker before the command says so; a
//! nacked message is published again on a fresh channel; when it never is, the command fails
//! with a clear error, within its bounds. A queue that refuses new messages while full
//! (`x-overflow: reject-publish`) is how a test makes the broker nack, as a quorum queue in a
//! leader election does.

mod support;

use amiquip::FieldTable;
use eventsourced::amqp::queue::{self, Argument};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use support::{broker_url, run_eventsourced, text, unique, Amqp, WAIT};

/// `queue.arguments` of a queue that nacks a publish while it holds a message.
const FULL_AT_ONE: &str = "{x-max-length: 1, x-overflow: reject-publish}";

fn full_at_one() -> FieldTable {
    let configured = BTreeMap::from([
        ("x-max-length".to_string(), Argument::Int(1)),
        (
            "x-overflow".to_string(),
            Argument::Text("reject-publish".into()),
        ),
    ]);
    queue::arguments(&configured, queue::expires_ms(1800))
}

#[test]
fn a_nacked_message_is_published_again_on_a_fresh_channel() {
    let amqp = Amqp::connect();
    let name = unique("nacked");
    queue::declare(amqp.channel(), &name, &full_at_one()).expect("declare");
    amqp.publish(&name, "m1");
    let mut child = Command::new(env!("CARGO_BIN_EXE_eventsourced"))
        .args(["publish", &name, "m2"])
        .env("EVENTSOURCED_BROKER_NODE", broker_url())
        .env("EVENTSOURCED_QUEUE_ARGUMENTS", FULL_AT_ONE)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run eventsourced publish");
    let stderr = child.stderr.take().expect("stderr");
    let (lines, read) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("publish| {line}");
            let _ = lines.send(line);
        }
    });
    // The first attempt is nacked: the queue is full.
    let first = read
        .recv_timeout(WAIT)
        .expect("a line about the first attempt");
    assert!(
        first.contains("attempt 1 failed") && first.contains("nacked"),
        "{first}"
    );
    // Room is made; a later attempt, on a fresh channel, is confirmed.
    assert_eq!(amqp.drain(&name), ["m1"]);
    let out = child.wait_with_output().expect("wait for publish");
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("published 2 bytes"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(amqp.drain(&name), ["m2"]);
}

#[test]
fn a_message_never_confirmed_fails_with_a_clear_error() {
    let amqp = Amqp::connect();
    let name = unique("never");
    queue::declare(amqp.channel(), &name, &full_at_one()).expect("declare");
    amqp.publish(&name, "m1");
    let out = run_eventsourced(
        &["publish", &name, "m2"],
        &[
            ("EVENTSOURCED_BROKER_NODE", &broker_url()),
            ("EVENTSOURCED_QUEUE_ARGUMENTS", FULL_AT_ONE),
        ],
    );
    assert!(!out.status.success());
    let error = text(&out.stderr);
    assert!(
        error.contains(&format!(
            "the broker did not confirm the message to {name:?} after 6 attempts"
        )) && error.contains("nacked by the broker"),
        "{error}"
    );
    assert_eq!(amqp.drain(&name), ["m1"]);
}

#[test]
fn a_dead_node_is_passed_over_for_the_next() {
    let amqp = Amqp::connect();
    let name = unique("next-node");
    amqp.declare(&name);
    let nodes = format!("{},{}", support::absent_broker_url(), broker_url());
    let out = run_eventsourced(
        &["publish", &name, "m1"],
        &[("EVENTSOURCED_BROKER_NODE", &nodes)],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("attempt 1 failed"));
    assert_eq!(amqp.drain(&name), ["m1"]);
}

/// AMQP's short strings hold 255 bytes: a longer `--id`, `--type` or queue name is refused with
/// a clear error before anything is sent, not a crash.
#[test]
fn a_name_over_255_bytes_is_refused_plainly() {
    let long = "x".repeat(256);
    for args in [
        vec!["publish", "orders", "m1", "--id", &long],
        vec!["publish", "orders", "m1", "--type", &long],
        vec!["publish", &long, "m1"],
    ] {
        let out = run_eventsourced(&args, &[("EVENTSOURCED_BROKER_NODE", &broker_url())]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        let error = text(&out.stderr);
        assert!(error.contains("256 bytes; AMQP allows 255"), "{error}");
        assert!(!error.contains("panicked"), "{error}");
    }
}
