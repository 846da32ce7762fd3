use super::*;
use crate::http::sse::Event;

fn frames(ids: &[&str]) -> Frames {
    let mut frames = Frames::new();
    for (tag, id) in ids.iter().enumerate() {
        let event = Event {
            id: Some(id),
            event: None,
            data: id.as_bytes(),
        };
        frames.push_event(tag as u64 + 1, false, &event);
    }
    frames
}

fn append(feed: &Feed, ids: &[&str]) {
    let batch = frames(ids);
    feed.append(&batch, 0..batch.len());
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// A feed that keeps a megabyte of frames.
fn kept() -> Feed {
    let feed = Feed::default();
    feed.keep(1 << 20);
    feed
}

fn at(next: u64, gap: bool) -> Option<Result<Start, ()>> {
    Some(Ok(Start::At { next, gap }))
}

#[test]
fn a_follower_waits_for_the_holder_then_reads_after_its_last_event() {
    let feed = kept();
    let follower = feed.follow().unwrap();
    assert_eq!(follower.start(Some("b")), None, "the holder is not ready");
    append(&feed, &["a", "b", "c"]);
    feed.ready();
    assert_eq!(follower.start(Some("b")), at(2, false));
    let mut out = Vec::new();
    assert_eq!(
        follower.read(2, 10, &mut out),
        Read::Frames { frames: 1, next: 3 }
    );
    assert_eq!(text(&out), "id: c\ndata: c\n\n");
    assert_eq!(follower.read(3, 10, &mut out), Read::Nothing);
}

#[test]
fn a_feed_that_keeps_only_the_newest_sends_older_readers_to_a_takeover() {
    let feed = Feed::default();
    feed.keep(1);
    append(&feed, &["a", "b"]);
    feed.ready();
    let follower = feed.follow().unwrap();
    // Its last event is the newest written: nothing is missing.
    assert_eq!(follower.start(Some("b")), at(2, false));
    // Another the window holds, but the log does not: a takeover can place it.
    assert_eq!(follower.start(Some("a")), Some(Ok(Start::Takeover)));
    assert_eq!(follower.start(None), at(1, false));
}

#[test]
fn an_event_held_nowhere_is_a_gap_and_a_fresh_page_gets_the_whole_log() {
    let feed = kept();
    append(&feed, &["a", "b"]);
    feed.ready();
    let follower = feed.follow().unwrap();
    assert_eq!(follower.start(Some("zz")), at(0, true));
    assert_eq!(follower.start(None), at(0, false));
}

#[test]
fn released_entries_leave_and_numbers_go_on() {
    let feed = kept();
    append(&feed, &["a", "b", "c"]);
    feed.ready();
    feed.release(2);
    append(&feed, &["d"]);
    let follower = feed.follow().unwrap();
    assert_eq!(follower.start(Some("a")), at(2, true));
    assert_eq!(follower.start(Some("c")), at(3, false));
    let mut out = Vec::new();
    follower.read(2, 1, &mut out);
    assert_eq!(text(&out), "id: c\ndata: c\n\n");
    out.clear();
    follower.read(2, 10, &mut out);
    assert_eq!(text(&out), "id: c\ndata: c\n\nid: d\ndata: d\n\n");
}

#[test]
fn only_the_newest_frames_within_the_budget_are_kept_but_unread_ones() {
    let feed = Feed::default();
    // Each frame of a one-letter id and body is 15 bytes: two fit in 30.
    feed.keep(30);
    append(&feed, &["a", "b", "c"]);
    feed.ready();
    let follower = feed.follow().unwrap();
    assert_eq!(follower.start(Some("b")), at(2, false));
    assert_eq!(follower.start(Some("a")), Some(Ok(Start::Takeover)));
    assert_eq!(follower.start(None), at(1, false));
    // Its reader has yet to read b and c: they stay past the budget.
    append(&feed, &["d", "e"]);
    let mut out = Vec::new();
    follower.read(1, 10, &mut out);
    assert_eq!(text(&out).matches("data:").count(), 4, "b to e");
    follower.acknowledge(5);
    append(&feed, &["f"]);
    assert_eq!(follower.start(Some("d")), Some(Ok(Start::Takeover)));
    assert_eq!(follower.start(Some("e")), at(5, false));
    // An event the window never held, or no longer holds, is a gap, not a takeover.
    assert_eq!(follower.start(Some("zz")), at(4, true));
    feed.release(1);
    assert_eq!(follower.start(Some("a")), at(4, true));
    assert_eq!(follower.start(Some("b")), Some(Ok(Start::Takeover)));
}

#[test]
fn a_follower_not_placed_yet_holds_releases_and_trimming_back() {
    let feed = Feed::default();
    feed.keep(30);
    append(&feed, &["a", "b"]);
    feed.ready();
    let follower = feed.follow().unwrap();
    assert_eq!(
        feed.acknowledged_by_followers(),
        Some(0),
        "nothing released"
    );
    append(&feed, &["c", "d"]);
    assert_eq!(follower.start(Some("a")), at(1, false), "nothing trimmed");
}

#[test]
fn an_id_that_comes_twice_resumes_after_its_oldest() {
    let feed = kept();
    append(&feed, &["r", "x", "y", "r", "z"]);
    feed.ready();
    let follower = feed.follow().unwrap();
    assert_eq!(follower.start(Some("r")), at(1, false));
}

#[test]
fn a_budget_of_nothing_still_keeps_what_followers_have_yet_to_read() {
    let feed = Feed::default();
    feed.keep(0);
    append(&feed, &["a"]);
    feed.ready();
    let follower = feed.follow().unwrap();
    assert_eq!(follower.start(Some("a")), at(1, false));
    append(&feed, &["b", "c"]);
    let mut out = Vec::new();
    assert_eq!(
        follower.read(1, 10, &mut out),
        Read::Frames { frames: 2, next: 3 }
    );
}

#[test]
fn the_slowest_follower_holds_releases_back() {
    let feed = kept();
    assert_eq!(feed.acknowledged_by_followers(), None);
    append(&feed, &["a", "b", "c", "d"]);
    feed.ready();
    let one = feed.follow().unwrap();
    let two = feed.follow().unwrap();
    one.start(None).unwrap().unwrap();
    two.start(Some("b")).unwrap().unwrap();
    assert_eq!(feed.acknowledged_by_followers(), Some(0));
    one.acknowledge(3);
    assert_eq!(feed.acknowledged_by_followers(), Some(2));
    assert!(feed.holder_woken().try_recv().is_ok());
    drop(two);
    assert_eq!(feed.acknowledged_by_followers(), Some(3));
    drop(one);
    assert_eq!(feed.followers(), 0);
}

#[test]
fn followers_end_with_the_holder_and_none_join_after() {
    let feed = Feed::default();
    append(&feed, &["a"]);
    feed.ready();
    let follower = feed.follow().unwrap();
    feed.end();
    assert!(follower.woken.try_recv().is_ok());
    assert_eq!(follower.read(0, 10, &mut Vec::new()), Read::Ended);
    assert_eq!(follower.start(None), Some(Err(())));
    assert!(feed.follow().is_none());
}
