//! The configuration's unit tests: defaults, files, environment, the dump and every refusal.

use super::layers::{self, Reading};
use super::*;
use yaml_serde::Value;

fn parse(text: &str) -> Result<Option<Layer>, ConfigError> {
    Layer::from_file(text, "test.yml")
}

/// Files, then variables, as `load` stacks them, without touching the process environment
/// (which every test shares).
fn stacked(files: &[&str], variables: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut layers = Vec::new();
    for text in files {
        layers.extend(parse(text)?);
    }
    layers.extend(Layer::from_environment(|name| {
        variables
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, value)| value.to_string())
    })?);
    Config::from_layers(layers)
}

fn resolve(files: &[&str]) -> Config {
    stacked(files, &[]).unwrap()
}

fn from_environment(variables: &[(&str, &str)]) -> Config {
    stacked(&[], variables).unwrap()
}

fn error_of(text: &str) -> String {
    match parse(text) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted: {text}"),
    }
}

fn environment_error(variables: &[(&str, &str)]) -> String {
    match stacked(&[], variables) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted: {variables:?}"),
    }
}

#[test]
fn defaults_are_the_originals() {
    let config = resolve(&[]);
    assert_eq!(config.server.address, "0.0.0.0:2069");
    assert_eq!(config.broker.node.len(), 2);
    assert_eq!(config.queue.pattern.as_configured(), "${query:id}");
    assert_eq!(config.queue.expires, 1800);
    assert_eq!(config.header.cors["Access-Control-Allow-Origin"], "*");
    assert_eq!(config.header.sse["X-Accel-Buffering"], "no");
    assert_eq!(config.to_yaml(), Config::default().to_yaml());
    assert!(config.sources.is_empty());
}

#[test]
fn later_files_win_and_header_maps_merge() {
    let config = resolve(&[
        "server: {address: '127.0.0.1:1'}\nqueue: {expire: 10}\nheader: {cors: {x-one: a}}",
        "queue: {expires: 20}\nheader: {cors: {X-Two: b}}",
    ]);
    assert_eq!(config.server.address, "127.0.0.1:1");
    assert_eq!(config.queue.expires, 20);
    assert_eq!(config.header.cors["X-One"], "a");
    assert_eq!(config.header.cors["X-Two"], "b");
    assert_eq!(
        config.header.cors["Access-Control-Allow-Methods"],
        "GET, OPTIONS"
    );
}

#[test]
fn spellings_of_one_key_are_one_key_across_files() {
    let config = resolve(&[
        "queue: {expires: 10}\nheader: {sse: {x-foo: a}}",
        "queue: {expire: 20}\nheader: {sse: {X-FOO: b}}",
        "header: {sse: {x-foo: c, cache-control: no-store}}",
    ]);
    assert_eq!(config.queue.expires, 20);
    assert_eq!(config.header.sse["X-Foo"], "c");
    assert_eq!(config.header.sse["Cache-Control"], "no-store");
    assert_eq!(config.header.sse.len(), 5);
}

#[test]
fn arguments_merge_key_by_key_and_lists_replace() {
    let config = resolve(&[
        "queue: {arguments: {x-queue-type: quorum}, bind: [{exchange: a}, {exchange: b}]}",
        "queue: {arguments: {x-max-length: 5}, bind: [{exchange: c}]}",
    ]);
    assert_eq!(config.queue.arguments.len(), 2);
    assert_eq!(config.queue.bind.len(), 1);
    assert_eq!(config.queue.bind[0].exchange.as_configured(), "c");
}

#[test]
fn empty_and_comment_only_files_set_nothing() {
    assert!(parse("").is_ok());
    assert!(parse("# nothing\n\n").is_ok());
    assert!(parse("").unwrap().is_none());
    assert!(parse("# nothing\n\n").unwrap().is_none());
}

#[test]
fn text_values_keep_their_spelling_whatever_yaml_makes_of_them() {
    let config = resolve(&[
            "header: {cors: {Access-Control-Max-Age: 600}}\nauth: {secret: 1.50}\nqueue: {pattern: 0x1F}",
        ]);
    assert_eq!(config.header.cors["Access-Control-Max-Age"], "600");
    assert_eq!(config.auth.key.as_deref(), Some(&b"1.50"[..]));
    assert_eq!(config.queue.pattern.as_configured(), "0x1F");
}

#[test]
fn a_section_with_every_key_commented_out_sets_nothing() {
    let config = resolve(&["server:\n  # address: 127.0.0.1:1\nqueue:\n  expires: 5\n"]);
    assert_eq!(config.server.address, "0.0.0.0:2069");
    assert_eq!(config.queue.expires, 5);
}

#[test]
fn unknown_keys_name_the_key_and_line() {
    let message = error_of("server:\n  address: 0.0.0.0:1\n  adress: x\n");
    assert!(
        message.starts_with("test.yml: server: unknown field `adress`"),
        "{message}"
    );
    assert!(message.contains("line 3"), "{message}");
    let message = error_of("server: {}\nservre: {}\n");
    assert!(message.contains("unknown field `servre`"), "{message}");
}

#[test]
fn wrong_types_name_the_key_and_line() {
    let message = error_of("queue:\n  pattern: ${query:id}\n  expires: soon\n");
    assert!(message.contains("queue.expires"), "{message}");
    assert!(message.contains("line 3"), "{message}");
}

#[test]
fn invalid_broker_urls_are_refused_without_their_password() {
    let message =
        error_of("broker:\n  node:\n    - amqp://u:secret@h:5672/\n    - http://u:secret@h/\n");
    assert!(message.contains("broker.node[1]"), "{message}");
    assert!(message.contains("line 4"), "{message}");
    assert!(message.contains("\"http\""), "{message}");
    assert!(!message.contains("secret"), "{message}");
}

#[test]
fn out_of_range_values_are_refused() {
    assert!(error_of("queue: {expires: 0}").contains("queue.expires"));
    assert!(error_of("queue: {expires: 2147484}").contains("from 1 to 2147483"));
    assert!(error_of("queue: {pattern: '${path:x}'}").contains("queue.pattern"));
    assert!(error_of("server: {address: nowhere}").contains("HOST:PORT"));
    assert!(error_of("header: {sse: {'Bad Name': x}}").contains("header name"));
}

#[test]
fn dump_round_trips() {
    let config = resolve(&["queue: {expire: 60}"]);
    let text = config.to_yaml();
    assert!(text.contains("expires: 60"), "{text}");
    let again = resolve(&[&text]);
    assert_eq!(again.to_yaml(), text);
}

#[test]
fn bindings_and_arguments_are_read_and_dumped() {
    let config = resolve(&[
            "queue:\n  bind:\n    - {exchange: amq.topic, routing_key: 'user.${query:id}'}\n    - {exchange: news}\n  arguments: {x-queue-type: quorum, x-max-length: 1000}",
        ]);
    assert_eq!(config.queue.bind.len(), 2);
    assert_eq!(config.queue.bind[1].routing_key.as_configured(), "");
    assert_eq!(config.queue.arguments["x-max-length"], Argument::Int(1000));
    assert_eq!(
        config.queue.arguments["x-queue-type"],
        Argument::Text("quorum".into())
    );
    let text = config.to_yaml();
    assert!(text.contains("routing_key: user.${query:id}"), "{text}");
    let message = error_of("queue:\n  arguments:\n    x-nested: {a: 1}\n");
    assert!(message.contains("queue.arguments"), "{message}");
    assert!(error_of("queue: {bind: [{exchange: x, key: y}]}").contains("unknown field `key`"));
}

#[test]
fn a_previous_secret_needs_a_secret_and_both_sign() {
    let error = stacked(&["auth: {previous_secret: old}"], &[]).unwrap_err();
    assert!(
        matches!(error, ConfigError::PreviousWithoutSecret { .. }),
        "{error}"
    );
    let config = resolve(&["auth: {secret: new, previous_secret: old, max_ttl: 60}"]);
    assert_eq!(config.auth.keys(), vec![b"new".to_vec(), b"old".to_vec()]);
    assert_eq!(config.auth.max_ttl, 60);
    let dump = config.to_yaml();
    assert!(!dump.contains("new") && !dump.contains("old"), "{dump}");
}

#[test]
fn a_token_covers_every_binding_value_the_queue_name_does_not_fix() {
    let fixed = "queue: {pattern: 'u-${query:id}', bind: [{exchange: amq.topic, routing_key: 'user.${query:id}.#'}]}";
    assert!(resolve(&[fixed]).queue.signed_values().is_empty());
    let devices = "queue: {pattern: 'u-${query:user}-${query:device}', bind: [{exchange: amq.topic, routing_key: 'user.${query:user}'}, {exchange: 'x-${cookie:team}', routing_key: '${query:user}'}]}";
    assert_eq!(
        resolve(&[devices]).queue.signed_values(),
        ["cookie:team", "query:user"]
    );
}

#[test]
fn the_secret_comes_from_the_config_or_a_file_never_both() {
    let config = resolve(&["auth: {secret: s3cret}"]);
    assert_eq!(config.auth.key.as_deref(), Some(&b"s3cret"[..]));
    let dir = std::env::temp_dir().join(format!("es-secret-{}", std::process::id()));
    std::fs::write(&dir, "from-file\n").unwrap();
    let config = resolve(&[&format!("auth: {{secret_file: {}}}", dir.display())]);
    assert_eq!(config.auth.key.as_deref(), Some(&b"from-file"[..]));
    let both = stacked(
        &[&format!(
            "auth: {{secret: a, secret_file: {}}}",
            dir.display()
        )],
        &[],
    );
    assert!(matches!(both, Err(ConfigError::TwoSecrets { .. })));
    // Across layers the last one that names a secret decides, whichever form it uses.
    let file_then_variable = stacked(
        &[&format!("auth: {{secret_file: {}}}", dir.display())],
        &[("EVENTSOURCED_AUTH_SECRET", "from-variable")],
    )
    .unwrap();
    assert_eq!(
        file_then_variable.auth.key.as_deref(),
        Some(&b"from-variable"[..])
    );
    let both_variables = from_environment(&[
        ("EVENTSOURCED_AUTH_SECRET", "a"),
        ("EVENTSOURCED_AUTH_SECRET_FILE", &dir.display().to_string()),
    ]);
    assert_eq!(both_variables.auth.key.as_deref(), Some(&b"from-file"[..]));
    let kept = resolve(&["auth: {secret: s3cret}", "auth: {}\nserver: {retry: 1}"]);
    assert_eq!(kept.auth.key.as_deref(), Some(&b"s3cret"[..]));
    let _ = std::fs::remove_file(&dir);
    assert!(resolve(&[]).auth.key.is_none());
    assert!(!resolve(&[]).to_yaml().contains("auth"));
    assert!(matches!(
        stacked(&["auth: {secret: ''}"], &[]),
        Err(ConfigError::EmptySecret { .. })
    ));
}

#[test]
fn retry_jitter_is_a_percentage() {
    assert!(error_of("server: {retry_jitter: 101}").contains("percentage"));
    assert_eq!(
        resolve(&["server: {retry: 3000, retry_jitter: 10}"])
            .server
            .retry,
        3000
    );
}

#[test]
fn the_dist_file_sets_exactly_the_defaults() {
    let dist = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/config.yml-dist"));
    let written: Value = yaml_serde::from_str(dist).unwrap();
    let defaults = layers::defaults();
    let keys = |value: &Value| -> Vec<(String, String)> {
        let mut keys = Vec::new();
        for (section, values) in value.as_mapping().unwrap() {
            for key in values.as_mapping().unwrap().keys() {
                keys.push((
                    section.as_str().unwrap().to_string(),
                    key.as_str().unwrap().to_string(),
                ));
            }
        }
        keys
    };
    for (section, key) in keys(&written) {
        assert_eq!(
            written[section.as_str()].get(&key),
            defaults[section.as_str()].get(&key),
            "config.yml-dist sets {section}.{key} to something other than the default"
        );
    }
    let shown = keys(&written);
    for (section, key) in keys(&defaults) {
        assert!(
            shown.contains(&(section.clone(), key.clone())),
            "config.yml-dist does not show {section}.{key}"
        );
    }
    assert_eq!(resolve(&[dist]).to_yaml(), Config::default().to_yaml());
}

#[test]
fn every_key_has_its_variable_read_by_the_type_of_its_default() {
    let keys = layers::environment_keys();
    let reading = |section: &str, key: &str| {
        keys.iter()
            .find(|k| k.section == section && k.key == key)
            .map(|k| k.reading)
    };
    let dump: Value = yaml_serde::from_str(&Config::default().to_yaml()).unwrap();
    for (section, values) in dump.as_mapping().unwrap() {
        for (key, value) in values.as_mapping().unwrap() {
            let (section, key) = (section.as_str().unwrap(), key.as_str().unwrap());
            if key == "tls" {
                for sub in value.as_mapping().unwrap().keys() {
                    let key = format!("tls.{}", sub.as_str().unwrap());
                    assert_eq!(reading(section, &key), Some(Reading::Text), "{key}");
                }
                continue;
            }
            assert!(reading(section, key).is_some(), "{section}.{key}");
        }
    }
    let config = from_environment(&[
        ("EVENTSOURCED_SERVER_TLS_CERT", "/etc/ssl/site.pem"),
        ("EVENTSOURCED_SERVER_TLS_KEY", "/etc/ssl/site.key"),
        ("EVENTSOURCED_BROKER_TLS_CA", "/etc/ssl/broker-ca.pem"),
    ]);
    assert_eq!(config.server.tls.cert, "/etc/ssl/site.pem");
    assert_eq!(config.server.tls.key, "/etc/ssl/site.key");
    assert_eq!(config.broker.tls.ca, "/etc/ssl/broker-ca.pem");
    let half = environment_error(&[("EVENTSOURCED_BROKER_TLS_CERT", "/c.pem")]);
    assert!(
        half.contains("broker.tls: cert and key go together"),
        "{half}"
    );
    for text in [
        ("server", "address"),
        ("queue", "pattern"),
        ("queue", "conflict"),
    ] {
        assert_eq!(reading(text.0, text.1), Some(Reading::Text), "{text:?}");
    }
    assert_eq!(reading("auth", "secret"), Some(Reading::Text));
    assert_eq!(reading("auth", "secret_file"), Some(Reading::Text));
    assert_eq!(reading("broker", "node"), Some(Reading::CommaList));
    assert_eq!(reading("server", "workers"), Some(Reading::Yaml));
    assert_eq!(reading("header", "cors"), Some(Reading::Yaml));
    assert_eq!(
        environment_variable("queue", "replay_bytes"),
        "EVENTSOURCED_QUEUE_REPLAY_BYTES"
    );
}

#[test]
fn variables_set_text_numbers_booleans_lists_and_maps() {
    let config = stacked(
        &["queue: {arguments: {x-queue-type: quorum}}\nheader: {cors: {X-From-File: f}}"],
        &[
            ("EVENTSOURCED_SERVER_ADDRESS", "127.0.0.1:9"),
            ("EVENTSOURCED_QUEUE_PATTERN", "user.${header:X-User}"),
            ("EVENTSOURCED_QUEUE_CONFLICT", "reject"),
            ("EVENTSOURCED_SERVER_WORKERS", "8"),
            ("EVENTSOURCED_QUEUE_REPLAY_BYTES", "65536"),
            ("EVENTSOURCED_SERVER_EVENT_IDS", "false"),
            ("EVENTSOURCED_SERVER_RETRY_REFUSALS", "false"),
            ("EVENTSOURCED_QUEUE_BIND", "[{exchange: news}]"),
            (
                "EVENTSOURCED_BROKER_NODE",
                "amqp://a:b@one:5672/, amqp://two/",
            ),
            (
                "EVENTSOURCED_HEADER_CORS",
                "{access-control-allow-origin: 'https://app.example'}",
            ),
            ("EVENTSOURCED_QUEUE_ARGUMENTS", "{x-max-length: 2}"),
        ],
    )
    .unwrap();
    assert_eq!(config.server.address, "127.0.0.1:9");
    assert_eq!(
        config.queue.pattern.as_configured(),
        "user.${header:X-User}"
    );
    assert_eq!(config.queue.conflict, Conflict::Reject);
    assert_eq!(config.server.workers, 8);
    assert_eq!(config.queue.replay_bytes, 65536);
    assert!(!config.server.event_ids);
    assert!(!config.server.retry_refusals);
    assert_eq!(config.queue.bind.len(), 1);
    let nodes: Vec<&str> = config
        .broker
        .node
        .iter()
        .map(|u| u.as_configured())
        .collect();
    assert_eq!(nodes, ["amqp://a:b@one:5672/", "amqp://two/"]);
    assert_eq!(
        config.header.cors["Access-Control-Allow-Origin"],
        "https://app.example"
    );
    assert_eq!(config.header.cors["X-From-File"], "f");
    assert_eq!(
        config.header.cors["Access-Control-Allow-Methods"],
        "GET, OPTIONS"
    );
    assert_eq!(config.queue.arguments.len(), 2);
    assert_eq!(config.sources.len(), 12);
    assert_eq!(
        config.sources[1],
        "environment variable EVENTSOURCED_SERVER_ADDRESS"
    );
}

#[test]
fn text_variables_are_not_read_as_yaml() {
    // As YAML, `123` is a number and `[x]` a list: as a secret they are text.
    let config = from_environment(&[("EVENTSOURCED_AUTH_SECRET", "123")]);
    assert_eq!(config.auth.key.as_deref(), Some(&b"123"[..]));
    let config = from_environment(&[("EVENTSOURCED_AUTH_SECRET", "[x]")]);
    assert_eq!(config.auth.key.as_deref(), Some(&b"[x]"[..]));
}

#[test]
fn an_empty_variable_sets_nothing() {
    let config = from_environment(&[("EVENTSOURCED_SERVER_WORKERS", "")]);
    assert_eq!(config.server.workers, 1024);
    assert!(config.sources.is_empty());
}

#[test]
fn a_bad_variable_is_named() {
    let message = environment_error(&[("EVENTSOURCED_SERVER_WORKERS", "lots")]);
    assert!(
        message.starts_with("environment variable EVENTSOURCED_SERVER_WORKERS: "),
        "{message}"
    );
    let message = environment_error(&[("EVENTSOURCED_SERVER_WORKERS", "0")]);
    assert!(message.contains("from 1 to 100000"), "{message}");
    let message = environment_error(&[("EVENTSOURCED_SERVER_EVENT_IDS", "{a: [")]);
    assert!(
        message.starts_with("environment variable EVENTSOURCED_SERVER_EVENT_IDS: "),
        "{message}"
    );
    let message = environment_error(&[("EVENTSOURCED_BROKER_NODE", "amqp://h/,http://u:pw@h/")]);
    assert!(message.contains("EVENTSOURCED_BROKER_NODE"), "{message}");
    assert!(!message.contains("pw"), "{message}");
}

#[test]
fn the_new_keys_have_their_defaults_checks_and_dump() {
    let config = Config::default();
    assert_eq!(config.queue.replay_window, 4096);
    assert_eq!(config.queue.replay_bytes, 4_194_304);
    assert_eq!(config.queue.replay_age, 120);
    assert!(config.server.retry_refusals);
    let text = config.to_yaml();
    for line in [
        "  replay_window: 4096\n",
        "  replay_bytes: 4194304\n",
        "  replay_age: 120\n",
        "  retry_refusals: true\n",
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
    let config = resolve(&[
            "queue: {replay_window: 0, replay_bytes: 0, replay_age: 0}\nserver: {retry_refusals: false}",
        ]);
    assert_eq!(config.queue.replay_window, 0);
    assert_eq!(config.queue.replay_bytes, 0);
    assert_eq!(config.queue.replay_age, 0);
    assert!(!config.server.retry_refusals);
    let message = error_of("queue:\n  replay_age: 86401\n");
    assert!(message.contains("queue.replay_age"), "{message}");
    assert!(message.contains("line 2"), "{message}");
    assert!(error_of("queue: {replay_window: 65536}").contains("queue.replay_window"));
    assert!(error_of("queue: {replay_bytes: -1}").contains("queue.replay_bytes"));
    assert!(error_of("server: {retry_refusals: maybe}").contains("server.retry_refusals"));
}

#[test]
fn prefetch_and_the_replay_window_must_fit_one_prefetch_count() {
    let fits = resolve(&["queue: {prefetch: 255, replay_window: 65280}"]);
    assert_eq!(fits.queue.prefetch, 255);
    let over = stacked(
        &["queue: {prefetch: 256}"],
        &[("EVENTSOURCED_QUEUE_REPLAY_WINDOW", "65280")],
    );
    let Err(error) = over else {
        panic!("accepted a prefetch count over 65535");
    };
    assert!(matches!(
        error,
        ConfigError::QosTooLarge {
            prefetch: 256,
            replay_window: 65280
        }
    ));
    let message = error.to_string();
    assert!(message.contains("queue.prefetch"), "{message}");
    assert!(message.contains("queue.replay_window"), "{message}");
    assert!(message.contains("65536"), "{message}");
}

#[test]
fn an_argument_name_over_255_bytes_is_refused() {
    let name = "x".repeat(256);
    let Err(error) = stacked(&[&format!("queue: {{arguments: {{{name}: 1}}}}")], &[]) else {
        panic!("accepted an argument name AMQP cannot carry");
    };
    assert!(matches!(
        error,
        ConfigError::ArgumentNameTooLong { length: 256, .. }
    ));
    assert!(error.to_string().contains("queue.arguments"), "{error}");
    assert!(
        resolve(&[&format!("queue: {{arguments: {{{}: 1}}}}", "x".repeat(255))])
            .queue
            .arguments
            .contains_key(&"x".repeat(255))
    );
}
