//! No gaps for clients that say where they are, with the defaults a real client has (its
//! kernel's own socket buffers, the server's default window and keep-alive): a reader that
//! stalls, then leaves by FIN or RST, and comes back with the `Last-Event-ID` of the last event
//! it read, gets every later message exactly once. The kernel acknowledging bytes proves only
//! that the client's kernel has them, so what was written stays unacked until the client's
//! next connection says what it read.
//!
//! A fresh page (no `Last-Event-ID`) gets again what the previous connection held, bounded by
//! `queue.replay_window` (messages, give or take one write batch), `queue.replay_bytes` and
//! `queue.replay_age`.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use support::{assert_exactly_once, numbered, unique, wait_for, Amqp, Server, Stream};

/// The server's defaults, but for the test config's keep-alive of 0, put back to 15 s.
const DEFAULTS: [(&str, &str); 1] = [("EVENTSOURCED_SERVER_KEEPALIVE", "15")];

/// Reads events until `want` distinct messages of `expected` arrived, or `within` passed;
/// returns every message read, in order, and the last event id.
fn read_until(
    stream: &mut Stream,
    expected: &[String],
    within: Duration,
) -> (Vec<String>, Option<String>) {
    let end = Instant::now() + within;
    let mut got = Vec::new();
    let mut last = None;
    let mut missing: std::collections::BTreeSet<&String> = expected.iter().collect();
    while !missing.is_empty() {
        let left = end.saturating_duration_since(Instant::now());
        match stream.next_event_within(left) {
            Ok(Some(event)) => {
                let data = event.data.unwrap_or_default();
                missing.remove(&data);
                got.push(data);
                last = event.id.or(last);
            }
            Ok(None) | Err(()) => break,
        }
    }
    (got, last)
}

/// Closes with FIN: the client's side is shut, and the server is seen to end the stream.
fn finish(mut stream: Stream) {
    let _ = stream.socket().shutdown(std::net::Shutdown::Write);
    assert!(stream.closed_by_server(support::WAIT));
}

/// Reads 1,000 of 3,000 messages, stalls for `stall`, leaves, and comes back with the id of
/// the last event read.
fn stall_then_leave(case: &str, stall: Duration, leave: fn(Stream)) {
    let server = Server::start(&DEFAULTS).ready();
    let amqp = Amqp::connect();
    let queue = unique("stall");
    amqp.declare(&queue);
    let published = numbered(1, 3000);
    for m in &published {
        amqp.publish(&queue, m);
    }
    let target = format!("/?id={queue}");
    let mut stream = Stream::open(server.addr, &target, &[]);
    let (mut received, last) = read_until(&mut stream, &published[..1000], support::WAIT);
    assert_eq!(received.len(), 1000);
    thread::sleep(stall);
    leave(stream);
    let last = last.expect("events carry ids");
    let mut again = Stream::open(server.addr, &target, &[("Last-Event-ID", last.as_str())]);
    let (rest, _) = read_until(&mut again, &published[1000..], Duration::from_secs(60));
    received.extend(rest);
    assert_exactly_once(case, &published, &received);
}

#[test]
fn a_stall_of_one_second_then_fin() {
    stall_then_leave("stall 1 s, FIN", Duration::from_secs(1), finish);
}

#[test]
fn a_stall_of_one_second_then_rst() {
    stall_then_leave("stall 1 s, RST", Duration::from_secs(1), Stream::reset);
}

#[test]
fn a_stall_of_twenty_seconds_then_fin() {
    stall_then_leave("stall 20 s, FIN", Duration::from_secs(20), finish);
}

#[test]
fn a_stall_of_twenty_seconds_then_rst() {
    stall_then_leave("stall 20 s, RST", Duration::from_secs(20), Stream::reset);
}

#[test]
fn a_slow_stream_whose_reader_stops_for_a_minute_then_vanishes() {
    let server = Server::start(&DEFAULTS).ready();
    let queue = unique("slow");
    Amqp::connect().declare(&queue);
    // 20 messages a second for 70 s, bounded by count.
    let published = numbered(1, 1400);
    let publishing = Arc::new(AtomicBool::new(true));
    let publisher = {
        let (queue, published) = (queue.clone(), published.clone());
        let publishing = Arc::clone(&publishing);
        thread::spawn(move || {
            let amqp = Amqp::connect();
            let start = Instant::now();
            for (i, m) in published.iter().enumerate() {
                let due = start + Duration::from_millis(50 * i as u64);
                thread::sleep(due.saturating_duration_since(Instant::now()));
                amqp.publish(&queue, m);
            }
            publishing.store(false, Ordering::Release);
        })
    };
    let target = format!("/?id={queue}");
    let mut stream = Stream::open(server.addr, &target, &[]);
    let (mut received, last) = read_until(&mut stream, &published[..100], support::WAIT);
    // The reader stops for a minute while messages keep coming, then its process dies.
    thread::sleep(Duration::from_secs(60));
    stream.reset();
    let last = last.expect("events carry ids");
    let mut again = Stream::open(server.addr, &target, &[("Last-Event-ID", last.as_str())]);
    let (rest, _) = read_until(&mut again, &published[100..], Duration::from_secs(60));
    received.extend(rest);
    publisher.join().expect("the publisher");
    assert!(!publishing.load(Ordering::Acquire));
    assert_exactly_once(
        "slow stream, reader stops 60 s, then RST",
        &published,
        &received,
    );
}

#[test]
fn a_fresh_page_gets_at_most_the_window_again() {
    // The default window: 4,096 messages, released in whole write batches (at most
    // queue.prefetch, 256, each), so between 4,096 and 4,351 are held.
    let held = 4096..4096 + 256;
    let server = Server::start(&DEFAULTS).ready();
    let amqp = Amqp::connect();
    let queue = unique("reload");
    amqp.declare(&queue);
    let published = numbered(1, 5000);
    for m in &published {
        amqp.publish(&queue, m);
    }
    let target = format!("/?id={queue}");
    let mut first = Stream::open(server.addr, &target, &[]);
    let (read, _) = read_until(&mut first, &published, Duration::from_secs(60));
    assert_eq!(read.len(), 5000);
    wait_for(
        "the window to hold its bound",
        Duration::from_secs(10),
        || {
            support::unacked(&queue)
                .parse()
                .is_ok_and(|n: usize| held.contains(&n))
        },
    );
    first.close();
    // The old page's stream ends and hands what it held back to the queue. (A page that comes
    // back while its old connection still lingers follows that stream instead, from what it
    // keeps in memory: several_readers.rs tests that.)
    wait_for(
        "the first stream to let go of what it held",
        Duration::from_secs(10),
        || amqp.consumers(&queue) == 0 && held.contains(&(amqp.ready(&queue) as usize)),
    );
    // A new EventSource sends no Last-Event-ID: the held tail comes again, and only that.
    let mut reloaded = Stream::open(server.addr, &target, &[]);
    let (again, _) = read_until(
        &mut reloaded,
        &published[5000 - 4096..],
        Duration::from_secs(60),
    );
    assert!(held.contains(&again.len()), "{} again", again.len());
    assert_eq!(again, &published[5000 - again.len()..]);
    assert!(
        matches!(
            reloaded.next_event_within(Duration::from_millis(500)),
            Err(())
        ),
        "nothing more"
    );
}

#[test]
fn a_fresh_page_gets_nothing_older_than_the_age_bound_but_the_newest() {
    // A short age, to be quick; the default is 120 s.
    let server = Server::start(&[
        ("EVENTSOURCED_SERVER_KEEPALIVE", "15"),
        ("EVENTSOURCED_QUEUE_REPLAY_AGE", "1"),
    ])
    .ready();
    let amqp = Amqp::connect();
    let queue = unique("aged");
    amqp.declare(&queue);
    let published = numbered(1, 10);
    for m in &published {
        amqp.publish(&queue, m);
    }
    let target = format!("/?id={queue}");
    let mut first = Stream::open(server.addr, &target, &[]);
    let (read, _) = read_until(&mut first, &published, support::WAIT);
    assert_eq!(read.len(), 10);
    // All but the newest, which stays held to mark where the client is (see `window`).
    wait_for(
        "the held messages to age out",
        Duration::from_secs(10),
        || support::unacked(&queue) == "1",
    );
    first.close();
    amqp.publish(&queue, "m11");
    let mut reloaded = Stream::open(server.addr, &target, &[]);
    assert_eq!(reloaded.next_data().as_deref(), Some("m10"));
    assert_eq!(reloaded.next_data().as_deref(), Some("m11"));
}
