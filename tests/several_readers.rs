//! Several readers of one queue on one instance (two tabs of one user, a phone reconnecting while
//! its old connection lingers), with the default `queue.conflict: share`: each gets every
//! message published while it is connected, once and in order; none takes the queue from
//! another; one that comes back with its `Last-Event-ID` gets what it missed; one whose last
//! event is no longer held is told so (`event: gap`).

mod support;

use std::time::{Duration, Instant};
use support::{numbered, rabbitmqctl, unique, wait_for, Amqp, Server, Stream};

fn data(events: &[support::Event]) -> Vec<String> {
    events.iter().filter_map(|e| e.data.clone()).collect()
}

/// The queue's unacked and ready counts, as the broker lists them.
fn counts(queue: &str) -> (String, String) {
    rabbitmqctl(&[
        "list_queues",
        "name",
        "messages_unacknowledged",
        "messages_ready",
        "--no-table-headers",
    ])
    .lines()
    .find_map(|l| {
        let rest = l.strip_prefix(&format!("{queue}\t"))?;
        let (unacked, ready) = rest.split_once('\t')?;
        Some((unacked.trim().to_string(), ready.trim().to_string()))
    })
    .unwrap_or_default()
}

#[test]
fn three_readers_of_one_queue_each_get_every_message_once_and_in_order() {
    // A short age, so that the window releases while the test runs (the default is 120 s).
    let server = Server::start(&[("EVENTSOURCED_QUEUE_REPLAY_AGE", "1")]).ready();
    let amqp = Amqp::connect();
    let queue = unique("tabs");
    amqp.declare(&queue);
    let target = format!("/?id={queue}");
    let mut tabs: Vec<Stream> = (0..3)
        .map(|_| Stream::open(server.addr, &target, &[]))
        .collect();
    server.wait_log("following the stream that consumes it here");
    let published = numbered(1, 60);
    for (n, m) in published.iter().enumerate() {
        amqp.publish(&queue, m);
        if n % 20 == 19 {
            // Past the age bound: the holder acks what every tab has.
            std::thread::sleep(Duration::from_millis(1100));
        }
    }
    for (i, tab) in tabs.iter_mut().enumerate() {
        let got = data(&tab.next_events(published.len()));
        assert_eq!(got, published, "tab {i}");
        assert!(
            matches!(tab.next_event_within(Duration::from_millis(300)), Err(())),
            "tab {i} got more"
        );
    }
    // Acked as the tabs read, but for the newest, which marks where they are.
    wait_for(
        "acks while three tabs read",
        Duration::from_secs(10),
        || counts(&queue) == ("1".into(), "0".into()),
    );
    assert!(
        !server.log_text().contains("taken over"),
        "nobody took the queue over"
    );
}

#[test]
fn a_reconnect_while_the_old_connection_lingers_is_served_at_once_and_nobody_flaps() {
    let server = Server::start(&[]).ready();
    let amqp = Amqp::connect();
    let queue = unique("linger");
    amqp.declare(&queue);
    amqp.publish_all(&queue, &numbered(1, 3));
    let target = format!("/?id={queue}");
    let mut old = Stream::open(server.addr, &target, &[]);
    let events = old.next_events(3);
    // The same browser, reconnecting from a new network while the old connection lingers.
    let began = Instant::now();
    let mut new = Stream::open(
        server.addr,
        &target,
        &[("Last-Event-ID", events[2].id.as_deref().unwrap())],
    );
    assert_eq!(new.status, 200);
    amqp.publish_all(&queue, &numbered(4, 5));
    assert_eq!(data(&new.next_events(2)), ["m4", "m5"]);
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "took {:?}",
        began.elapsed()
    );
    // The old one is not ended by the new one: it ends when its own connection does.
    assert_eq!(data(&old.next_events(2)), ["m4", "m5"]);
    old.close();
    amqp.publish_all(&queue, &numbered(6, 6));
    assert_eq!(data(&new.next_events(1)), ["m6"]);
    assert!(!server.log_text().contains("taken over"));
}

#[test]
fn a_tab_that_closes_and_comes_back_with_its_last_event_id_catches_up_exactly() {
    let server = Server::start(&[]).ready();
    let amqp = Amqp::connect();
    let queue = unique("reopen");
    amqp.declare(&queue);
    let target = format!("/?id={queue}");
    let mut first = Stream::open(server.addr, &target, &[]);
    let mut second = Stream::open(server.addr, &target, &[]);
    server.wait_log("following the stream that consumes it here");
    amqp.publish_all(&queue, &numbered(1, 10));
    let read = second.next_events(10);
    let last = read[9].id.clone().expect("an id");
    second.close();
    amqp.publish_all(&queue, &numbered(11, 20));
    assert_eq!(data(&first.next_events(20)), numbered(1, 20));
    let mut back = Stream::open(server.addr, &target, &[("Last-Event-ID", &last)]);
    assert_eq!(data(&back.next_events(10)), numbered(11, 20));
    assert!(matches!(
        back.next_event_within(Duration::from_millis(300)),
        Err(())
    ));
}

#[test]
fn followers_go_on_when_the_first_reader_leaves_and_the_queue_keeps_what_they_may_not_have() {
    let server = Server::start(&[]).ready();
    let amqp = Amqp::connect();
    let queue = unique("first-leaves");
    amqp.declare(&queue);
    let target = format!("/?id={queue}");
    let first = Stream::open(server.addr, &target, &[]);
    let mut second = Stream::open(server.addr, &target, &[]);
    server.wait_log("following the stream that consumes it here");
    amqp.publish_all(&queue, &numbered(1, 5));
    assert_eq!(data(&second.next_events(5)), numbered(1, 5));
    first.reset();
    amqp.publish_all(&queue, &numbered(6, 10));
    assert_eq!(data(&second.next_events(5)), numbered(6, 10));
    assert_eq!(amqp.consumers(&queue), 1, "still consumed for the follower");
    second.close();
    // Nothing was acked (all within the window): it is all back in the queue once the stream's
    // channel has closed (its consumer is cancelled first, so the count alone is not enough).
    wait_for(
        "the queue free again, holding all ten",
        Duration::from_secs(10),
        || amqp.consumers(&queue) == 0 && amqp.ready(&queue) == 10,
    );
    assert_eq!(amqp.drain(&queue), numbered(1, 10));
}

#[test]
fn a_reader_whose_last_event_is_no_longer_held_is_told_of_a_gap() {
    let server = Server::start(&[("EVENTSOURCED_QUEUE_REPLAY_AGE", "1")]).ready();
    let amqp = Amqp::connect();
    let queue = unique("gap");
    amqp.declare(&queue);
    let target = format!("/?id={queue}");
    let mut holder = Stream::open(server.addr, &target, &[]);
    amqp.publish_all(&queue, &numbered(1, 10));
    let events = holder.next_events(10);
    wait_for("the window released", Duration::from_secs(10), || {
        counts(&queue).0 == "1"
    });
    // A follower whose last event was released.
    let first_id = events[0].id.clone().expect("an id");
    let mut behind = Stream::open(server.addr, &target, &[("Last-Event-ID", &first_id)]);
    let gap = behind.next_event().expect("an event");
    assert_eq!(gap.event.as_deref(), Some("gap"));
    assert_eq!(
        gap.id.as_deref(),
        Some(""),
        "the browser's last id is reset"
    );
    // Then what is still held: the newest.
    assert_eq!(data(&behind.next_events(1)), ["m10"]);
    // A follower whose last event is the newest has missed nothing.
    let newest = events[9].id.clone().expect("an id");
    let mut caught_up = Stream::open(server.addr, &target, &[("Last-Event-ID", &newest)]);
    amqp.publish_all(&queue, &numbered(11, 11));
    assert_eq!(
        caught_up.next_event().and_then(|e| e.data).as_deref(),
        Some("m11")
    );
    drop((holder, behind, caught_up));
    // The stream that consumes (no other here): an unknown id is a gap too.
    let other = unique("gap-holder");
    amqp.declare(&other);
    amqp.publish_all(&other, &numbered(1, 2));
    let mut unknown = Stream::open(
        server.addr,
        &format!("/?id={other}"),
        &[("Last-Event-ID", "not-an-event-here")],
    );
    let gap = unknown.next_event().expect("an event");
    assert_eq!(gap.event.as_deref(), Some("gap"));
    assert_eq!(data(&unknown.next_events(2)), numbered(1, 2));
}

#[test]
fn a_client_that_was_quiet_past_the_age_bound_comes_back_without_a_gap() {
    let server = Server::start(&[("EVENTSOURCED_QUEUE_REPLAY_AGE", "1")]).ready();
    let amqp = Amqp::connect();
    let queue = unique("quiet");
    amqp.declare(&queue);
    let target = format!("/?id={queue}");
    let mut stream = Stream::open(server.addr, &target, &[]);
    amqp.publish_all(&queue, &numbered(1, 3));
    let events = stream.next_events(3);
    wait_for("all but the newest acked", Duration::from_secs(10), || {
        counts(&queue) == ("1".into(), "0".into())
    });
    stream.close();
    let last = events[2].id.clone().expect("an id");
    let mut back = Stream::open(server.addr, &target, &[("Last-Event-ID", &last)]);
    amqp.publish_all(&queue, &numbered(4, 4));
    let next = back.next_event().expect("an event");
    assert_eq!(next.event, None, "no gap: {next:?}");
    assert_eq!(next.data.as_deref(), Some("m4"));
}

#[test]
fn readers_split_over_two_instances_each_get_every_message_and_nobody_takes_the_queue() {
    let short = [("EVENTSOURCED_QUEUE_REPLAY_AGE", "1")];
    let (a, b) = (Server::start(&short).ready(), Server::start(&short).ready());
    let amqp = Amqp::connect();
    let queue = unique("split");
    amqp.declare(&queue);
    let target = format!("/?id={queue}");
    let mut on_a = Stream::open(a.addr, &target, &[]);
    wait_for("a consumes the queue", support::WAIT, || {
        amqp.consumers(&queue) == 1
    });
    let mut on_b = Stream::open(b.addr, &target, &[]);
    assert_eq!(on_b.status, 200);
    b.wait_log("following the stream another instance holds");
    let mut second_on_b = Stream::open(b.addr, &target, &[]);
    b.wait_log_count("following the stream another instance holds", 2);
    let published = numbered(1, 60);
    for (n, m) in published.iter().enumerate() {
        amqp.publish(&queue, m);
        if n % 20 == 19 {
            std::thread::sleep(Duration::from_millis(1100));
        }
    }
    for (name, stream) in [("a", &mut on_a), ("b", &mut on_b), ("b2", &mut second_on_b)] {
        assert_eq!(data(&stream.next_events(60)), published, "reader on {name}");
    }
    wait_for(
        "acks while readers on both read",
        Duration::from_secs(10),
        || counts(&queue) == ("1".into(), "0".into()),
    );
    assert_eq!(amqp.consumers(&queue), 1, "one consumer, on a");
    // A reader on b leaves; it comes back to b later with the last event it read.
    on_b.close();
    amqp.publish_all(&queue, &numbered(61, 70));
    let events = on_a.next_events(10);
    assert_eq!(data(&events), numbered(61, 70));
    assert_eq!(data(&second_on_b.next_events(10)), numbered(61, 70));
    let fifth = events[4].id.clone().expect("an id");
    let mut back = Stream::open(b.addr, &target, &[("Last-Event-ID", &fifth)]);
    assert_eq!(data(&back.next_events(5)), numbered(66, 70));
    // The reader on a leaves first: a consumes on for the readers on b.
    on_a.close();
    amqp.publish_all(&queue, &numbered(71, 72));
    assert_eq!(data(&back.next_events(2)), numbered(71, 72));
    assert_eq!(data(&second_on_b.next_events(2)), numbered(71, 72));
    assert!(!a.log_text().contains("taken over") && !b.log_text().contains("taken over"));
}

#[test]
fn the_readers_on_another_instance_end_when_the_holder_does_and_come_back_to_the_queue() {
    let (a, b) = (Server::start(&[]).ready(), Server::start(&[]).ready());
    let amqp = Amqp::connect();
    let queue = unique("holder-gone");
    amqp.declare(&queue);
    let target = format!("/?id={queue}");
    let on_a = Stream::open(a.addr, &target, &[]);
    wait_for("a consumes the queue", support::WAIT, || {
        amqp.consumers(&queue) == 1
    });
    let mut on_b = Stream::open(b.addr, &target, &[]);
    b.wait_log("following the stream another instance holds");
    amqp.publish_all(&queue, &numbered(1, 3));
    let events = on_b.next_events(3);
    assert_eq!(data(&events), numbered(1, 3));
    // The instance that holds the queue stops: the reader on b is told, by the stream's end.
    drop(on_a);
    drop(a);
    assert!(
        on_b.closed_by_server(Duration::from_secs(10)),
        "b's stream ended"
    );
    // Its browser comes back (to b, say) and is served from the queue, after its last event.
    let last = events[2].id.clone().expect("an id");
    amqp.publish_all(&queue, &numbered(4, 5));
    let mut back = None;
    wait_for("b serves the queue itself", Duration::from_secs(10), || {
        back = Stream::try_open(b.addr, &target, &[("Last-Event-ID", &last)])
            .filter(|s| s.status == 200 && s.header("X-Status-Reason").is_none());
        back.is_some()
    });
    let mut back = back.expect("a stream");
    assert_eq!(data(&back.next_events(2)), numbered(4, 5));
}

#[test]
fn a_reader_older_than_the_kept_frames_is_served_exactly_by_a_takeover() {
    // Room for a few frames only, so that the window holds more than the feed keeps.
    let server = Server::start(&[("EVENTSOURCED_QUEUE_SHARED_BYTES", "200")]).ready();
    let amqp = Amqp::connect();
    let queue = unique("older");
    amqp.declare(&queue);
    let target = format!("/?id={queue}");
    let mut first = Stream::open(server.addr, &target, &[]);
    amqp.publish_all(&queue, &numbered(1, 20));
    let events = first.next_events(20);
    let fifth = events[4].id.clone().expect("an id");
    let mut behind = Stream::open(server.addr, &target, &[("Last-Event-ID", &fifth)]);
    assert_eq!(
        data(&behind.next_events(15)),
        numbered(6, 20),
        "exactly what it missed"
    );
    // The first reader's stream was taken over; it comes back with its last event and follows.
    assert!(first.closed_by_server(support::WAIT));
    let newest = events[19].id.clone().expect("an id");
    let mut back = Stream::open(server.addr, &target, &[("Last-Event-ID", &newest)]);
    amqp.publish_all(&queue, &numbered(21, 22));
    assert_eq!(data(&back.next_events(2)), numbered(21, 22));
    assert_eq!(data(&behind.next_events(2)), numbered(21, 22));
    server.wait_log("following the stream that consumes it here");
}

/// A socket to `addr` whose receive buffer is a few kilobytes before it connects, so that a
/// reader that stops reading is felt after little traffic.
fn small_window_socket(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpStream> {
    use std::os::fd::FromRawFd;
    let std::net::SocketAddr::V4(v4) = addr else {
        return Err(std::io::Error::other("the test server listens on IPv4"));
    };
    // SAFETY: a new socket, options set with a live int of the size given, connect with a
    // sockaddr_in built here; the descriptor is owned by the TcpStream from then on.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = std::net::TcpStream::from_raw_fd(fd);
        let bytes: libc::c_int = 4096;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let address = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let connected = libc::connect(
            fd,
            (&address as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if connected != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

#[test]
fn a_follower_that_stops_reading_holds_the_holders_acks_back() {
    let server = Server::start(&[("EVENTSOURCED_QUEUE_REPLAY_AGE", "1")]).ready();
    let amqp = Amqp::connect();
    let queue = unique("stalled-follower");
    amqp.declare(&queue);
    let target = format!("/?id={queue}");
    let mut holder = Stream::open(server.addr, &target, &[]);
    let stalled = Stream::try_open_with(
        || small_window_socket(server.addr),
        server.addr,
        &target,
        &[],
    )
    .expect("the follower's stream");
    assert_eq!(stalled.status, 200);
    server.wait_log("following the stream that consumes it here");
    let body = "x".repeat(2000);
    for _ in 0..400 {
        amqp.publish(&queue, &body);
    }
    assert_eq!(holder.next_events(400).len(), 400);
    // Past the age bound, the holder's own client has everything: only the follower, which
    // reads nothing, holds the acks back. (Watching that nothing happens takes a while.)
    std::thread::sleep(Duration::from_millis(2500));
    let (unacked, _) = counts(&queue);
    let held: u32 = unacked.parse().expect("a count");
    assert!(
        held > 100,
        "only {held} held for a follower that read nothing"
    );
    // It leaves: what it held back is released, but the newest.
    stalled.reset();
    wait_for(
        "the window released once the follower left",
        Duration::from_secs(10),
        || counts(&queue).0 == "1",
    );
}

#[test]
fn a_stale_id_beyond_the_kept_frames_is_a_gap_and_takes_nothing_over() {
    let server = Server::start(&[("EVENTSOURCED_QUEUE_SHARED_BYTES", "200")]).ready();
    let amqp = Amqp::connect();
    let queue = unique("stale");
    amqp.declare(&queue);
    let target = format!("/?id={queue}");
    let mut first = Stream::open(server.addr, &target, &[]);
    amqp.publish_all(&queue, &numbered(1, 20));
    first.next_events(20);
    // A reload that names an event from long ago, which the window does not hold.
    let mut reloaded = Stream::open(server.addr, &target, &[("Last-Event-ID", "from-last-week")]);
    let gap = reloaded.next_event().expect("an event");
    assert_eq!(gap.event.as_deref(), Some("gap"));
    amqp.publish_all(&queue, &numbered(21, 21));
    assert_eq!(
        first.next_data().as_deref(),
        Some("m21"),
        "the first reader goes on"
    );
    assert!(!server.log_text().contains("taken over"));
}
