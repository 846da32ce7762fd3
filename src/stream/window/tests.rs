use super::*;

const LOTS: u64 = u64::MAX;

fn up_to(newest: u64, count: usize) -> Release<u64> {
    Release::UpTo { newest, count }
}

fn bounds(messages: usize, bytes: u64, age_secs: u64) -> Bounds {
    Bounds {
        messages,
        bytes,
        age: Duration::from_secs(age_secs),
    }
}

/// Holds tags `tags` as 10-byte frames written back to back from offset `start`.
fn fill(window: &mut AckWindow, tags: impl IntoIterator<Item = u64>, at: Instant) {
    for tag in tags {
        let end = (window.len() as u64 + 1) * 10;
        window.hold(tag, end, 10, at);
    }
}

#[test]
fn nothing_is_acked_within_the_bounds() {
    let now = Instant::now();
    let mut window = AckWindow::new(bounds(5, LOTS, 60));
    fill(&mut window, 1..=5, now);
    assert!(!window.over_bounds(now));
    assert_eq!(window.release(LOTS, now), Release::Nothing);
    assert_eq!(window.len(), 5);
    window.hold(6, 60, 10, now);
    assert!(window.over_bounds(now));
}

#[test]
fn the_count_bound_slides_with_one_multiple_ack() {
    let now = Instant::now();
    let mut window = AckWindow::new(bounds(3, LOTS, 60));
    fill(&mut window, 1..=7, now);
    assert_eq!(window.release(LOTS, now), up_to(4, 4));
    assert_eq!(window.len(), 3);
    window.hold(8, 80, 10, now);
    assert_eq!(window.release(LOTS, now), up_to(5, 1));
}

#[test]
fn the_byte_bound_counts_frame_bytes() {
    let now = Instant::now();
    let mut window = AckWindow::new(bounds(100, 25, 60));
    fill(&mut window, 1..=4, now);
    // 40 bytes held, 25 allowed: the two oldest go.
    assert_eq!(window.release(LOTS, now), up_to(2, 2));
    assert_eq!(window.release(LOTS, now), Release::Nothing);
}

#[test]
fn the_age_bound_acks_what_is_older_and_says_when_next() {
    let start = Instant::now();
    let mut window = AckWindow::new(bounds(100, LOTS, 10));
    fill(&mut window, 1..=2, start);
    let later = start + Duration::from_secs(4);
    window.hold(3, 30, 10, later);
    assert_eq!(window.next_expiry(), Some(start + Duration::from_secs(10)));
    assert_eq!(
        window.release(LOTS, start + Duration::from_secs(9)),
        Release::Nothing
    );
    assert_eq!(
        window.release(LOTS, start + Duration::from_secs(10)),
        up_to(2, 2)
    );
    // The newest is kept whatever its age: nothing is due while it is alone.
    assert_eq!(window.next_expiry(), None);
    window.hold(4, 40, 10, later + Duration::from_secs(1));
    assert_eq!(window.next_expiry(), Some(later + Duration::from_secs(10)));
}

#[test]
fn a_quiet_stream_past_the_age_bound_has_nothing_due() {
    // A stream's loop sleeps until `next_expiry`; one in the past would wake it at once,
    // forever, once its last message is older than the bound.
    let start = Instant::now();
    let mut window = AckWindow::new(bounds(4096, LOTS, 120));
    fill(&mut window, 1..=4, start);
    let after = start + Duration::from_secs(121);
    assert_eq!(window.release(LOTS, after), up_to(3, 3));
    assert_eq!(window.len(), 1);
    assert!(!window.over_bounds(after));
    assert_eq!(window.next_expiry(), None);
}

#[test]
fn nothing_the_clients_tcp_has_not_acknowledged_is_acked() {
    let now = Instant::now();
    let mut window = AckWindow::new(bounds(1, LOTS, 60));
    fill(&mut window, 1..=4, now);
    // Only the first two frames (20 bytes) reached the client's kernel.
    assert_eq!(window.release(20, now), up_to(2, 2));
    assert!(window.waiting_on_client_tcp(20, now));
    assert_eq!(window.release(20, now), Release::Nothing);
    assert_eq!(window.release(40, now), up_to(3, 1));
    assert!(!window.waiting_on_client_tcp(40, now));
}

#[test]
fn out_of_order_redeliveries_are_acked_one_by_one() {
    let now = Instant::now();
    let mut window = AckWindow::new(bounds(2, LOTS, 60));
    // A resumed stream: redeliveries (tags 5, 6) arrived after fresh ones (1, 2) but were
    // written first.
    fill(&mut window, [5, 6, 1, 2], now);
    assert_eq!(window.release(LOTS, now), Release::Each(vec![5, 6]));
    window.hold(7, 50, 10, now);
    // Tag 1 is now the oldest, and nothing held is lower: one multiple ack again.
    assert_eq!(window.release(LOTS, now), up_to(1, 1));
}

#[test]
fn a_resumed_first_batch_longer_than_a_chunk_is_acked_one_by_one_across_chunks() {
    let now = Instant::now();
    let mut window = AckWindow::new(bounds(10, LOTS, 3600));
    // 51 redeliveries (60 to 110), then 9 fresh messages with lower tags, in one write.
    let tags = (60..=110).chain(1..=9);
    let batch: Vec<(u64, u64, u64)> = tags.zip(1..).map(|(tag, i)| (tag, i * 10, 10)).collect();
    window.hold_batch(batch, now);
    assert_eq!(window.chunks(), 2);
    assert_eq!(
        window.release(LOTS, now),
        Release::Each((60..=109).collect())
    );
    assert_eq!(window.len(), 10);
    assert_eq!(window.chunks(), 1);
    window.hold(111, 610, 10, now);
    // 110 goes alone: 1 to 9, held after it, are lower.
    assert_eq!(window.release(LOTS, now), Release::Each(vec![110]));
    // In order again: one multiple ack.
    window.hold(112, 620, 10, now);
    assert_eq!(window.release(LOTS, now), up_to(1, 1));
}

#[test]
fn a_multiple_ack_covers_lower_tags_released_together() {
    let now = Instant::now();
    let mut window = AckWindow::new(bounds(1, LOTS, 60));
    fill(&mut window, [5, 6, 1, 2, 9], now);
    // Everything but the newest goes, and nothing left is lower than 6.
    assert_eq!(window.release(LOTS, now), up_to(6, 4));
}

#[test]
fn a_held_delivery_takes_twenty_four_bytes() {
    assert_eq!(std::mem::size_of::<Held>(), 24);
}

#[test]
fn a_burst_takes_chunks_and_gives_them_back_once_released() {
    let bounds = Bounds {
        messages: 0,
        bytes: u64::MAX,
        age: Duration::from_secs(3600),
    };
    let mut window = AckWindow::new(bounds);
    let now = Instant::now();
    let burst: Vec<(u64, u64, u64)> = (1..=1000).map(|t| (t, t * 10, 10)).collect();
    window.hold_batch(burst, now);
    assert_eq!(window.chunks(), 1000_usize.div_ceil(CHUNK));
    assert_eq!(window.release(10_000, now).count(), 1000);
    assert_eq!(window.chunks(), 0, "an emptied window holds no chunk");
}

#[test]
fn a_steady_stream_takes_the_chunks_it_holds() {
    let mut window = AckWindow::new(bounds(20, LOTS, 3600));
    let now = Instant::now();
    fill(&mut window, 1..=120, now);
    assert_eq!(window.chunks(), 120_usize.div_ceil(CHUNK));
    // Most of it released: the chunks follow.
    assert_eq!(window.release(LOTS, now).count(), 100);
    // 101 to 120: the third chunk's last twenty.
    assert_eq!(window.chunks(), 1);
}

#[test]
fn a_chunk_of_the_window_is_about_a_kilobyte() {
    assert_eq!(CHUNK * std::mem::size_of::<Held>(), 1008);
}

#[test]
fn a_window_weeks_old_still_ages_its_deliveries() {
    let start = Instant::now();
    let mut window = AckWindow::new(bounds(usize::MAX, LOTS, 60));
    window.hold(1, 10, 10, start);
    window.hold(2, 20, 10, start);
    assert_eq!(
        window.release(20, start + Duration::from_secs(61)),
        up_to(1, 1)
    );
    // Fifty days on: past what milliseconds in 32 bits count.
    let later = start + Duration::from_secs(50 * 86_400);
    window.hold(3, 30, 10, later);
    window.hold(4, 40, 10, later);
    assert_eq!(
        window.release(40, later + Duration::from_secs(59)),
        up_to(2, 1),
        "the first days' last is long past its age"
    );
    assert_eq!(window.next_expiry(), Some(later + Duration::from_secs(60)));
    assert_eq!(
        window.release(40, later + Duration::from_secs(59)),
        Release::Nothing
    );
    assert_eq!(
        window.release(40, later + Duration::from_secs(60)),
        up_to(3, 1)
    );
}

#[test]
fn the_newest_delivery_stays_held_to_mark_where_the_client_is() {
    let now = Instant::now();
    let mut window = AckWindow::new(bounds(2, LOTS, 1));
    fill(&mut window, 1..=3, now);
    let later = now + Duration::from_secs(2);
    assert!(window.over_bounds(later));
    assert_eq!(window.release(LOTS, later), up_to(2, 2));
    assert_eq!(window.len(), 1);
    assert!(!window.over_bounds(later + Duration::from_secs(60)));
    assert_eq!(window.release(LOTS, later), Release::Nothing);
    // Without a window, nothing is held at all.
    let mut none = AckWindow::new(bounds(0, LOTS, 1));
    fill(&mut none, 1..=2, now);
    assert_eq!(none.release(LOTS, now), up_to(2, 2));
}

#[test]
fn a_batch_is_released_but_for_its_newest_once_all_of_it_is_due() {
    let now = Instant::now();
    let mut window = AckWindow::new(bounds(usize::MAX, LOTS, 1));
    window.hold_batch(vec![(1, 10, 10), (2, 20, 10), (3, 30, 10)], now);
    let later = now + Duration::from_secs(2);
    assert_eq!(window.release(LOTS, later), up_to(2, 2));
    assert_eq!(window.len(), 1);
}

#[test]
fn followers_hold_releases_back_to_what_they_all_have() {
    let now = Instant::now();
    let mut window = AckWindow::new(bounds(0, LOTS, 1));
    fill(&mut window, 1..=4, now);
    assert!(window.waiting_on_readers(LOTS, 1, now));
    assert_eq!(window.release_within(LOTS, 1, now), up_to(1, 1));
    assert_eq!(window.release_within(LOTS, 0, now), Release::Nothing);
    assert!(!window.waiting_on_readers(LOTS, usize::MAX, now));
    assert_eq!(window.release_within(LOTS, usize::MAX, now), up_to(4, 3));
}

/// A batch of `tags` as one write of 10-byte frames after what `window` holds.
fn batch(window: &AckWindow, tags: &[u64]) -> Vec<(u64, u64, u64)> {
    let start = window.len() as u64 * 10;
    tags.iter()
        .enumerate()
        .map(|(i, &tag)| (tag, start + (i as u64 + 1) * 10, 10))
        .collect()
}

#[test]
fn an_in_order_batch_is_acked_at_its_end() {
    let now = Instant::now();
    let mut window = AckWindow::new(bounds(2, LOTS, 60));
    window.hold_batch(batch(&window, &[1, 2, 3, 4]), now);
    // 1 and 2 are past the bound, but an ack can only land on 4, which is not.
    assert_eq!(window.release(LOTS, now), Release::Nothing);
    assert!(window.over_bounds(now));
    window.hold_batch(batch(&window, &[5, 6]), now);
    assert_eq!(window.release(LOTS, now), up_to(4, 4));
    assert_eq!(window.len(), 2);
}

#[test]
fn a_resumed_first_batch_is_acked_one_by_one_until_it_is_in_order_again() {
    let now = Instant::now();
    let mut window = AckWindow::new(bounds(3, LOTS, 60));
    // Redeliveries 5, 6 before fresh 1, 2: every delivery of this batch is kept.
    window.hold_batch(batch(&window, &[5, 6, 1, 2]), now);
    assert_eq!(window.release(LOTS, now), Release::Each(vec![5]));
    window.hold_batch(batch(&window, &[7, 8, 9]), now);
    // 6, 1, 2 go, and nothing left is lower than 6: one multiple ack.
    assert_eq!(window.release(LOTS, now), up_to(6, 3));
    // In order again: the next batch is acked at its end.
    window.hold_batch(batch(&window, &[10, 11, 12]), now);
    assert_eq!(window.release(LOTS, now), up_to(9, 3));
}

#[test]
fn an_unbounded_age_never_expires() {
    let now = Instant::now();
    let mut window = AckWindow::new(Bounds {
        messages: 1,
        bytes: u64::MAX,
        age: Duration::MAX,
    });
    window.hold(1u64, 10, 10, now);
    assert_eq!(window.next_expiry(), None);
    assert_eq!(window.release(LOTS, now), Release::Nothing);
}

#[test]
fn an_empty_window_has_no_expiry_and_releases_nothing() {
    let now = Instant::now();
    let mut window: AckWindow = AckWindow::new(bounds(0, 0, 0));
    assert_eq!(window.next_expiry(), None);
    assert_eq!(window.release(LOTS, now), Release::Nothing);
    assert!(!window.waiting_on_client_tcp(0, now));
    // With every bound at zero, each delivery is acked as soon as the client's TCP has it.
    window.hold(1, 10, 10, now);
    assert_eq!(window.release(0, now), Release::Nothing);
    assert_eq!(window.release(10, now), up_to(1, 1));
}
