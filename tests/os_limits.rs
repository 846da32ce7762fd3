//! The operating system's limits at start: the soft open-files limit is raised to the hard one,
//! and a pool larger than the limits allow is said plainly.

mod support;

use std::process::Command;
use support::{absent_broker_url, text};

/// The server started by `sh` after the `ulimit` commands given, for one second: what it logged.
fn start_under(ulimit: &str, env: &[(&str, &str)]) -> String {
    let binary = env!("CARGO_BIN_EXE_eventsourced");
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("{ulimit} && exec timeout 1 {binary}"))
        .env("EVENTSOURCED_SERVER_ADDRESS", "127.0.0.1:0")
        .env("EVENTSOURCED_BROKER_NODE", absent_broker_url())
        .env_remove("RUST_LOG");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("run the server under sh");
    text(&output.stderr)
}

#[test]
fn the_soft_open_files_limit_is_raised_to_the_hard_one() {
    let log = start_under("ulimit -Sn 512", &[]);
    assert!(
        log.contains("open files limit raised from 512 to "),
        "{log}"
    );
    assert!(!log.contains("may open only"), "{log}");
}

#[test]
fn a_pool_beyond_the_open_files_limit_is_said_at_start() {
    let log = start_under("ulimit -n 512", &[("EVENTSOURCED_SERVER_WORKERS", "1024")]);
    assert!(
        log.contains("server.workers is 1024, but this process may open only 512 files"),
        "{log}"
    );
    // It still serves what it can.
    assert!(log.contains("listening on"), "{log}");
}
