//! The README's Security section, tried as an outsider would, against the real broker: a request
//! value can't widen a binding or name a reserved queue, a signed URL covers everything a request
//! contributes, the broker's error text and every secret stay out of answers, dumps and logs, and
//! the operational documents can live on an address of their own.

mod support;

use amiquip::{AmqpValue, FieldTable, QueueDeclareOptions};
use std::io::{Read, Write};
use std::net::TcpStream;
use support::{
    closed_port, rabbitmqctl, request, run_eventsourced, text, unique, Amqp, Server, Stream,
    TempDir,
};

const PER_USER_TOPIC: (&str, &str) = (
    "EVENTSOURCED_QUEUE_BIND",
    "[{exchange: amq.topic, routing_key: 'user.${query:id}'}]",
);

/// Every binding from `amq.topic` to a queue, as (queue, routing key).
fn topic_bindings() -> Vec<(String, String)> {
    rabbitmqctl(&[
        "list_bindings",
        "source_name",
        "destination_name",
        "routing_key",
        "--no-table-headers",
    ])
    .lines()
    .filter_map(|l| {
        let mut cols = l.split('\t');
        let (source, queue, key) = (cols.next()?, cols.next()?, cols.next()?);
        (source == "amq.topic").then(|| (queue.to_string(), key.to_string()))
    })
    .collect()
}

fn queue_exists(name: &str) -> bool {
    rabbitmqctl(&["list_queues", "name", "--no-table-headers"])
        .lines()
        .any(|l| l.trim() == name)
}

#[test]
fn a_routing_wildcard_in_a_request_value_is_refused_and_binds_nothing() {
    let server = Server::start(&[PER_USER_TOPIC]).ready();
    for id in ["%23", "%2A", "a.%23", "x.%23.y", "a.*"] {
        let refused = request(server.addr, "GET", &format!("/?id={id}"), &[]);
        assert_eq!(refused.status, 400, "{id}");
        assert_eq!(
            refused.header("X-Status-Reason"),
            Some("request value holds a routing wildcard"),
            "{id}"
        );
    }
    // A dot would add a word to the user's routing key.
    let dotted = request(server.addr, "GET", "/?id=alice.x", &[]);
    assert_eq!(dotted.status, 400);
    // The real user is served, and bound to its own key only.
    let user = unique("user");
    let stream = Stream::open(server.addr, &format!("/?id={user}"), &[]);
    assert_eq!(stream.status, 200);
    let bindings = topic_bindings();
    assert!(
        bindings.contains(&(user.clone(), format!("user.{user}"))),
        "{bindings:?}"
    );
    assert!(
        bindings
            .iter()
            .all(|(queue, key)| !key.contains(['#', '*']) && !queue.contains(['#', '*'])),
        "{bindings:?}"
    );
    assert!(!queue_exists("#") && !queue_exists("a.*"));
}

#[test]
fn a_signed_url_must_cover_everything_a_binding_takes_from_the_request() {
    // The key takes `topic`, which the queue name does not fix: the token signs it too.
    let bind = (
        "EVENTSOURCED_QUEUE_BIND",
        "[{exchange: amq.topic, routing_key: 'user.${query:topic}'}]",
    );
    let secret = ("EVENTSOURCED_AUTH_SECRET", "s3cret");
    let server = Server::start(&[secret, bind]).ready();
    let queue = unique("signed-topic");
    let minted = run_eventsourced(
        &["token", &queue, "--value", "query:topic=mine"],
        &[secret, bind],
    );
    assert!(minted.status.success(), "{}", text(&minted.stderr));
    let signed = text(&minted.stdout).trim().to_string();
    let ok = Stream::open(
        server.addr,
        &format!("/?id={queue}&topic=mine&{signed}"),
        &[],
    );
    assert_eq!(ok.status, 200);
    drop(ok);
    // The same token with another topic: a binding it does not cover.
    let widened = server.get(&format!("/?id={queue}&topic=yours&{signed}"), &[]);
    assert_eq!(widened.status, 403);
    assert_eq!(
        widened.header("X-Status-Reason"),
        Some("auth: token invalid")
    );
    // `token` names what it must sign when it is not given.
    let unsigned = run_eventsourced(&["token", &queue], &[secret, bind]);
    assert!(!unsigned.status.success());
    assert!(text(&unsigned.stderr).contains("--value query:topic=VALUE"));
    // The queue's own placeholder is covered: the signed name fixes its value.
    let out = run_eventsourced(&["-c"], &[secret, PER_USER_TOPIC]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn the_brokers_error_text_stays_in_the_log() {
    let server = Server::start(&[]).ready();
    let queue = unique("inequivalent");
    // Declared elsewhere with another x-expires: our declaration is refused by the broker.
    let amqp = Amqp::connect();
    let mut arguments = FieldTable::default();
    arguments.insert("x-expires".into(), AmqpValue::LongInt(60_000));
    let options = QueueDeclareOptions {
        durable: true,
        arguments,
        ..QueueDeclareOptions::default()
    };
    amqp.channel()
        .queue_declare(queue.as_str(), options)
        .expect("declare");
    let refused = request(server.addr, "GET", &format!("/?id={queue}"), &[]);
    assert_eq!(refused.status, 503);
    assert_eq!(
        refused.header("X-Status-Reason"),
        Some("broker: request failed")
    );
    let answer = format!("{:?}{}", refused.headers, text(&refused.body));
    assert!(
        !answer.contains("PRECONDITION") && !answer.contains("vhost"),
        "{answer}"
    );
    server.wait_log("PRECONDITION_FAILED");
}

#[test]
fn the_dump_hides_secrets_unless_asked() {
    let dir = TempDir::new("secrets");
    let file = dir.path.join("config.yml");
    std::fs::write(
        &file,
        "broker:\n  node: ['amqp://app:Br0kerPw@mq:5672/']\nauth:\n  secret: Aut4Secret\n  previous_secret: 0ldSecret\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let hidden = text(&run_eventsourced(&["--config", path, "-c"], &[]).stdout);
    for secret in ["Br0kerPw", "Aut4Secret", "0ldSecret"] {
        assert!(!hidden.contains(secret), "{hidden}");
    }
    assert!(hidden.contains("amqp://app:***@mq:5672/"), "{hidden}");
    assert!(hidden.contains("secret: '***'"), "{hidden}");
    let shown = text(&run_eventsourced(&["--config", path, "-c", "--show-secrets"], &[]).stdout);
    for secret in ["Br0kerPw", "Aut4Secret", "0ldSecret"] {
        assert!(shown.contains(secret), "{shown}");
    }
}

#[test]
fn a_mistyped_broker_url_shows_no_piece_of_its_password() {
    // Unencoded '/' in the password: the URL's path starts in the middle of it.
    let out = run_eventsourced(
        &["-c"],
        &[("EVENTSOURCED_BROKER_NODE", "amqp://app:Zq1/Zq2/Zq3@mq/")],
    );
    assert!(!out.status.success());
    let message = text(&out.stderr);
    assert!(message.contains("EVENTSOURCED_BROKER_NODE"), "{message}");
    assert!(message.contains("path"), "{message}");
    assert!(!message.contains("Zq"), "{message}");
}

#[test]
fn a_refused_requests_log_line_hides_its_token() {
    let server = Server::start(&[("EVENTSOURCED_AUTH_SECRET", "s3cret")]).ready();
    let refused = server.get("/?id=q&expires=1&token=T0kenValue", &[]);
    assert_eq!(refused.status, 403);
    let line = server.wait_log("refused GET /?id=q");
    assert!(line.contains("token=***"), "{line}");
    assert!(!server.log_text().contains("T0kenValue"));
}

#[test]
fn an_overflowing_token_ttl_is_a_clear_error() {
    let out = run_eventsourced(
        &["token", "q", "--ttl", "18446744073709551615"],
        &[("EVENTSOURCED_AUTH_SECRET", "s3cret")],
    );
    assert!(!out.status.success());
    let message = text(&out.stderr);
    assert!(
        message.contains("--ttl") && message.contains("too large"),
        "{message}"
    );
    assert!(!message.contains("panicked"), "{message}");
}

#[test]
fn tokens_of_the_previous_secret_pass_and_long_lived_ones_do_not() {
    let signing = [
        ("EVENTSOURCED_AUTH_SECRET", "n3w"),
        ("EVENTSOURCED_AUTH_PREVIOUS_SECRET", "0ld"),
        ("EVENTSOURCED_AUTH_MAX_TTL", "600"),
    ];
    let server = Server::start(&signing).ready();
    let queue = unique("rotated");
    Amqp::connect().declare(&queue);
    let mint = |secret: &str, ttl: &str| {
        let out = run_eventsourced(
            &["token", &queue, "--ttl", ttl],
            &[("EVENTSOURCED_AUTH_SECRET", secret)],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_string()
    };
    // Signed with the secret being rotated out: still accepted.
    let old = Stream::open(
        server.addr,
        &format!("/?id={queue}&{}", mint("0ld", "60")),
        &[],
    );
    assert_eq!(old.status, 200);
    old.close();
    // Signed for a day, against a cap of ten minutes.
    let long = server.get(&format!("/?id={queue}&{}", mint("n3w", "86400")), &[]);
    assert_eq!(long.status, 403);
    assert_eq!(
        long.header("X-Status-Reason"),
        Some("auth: token valid for too long")
    );
    // A secret nobody configured: refused.
    let other = server.get(&format!("/?id={queue}&{}", mint("other", "60")), &[]);
    assert_eq!(other.header("X-Status-Reason"), Some("auth: token invalid"));
}

#[test]
fn a_control_character_in_the_request_target_is_refused() {
    let server = Server::start(&[]).ready();
    let name = "esc\u{1b}ape";
    let mut socket = TcpStream::connect(server.addr).unwrap();
    socket
        .write_all(b"GET /?id=esc\x1bape HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    socket
        .set_read_timeout(Some(support::WAIT))
        .expect("a read timeout");
    let _ = socket.read_to_end(&mut answer);
    assert!(
        text(&answer).starts_with("HTTP/1.1 400 "),
        "{:?}",
        text(&answer)
    );
    assert!(!queue_exists(name));
}

#[test]
fn listening_beyond_loopback_without_a_secret_is_warned_about() {
    let open = Server::start(&[("EVENTSOURCED_SERVER_ADDRESS", "0.0.0.0:0")]).ready();
    open.wait_log("reachable beyond loopback (0.0.0.0:");
    let signed = Server::start(&[
        ("EVENTSOURCED_SERVER_ADDRESS", "0.0.0.0:0"),
        ("EVENTSOURCED_AUTH_SECRET", "s3cret"),
    ])
    .ready();
    let local = Server::start(&[]).ready();
    for server in [&signed, &local] {
        assert!(!server.log_text().contains("beyond loopback"));
    }
}

#[test]
fn the_admin_address_keeps_the_operational_documents_off_the_public_one() {
    let admin = format!("127.0.0.1:{}", closed_port());
    let server = Server::start(&[("EVENTSOURCED_SERVER_ADMIN_ADDRESS", admin.as_str())]).ready();
    let admin = admin.parse().expect("an address");
    for path in ["/metrics", "/debug/vars", "/healthz", "/readyz"] {
        assert_eq!(request(server.addr, "GET", path, &[]).status, 404, "{path}");
        assert_eq!(request(admin, "GET", path, &[]).status, 200, "{path}");
    }
    // The admin address serves nothing else; the public one still streams.
    let queue = unique("public");
    assert_eq!(
        request(admin, "GET", &format!("/?id={queue}"), &[]).status,
        404
    );
    let stream = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    assert_eq!(stream.status, 200);
}

#[test]
fn another_broker_user_cannot_have_a_stream_relayed_to_itself() {
    // A user that may write to the control exchange (a publisher's, say) and read a queue of
    // its own, asking an instance to relay a client's stream there.
    let password = "intruder-password";
    rabbitmqctl(&["add_user", "intruder", password]);
    rabbitmqctl(&["set_permissions", "intruder", ".*", ".*", "^amq\\.gen-.*"]);
    let server = Server::start(&[]).ready();
    let amqp = Amqp::connect();
    let queue = unique("relayed-to-intruder");
    amqp.declare(&queue);
    let mut stream = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    assert_eq!(stream.status, 200);
    let url = eventsourced::amqp::BrokerUrl::parse(&format!(
        "amqp://intruder:{password}@127.0.0.1:{}/",
        support::broker_port()
    ))
    .expect("a broker URL");
    let dial = eventsourced::amqp::dial::Dial {
        heartbeat: 60,
        tls: None,
    };
    let tuning = amiquip::ConnectionTuning::default();
    let mut connection =
        eventsourced::amqp::dial::connect(&url, &dial, tuning).expect("the intruder connects");
    let channel = connection.open_channel(None).expect("a channel");
    let private = channel
        .queue_declare(
            "",
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
        )
        .expect("its own queue");
    let consumer = private
        .consume(amiquip::ConsumerOptions {
            no_ack: true,
            ..amiquip::ConsumerOptions::default()
        })
        .expect("consume its own queue");
    eventsourced::amqp::control::ask_follow(
        &channel,
        "intruder",
        Some("intruder"),
        &queue,
        private.name(),
        None,
    )
    .expect("publish the request");
    amqp.publish(&queue, "for the client only");
    assert_eq!(stream.next_data().as_deref(), Some("for the client only"));
    assert!(
        consumer
            .receiver()
            .recv_timeout(std::time::Duration::from_millis(1500))
            .is_err(),
        "nothing is relayed to another broker user"
    );
    server.wait_log("published as another broker user, is ignored");
    let keep = consumer.receiver().clone();
    drop(consumer);
    let _ = channel.close();
    drop(keep);
    let _ = connection.close();
    rabbitmqctl(&["delete_user", "intruder"]);
}
