//! A glibc build serving streams runs without glibc's per-thread caches of freed blocks (it runs
//! itself again at start with `GLIBC_TUNABLES`), keeps what the environment already says, and
//! says at start what is in force. (glibc rewrites the variable in `/proc/PID/environ` as it
//! reads it, so the process's own word is the one to check.)

mod support;

use support::server::Server;

/// What the server says at start about glibc's caches, or `None` (said loudly) when it is not a
/// glibc build.
fn glibc_line(env: &[(&str, &str)]) -> Option<String> {
    let server = Server::start(env).ready();
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", server.pid())).expect("maps");
    if !maps.contains("libc.so.6") {
        eprintln!("SKIPPED: the server under test is not a glibc build");
        return None;
    }
    let log = server.log_text();
    let line = log.lines().find(|l| l.contains("glibc malloc: "));
    Some(line.expect("a line about glibc's caches").to_string())
}

#[test]
fn a_glibc_build_serves_without_per_thread_caches() {
    if let Some(line) = glibc_line(&[]) {
        assert!(
            line.contains("INFO") && line.ends_with("GLIBC_TUNABLES=glibc.malloc.tcache_count=0"),
            "{line}"
        );
    }
}

#[test]
fn the_tunables_the_environment_sets_are_kept() {
    let own = [("GLIBC_TUNABLES", "glibc.malloc.tcache_count=3")];
    if let Some(line) = glibc_line(&own) {
        assert!(
            line.ends_with("GLIBC_TUNABLES=glibc.malloc.tcache_count=3"),
            "{line}"
        );
    }
    let other = [("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")];
    if let Some(line) = glibc_line(&other) {
        let both = "GLIBC_TUNABLES=glibc.malloc.arena_max=2:glibc.malloc.tcache_count=0";
        assert!(line.ends_with(both), "{line}");
    }
}
