//! Numbered messages, `m1`, `m2`, …: what the loss tests publish, and the one check of what a
//! client received against what was published. Nothing may be missing; duplicates are allowed
//! (delivery is at least once) but counted, and printed with the rest (`--nocapture`).

use std::collections::{BTreeMap, BTreeSet};

/// Messages `m{from}` to `m{to}`.
pub fn numbered(from: u32, to: u32) -> Vec<String> {
    (from..=to).map(|n| format!("m{n}")).collect()
}

/// True when every message of `expected` is among `received`.
pub fn has_all(received: &[String], expected: &[String]) -> bool {
    let got: BTreeSet<&String> = received.iter().collect();
    expected.iter().all(|m| got.contains(m))
}

/// Prints a line for `what` (published, received, missing, duplicated) and fails when anything
/// published is missing from `received`.
pub fn assert_none_missing(what: &str, published: &[String], received: &[String]) {
    let (missing, _) = tally(what, published, received);
    assert!(missing.is_empty(), "{what}: missing {missing:?}");
}

/// As `assert_none_missing`, and fails on a duplicate too: what a client that says where it is
/// must get.
pub fn assert_exactly_once(what: &str, published: &[String], received: &[String]) {
    let (missing, duplicated) = tally(what, published, received);
    assert!(missing.is_empty(), "{what}: missing {missing:?}");
    assert_eq!(duplicated, 0, "{what}: {duplicated} duplicates");
}

/// Prints the line and returns what is missing and how many duplicates arrived.
fn tally<'a>(what: &str, published: &'a [String], received: &[String]) -> (Vec<&'a String>, usize) {
    let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
    for m in received {
        *counts.entry(m).or_default() += 1;
    }
    let missing: Vec<&String> = published
        .iter()
        .filter(|m| !counts.contains_key(m))
        .collect();
    let duplicated: usize = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "{what:<39} published {:>4}  received {:>4}  missing {:>2}  duplicated {:>3}",
        published.len(),
        received.len(),
        missing.len(),
        duplicated
    );
    (missing, duplicated)
}
