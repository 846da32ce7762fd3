//! The soak's load: the publisher (persistent, confirmed, resent when unconfirmed) and each
//! client (reads, drops its connection as planned, comes back with `Last-Event-ID`).

use super::*;

/// Publishes numbered, persistent messages round-robin over the queues at `rate` until `end`,
/// with publisher confirms; what the broker did not confirm (a nack, or a connection lost
/// with the broker) is published again. Returns true when every message ended confirmed.
pub(super) fn publish(
    port: u16,
    prefix: &str,
    streams: usize,
    rate: f64,
    shared: &Shared,
    end: Instant,
) -> bool {
    let began = Instant::now();
    let give_up = end + Duration::from_secs(90);
    let mut due_total: u64 = 0;
    let mut next_queue = 0usize;
    // Sent, not yet confirmed: delivery tag → (queue, number), on the current channel.
    let mut unconfirmed: BTreeMap<u64, (usize, u32)> = BTreeMap::new();
    // To send (again) before any new message.
    let mut resend: Vec<(usize, u32)> = Vec::new();
    let properties = AmqpProperties::default().with_delivery_mode(2);
    while Instant::now() < give_up {
        let Ok(amqp) = Amqp::connect_to(port) else {
            thread::sleep(Duration::from_millis(500));
            continue;
        };
        let confirms = match amqp
            .channel()
            .enable_publisher_confirms()
            .and_then(|_| amqp.channel().listen_for_publisher_confirms())
        {
            Ok(c) => c,
            Err(_) => {
                thread::sleep(Duration::from_millis(500));
                continue;
            }
        };
        let mut tag = 0u64;
        let mut broken = false;
        while !broken && Instant::now() < give_up {
            let publishing = Instant::now() < end;
            if !publishing && resend.is_empty() && unconfirmed.is_empty() {
                shared.final_counts.store(true, Ordering::SeqCst);
                return true;
            }
            // What is due by now at the steady rate, after anything to resend.
            let mut batch = std::mem::take(&mut resend);
            let is_resend = batch.len();
            if publishing {
                let due = (began.elapsed().as_secs_f64() * rate) as u64;
                while due_total < due && batch.len() < 5000 {
                    let q = next_queue;
                    next_queue = (next_queue + 1) % streams;
                    let n = shared.published[q].fetch_add(1, Ordering::SeqCst) + 1;
                    batch.push((q, n));
                    due_total += 1;
                }
            }
            for (k, &(q, n)) in batch.iter().enumerate() {
                if broken {
                    resend.push((q, n));
                    continue;
                }
                let sent = amqp.channel().basic_publish(
                    "",
                    Publish::with_properties(
                        body(n).as_bytes(),
                        queue_name(prefix, q),
                        properties.clone(),
                    ),
                );
                if sent.is_err() {
                    broken = true;
                    resend.push((q, n));
                    continue;
                }
                if k < is_resend {
                    shared.republished.lock().unwrap().insert((q, n));
                }
                tag += 1;
                unconfirmed.insert(tag, (q, n));
            }
            // Confirms, for up to 10 ms.
            let wait_until = Instant::now() + Duration::from_millis(10);
            loop {
                let left = wait_until.saturating_duration_since(Instant::now());
                match confirms.recv_timeout(left) {
                    Ok(Confirm::Ack(p)) => {
                        take_confirmed(&mut unconfirmed, p.delivery_tag, p.multiple);
                    }
                    Ok(Confirm::Nack(p)) => {
                        resend.extend(take_confirmed(&mut unconfirmed, p.delivery_tag, p.multiple));
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => break,
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                        broken = true;
                        break;
                    }
                }
            }
        }
        if broken {
            // The channel is gone: whatever it did not confirm is sent again on the next one.
            let mut lost: Vec<(usize, u32)> =
                std::mem::take(&mut unconfirmed).into_values().collect();
            lost.append(&mut resend);
            resend = lost;
            eprintln!(
                "soak: publisher lost its channel; {} messages to send again",
                resend.len()
            );
            thread::sleep(Duration::from_millis(500));
        }
    }
    shared.final_counts.store(true, Ordering::SeqCst);
    eprintln!(
        "soak: publisher gave up with {} unconfirmed and {} unsent",
        unconfirmed.len(),
        resend.len()
    );
    false
}

/// Removes the confirmed tag (and every tag below it when `multiple`), returning their messages.
pub(super) fn take_confirmed(
    unconfirmed: &mut BTreeMap<u64, (usize, u32)>,
    tag: u64,
    multiple: bool,
) -> Vec<(usize, u32)> {
    if multiple {
        let rest = unconfirmed.split_off(&(tag + 1));
        std::mem::replace(unconfirmed, rest).into_values().collect()
    } else {
        unconfirmed.remove(&tag).into_iter().collect()
    }
}

/// What one client read: how many times each number arrived, and how it got there.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) counts: Vec<u16>,
    pub(super) highest: u32,
    pub(super) out_of_order: u64,
    pub(super) drops: [u64; 3],
    pub(super) reconnects: u64,
    pub(super) published: u32,
    /// The minute of the run in which each repeated message arrived again.
    pub(super) repeated_in_minute: Vec<u32>,
}

impl Tally {
    fn record(&mut self, number: u32, minute: u32) {
        let index = number as usize - 1;
        if self.counts.len() <= index {
            self.counts.resize(index + 1, 0);
        }
        if number < self.highest && self.counts[index] == 0 {
            self.out_of_order += 1;
        }
        self.highest = self.highest.max(number);
        if self.counts[index] > 0 {
            self.repeated_in_minute.push(minute);
        }
        self.counts[index] = self.counts[index].saturating_add(1);
    }

    fn has_all(&self, published: u32) -> bool {
        self.counts.len() >= published as usize
            && self.counts[..published as usize].iter().all(|&c| c > 0)
    }
}

/// How a client leaves when its turn comes.
#[derive(Clone, Copy)]
enum Leave {
    Fin,
    Reset,
    StallThenReset,
}

/// One EventSource-like client of queue `index`: reads, and each tenth minute of its group
/// leaves (by FIN, RST, or a 20 s stall then RST), coming back with `Last-Event-ID`. A stream the
/// server ends is reconnected a second later, as a browser does.
pub(super) fn client(
    index: usize,
    queue: &str,
    addr: std::net::SocketAddr,
    shared: &Shared,
    began: Instant,
    hard_end: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut last_id: Option<String> = None;
    let target = format!("/?id={queue}");
    let how = match (index / 10) % 3 {
        0 => Leave::Fin,
        1 => Leave::Reset,
        _ => Leave::StallThenReset,
    };
    // Group index % 10 leaves in the minutes m with m % 10 == group, spread over the minute.
    let offset = Duration::from_secs((index % 10) as u64 * 60 + ((index / 10) % 60) as u64);
    let mut next_drop = began + offset;
    let mut first = true;
    while Instant::now() < hard_end && !shared.stop.load(Ordering::Relaxed) {
        if !first {
            thread::sleep(Duration::from_millis(1000));
        }
        first = false;
        let headers: Vec<(&str, &str)> = last_id
            .as_deref()
            .map(|id| vec![("Last-Event-ID", id)])
            .unwrap_or_default();
        let Some(mut stream) = Stream::try_open(addr, &target, &headers) else {
            continue;
        };
        if stream.status != 200 {
            continue;
        }
        tally.reconnects += 1;
        shared.connected.fetch_add(1, Ordering::Relaxed);
        let ended = loop {
            if Instant::now() >= hard_end || shared.stop.load(Ordering::Relaxed) {
                break Some(stream);
            }
            let draining = shared.draining.load(Ordering::Relaxed);
            if draining && shared.final_counts.load(Ordering::Relaxed) {
                let published = shared.published[index].load(Ordering::SeqCst);
                if tally.has_all(published) {
                    tally.published = published;
                    break Some(stream);
                }
            }
            if !draining && Instant::now() >= next_drop {
                next_drop += Duration::from_secs(600);
                shared.connected.fetch_sub(1, Ordering::Relaxed);
                match how {
                    Leave::Fin => stream.close(),
                    Leave::Reset => stream.reset(),
                    Leave::StallThenReset => {
                        let until = Instant::now() + STALL;
                        while Instant::now() < until && !shared.stop.load(Ordering::Relaxed) {
                            thread::sleep(Duration::from_millis(200));
                        }
                        stream.reset();
                    }
                }
                tally.drops[how as usize] += 1;
                break None;
            }
            match stream.next_event_within(Duration::from_millis(200)) {
                Ok(Some(event)) => {
                    let number = event
                        .data
                        .as_deref()
                        .and_then(|d| d.split(' ').next())
                        .and_then(|n| n.parse::<u32>().ok());
                    match number {
                        Some(n) if n > 0 => {
                            tally.record(n, (began.elapsed().as_secs() / 60) as u32)
                        }
                        _ => eprintln!("soak: {queue}: unexpected event {event:?}"),
                    }
                    shared.received.fetch_add(1, Ordering::Relaxed);
                    if event.id.is_some() {
                        last_id = event.id;
                    }
                }
                // The server ended the stream (the broker went away, say): come back.
                Ok(None) => {
                    shared.connected.fetch_sub(1, Ordering::Relaxed);
                    break None;
                }
                Err(()) => {}
            }
        };
        if let Some(stream) = ended {
            shared.connected.fetch_sub(1, Ordering::Relaxed);
            stream.close();
            break;
        }
    }
    if tally.published == 0 {
        tally.published = shared.published[index].load(Ordering::SeqCst);
    }
    tally
}
