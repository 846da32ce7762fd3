//! The command line as a user meets it: `-v`, `-c`, `--config`, and a bad config refused with
//! its file, key and line.

mod support;

use support::{run_eventsourced, text, TempDir};

#[test]
fn version_names_the_commit() {
    let out = run_eventsourced(&["-v"], &[]);
    assert!(out.status.success());
    let line = text(&out.stdout);
    assert!(
        line.starts_with(&format!(
            "eventsourced {} (commit ",
            env!("CARGO_PKG_VERSION")
        )),
        "{line}"
    );
}

#[test]
fn dump_shows_defaults_files_and_environment_merged() {
    let dir = TempDir::new("cli");
    let file = dir.path.join("config.yml");
    std::fs::write(
        &file,
        "queue:\n  expire: 60\nheader:\n  cors:\n    X-Extra: one\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let out = run_eventsourced(
        &["--config", path, "-c"],
        &[("EVENTSOURCED_SERVER_ADDRESS", "127.0.0.1:9")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dump = text(&out.stdout);
    for expected in [
        "server:\n  address: 127.0.0.1:9\n",
        "queue:\n  pattern: ${query:id}\n  expires: 60\n",
        // Passwords are hidden in the dump (`--show-secrets` prints them).
        "- amqp://guest:***@127.0.0.1:5672/\n  - amqp://guest:***@127.0.0.1:5672/\n",
        "    Access-Control-Allow-Origin: '*'\n    X-Extra: one\n",
        "    Transfer-Encoding: identity\n",
    ] {
        assert!(dump.contains(expected), "missing {expected:?} in:\n{dump}");
    }
}

#[test]
fn a_bad_config_stops_the_server_naming_file_key_and_line() {
    let dir = TempDir::new("cli");
    let file = dir.path.join("config.yml");
    std::fs::write(&file, "server:\n  address: 127.0.0.1:0\nbroker:\n  node:\n    - amqp://app:hunter2@mq:5672/\n    - amqp://app:hunter2@mq:56x2/\n").unwrap();
    let path = file.to_str().unwrap();
    let out = run_eventsourced(&["--config", path], &[]);
    assert!(!out.status.success());
    let message = text(&out.stderr);
    assert!(message.contains(path), "{message}");
    assert!(message.contains("broker.node[1]"), "{message}");
    assert!(message.contains("line 6"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");

    std::fs::write(&file, "server:\n  adress: 127.0.0.1:0\n").unwrap();
    let message = text(&run_eventsourced(&["--config", path], &[]).stderr);
    assert!(
        message.contains("unknown field `adress`") && message.contains("line 2"),
        "{message}"
    );
}

#[test]
fn a_missing_config_file_is_an_error() {
    let out = run_eventsourced(&["--config", "/nonexistent/config.yml", "-c"], &[]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("cannot read config file /nonexistent/config.yml"));
}

#[test]
fn a_bad_environment_variable_is_named() {
    let out = run_eventsourced(&["-c"], &[("EVENTSOURCED_QUEUE_EXPIRES", "soon")]);
    assert!(!out.status.success());
    let message = text(&out.stderr);
    assert!(
        message.contains("environment variable EVENTSOURCED_QUEUE_EXPIRES"),
        "{message}"
    );
}

/// `eventsourced -c` in a clean environment: only the variables named, none of the caller's.
fn dump(args: &[&str], env: &[(&str, &str)]) -> String {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dump");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_eventsourced"));
    command
        .current_dir(fixtures)
        .env_clear()
        .args(args)
        .arg("-c");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("run eventsourced -c");
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/dump/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The dump is what scripts and people diff between versions: it stays byte for byte what the
/// fixtures hold (printed by the build before the YAML crate changed), quoting included.
#[test]
fn dump_is_byte_for_byte_what_it_was() {
    assert_eq!(dump(&[], &[]), fixture("defaults.out"));
    assert_eq!(dump(&["--config", "rich.yml"], &[]), fixture("rich.out"));
    assert_eq!(
        dump(&["--config", "rich.yml", "--show-secrets"], &[]),
        fixture("rich-secrets.out")
    );
    let env = [
        ("EVENTSOURCED_QUEUE_PATTERN", "${header:X-User}"),
        ("EVENTSOURCED_SERVER_REDACT", "[a, \"b c\"]"),
        ("EVENTSOURCED_HEADER_CORS", "{X-Env: \"1\"}"),
    ];
    assert_eq!(
        dump(&["--config", "rich.yml"], &env),
        fixture("rich-env.out")
    );
}
