//! TLS both ways, with the real things: the test broker's `amqps://` listener (a CA made for the
//! run by `scripts/test-certs`), an HTTPS listener read by a rustls client and by curl, and the
//! delivery guarantees over HTTPS (numbered messages, clients that leave by FIN, by RST, or
//! stop reading). Run through `scripts/test`, which makes the certificates and the listener;
//! elsewhere each test says it is skipped.

mod support;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::{
    assert_exactly_once, numbered, request, run_eventsourced, text, tls_setup, unique, Amqp,
    OwnBroker, Reader, Server, Stream, TempDir, WAIT,
};

fn setup(test: &str) -> Option<(PathBuf, u16)> {
    let found = tls_setup();
    if found.is_none() {
        eprintln!("SKIPPED {test}: no test certificates (run it through scripts/test)");
    }
    found
}

fn file(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// The server on the test broker, speaking HTTPS with the test certificate (`cert` and `key`
/// in `certs`, or those given), connected to the broker.
fn https_server_with(cert: &str, key: &str, env: &[(&str, &str)]) -> Server {
    let mut all: Vec<(&str, &str)> = env.to_vec();
    all.push(("EVENTSOURCED_SERVER_TLS_CERT", cert));
    all.push(("EVENTSOURCED_SERVER_TLS_KEY", key));
    Server::start_with_broker(&support::broker_url(), &all).ready()
}

fn https_server(certs: &Path, env: &[(&str, &str)]) -> Server {
    https_server_with(&file(certs, "server.pem"), &file(certs, "server.key"), env)
}

/// An EventSource-like reader over HTTPS that trusts the test CA.
fn https_reader(certs: &Path) -> Reader {
    Reader::over_tls(certs.join("ca.pem"))
}

#[test]
fn streams_from_an_amqps_broker_checked_by_name() {
    let Some((certs, port)) = setup("streams_from_an_amqps_broker_checked_by_name") else {
        return;
    };
    let ca = file(&certs, "ca.pem");
    let server = Server::start_with_broker(
        &format!("amqps://guest:guest@localhost:{port}/"),
        &[("EVENTSOURCED_BROKER_TLS_CA", &ca)],
    )
    .ready();
    server.wait_log("checked against the configured CA file");
    let amqp = Amqp::connect();
    let queue = unique("amqps");
    amqp.declare(&queue);
    let published = numbered(1, 30);
    amqp.publish_all(&queue, &published);
    let mut stream = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    assert_eq!(stream.status, 200);
    let received: Vec<String> = stream
        .next_events(published.len())
        .into_iter()
        .filter_map(|e| e.data)
        .collect();
    assert_exactly_once("stream from an amqps:// broker", &published, &received);
}

#[test]
fn a_broker_certificate_from_another_ca_is_refused_and_named() {
    let Some((certs, port)) = setup("a_broker_certificate_from_another_ca_is_refused_and_named")
    else {
        return;
    };
    let other = file(&certs, "other-ca.pem");
    let server = Server::start_with_broker(
        &format!("amqps://guest:sekrit@localhost:{port}/"),
        &[("EVENTSOURCED_BROKER_TLS_CA", &other)],
    );
    let line = server.wait_log("does not verify");
    assert!(line.contains(&format!("localhost:{port}")), "{line}");
    assert!(line.contains("UnknownIssuer"), "{line}");
    // Never a silent downgrade: no connection, and the stream is refused.
    let answer = server.get("/?id=nobody", &[]);
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(!server.log_text().contains("connected to broker"));
    assert!(!server.log_text().contains("sekrit"));
}

#[test]
fn a_broker_certificate_for_another_name_is_refused() {
    let Some((certs, port)) = setup("a_broker_certificate_for_another_name_is_refused") else {
        return;
    };
    // The broker's certificate names `localhost`; the URL says 127.0.0.1 (the same listener).
    let server = Server::start_with_broker(
        &format!("amqps://guest:guest@127.0.0.1:{port}/"),
        &[("EVENTSOURCED_BROKER_TLS_CA", &file(&certs, "ca.pem"))],
    );
    let line = server.wait_log("does not verify");
    assert!(line.contains("not valid for name \"127.0.0.1\""), "{line}");
    assert!(!server.log_text().contains("connected to broker"));
}

#[test]
fn without_a_configured_ca_the_system_roots_then_the_built_in_ones_decide() {
    let Some((certs, port)) =
        setup("without_a_configured_ca_the_system_roots_then_the_built_in_ones_decide")
    else {
        return;
    };
    let node = format!("amqps://guest:guest@localhost:{port}/");
    // SSL_CERT_FILE, the usual convention, names the system's store: the test CA is in it.
    let ca = file(&certs, "ca.pem");
    let server = Server::start_with_broker(&node, &[("SSL_CERT_FILE", &ca)]).ready();
    server.wait_log("checked against the system's certificate store");
    drop(server);
    // No store at all, as in a FROM scratch image: Mozilla's roots, which do not know the test
    // CA, so the broker is refused rather than trusted.
    let server = Server::start_with_broker(
        &node,
        &[
            ("SSL_CERT_FILE", "/nonexistent/ca.pem"),
            ("SSL_CERT_DIR", "/nonexistent"),
        ],
    );
    server.wait_log("checked against the built-in Mozilla roots");
    server.wait_log("does not verify");
    assert!(!server.log_text().contains("connected to broker"));
}

#[test]
fn a_client_certificate_logs_in_with_external() {
    let Some((certs, port)) = setup("a_client_certificate_logs_in_with_external") else {
        return;
    };
    let server = Server::start_with_broker(
        &format!("amqps://localhost:{port}/?auth_mechanism=external"),
        &[
            ("EVENTSOURCED_BROKER_TLS_CA", &file(&certs, "ca.pem")),
            ("EVENTSOURCED_BROKER_TLS_CERT", &file(&certs, "client.pem")),
            ("EVENTSOURCED_BROKER_TLS_KEY", &file(&certs, "client.key")),
        ],
    )
    .ready();
    let amqp = Amqp::connect();
    let queue = unique("external");
    amqp.declare(&queue);
    amqp.publish(&queue, "by certificate");
    let mut stream = Stream::open(server.addr, &format!("/?id={queue}"), &[]);
    assert_eq!(stream.next_data().as_deref(), Some("by certificate"));
}

#[test]
fn publish_speaks_amqps() {
    let Some((certs, port)) = setup("publish_speaks_amqps") else {
        return;
    };
    let queue = unique("publish-amqps");
    let node = format!("amqps://guest:guest@localhost:{port}/");
    let ca = file(&certs, "ca.pem");
    let env = [
        ("EVENTSOURCED_BROKER_NODE", node.as_str()),
        ("EVENTSOURCED_BROKER_TLS_CA", ca.as_str()),
    ];
    let output = run_eventsourced(&["publish", &queue, "over tls"], &env);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(Amqp::connect().drain(&queue), vec!["over tls".to_string()]);
    // The wrong CA: a clear error naming the node, nothing published.
    let other = file(&certs, "other-ca.pem");
    let env = [
        ("EVENTSOURCED_BROKER_NODE", node.as_str()),
        ("EVENTSOURCED_BROKER_TLS_CA", other.as_str()),
    ];
    let output = run_eventsourced(&["publish", &queue, "never"], &env);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("does not verify"), "{stderr}");
    assert!(stderr.contains(&format!("localhost:{port}")), "{stderr}");
}

#[test]
fn https_streams_resume_exactly_once() {
    let Some((certs, _)) = setup("https_streams_resume_exactly_once") else {
        return;
    };
    let server = https_server(&certs, &[]);
    assert!(server.log_text().contains("(HTTPS, "));
    let amqp = Amqp::connect();
    let queue = unique("https-resume");
    amqp.declare(&queue);
    let published = numbered(1, 40);
    amqp.publish_all(&queue, &published[..20]);
    let mut reader = https_reader(&certs);
    let mut stream = reader.connect(server.addr, &queue).expect("a stream");
    assert_eq!(
        stream.header("Content-Type"),
        Some("text/event-stream; charset=utf-8")
    );
    reader.drain(&mut stream, WAIT, |got| got.len() >= 10);
    stream.close();
    amqp.publish_all(&queue, &published[20..]);
    server.wait_log("client gone");
    reader.read_all(|| server.addr, &queue, &published);
    assert_exactly_once("over HTTPS, resumed", &published, &reader.received);
}

/// A client over HTTPS leaves in the middle of a stream; what it may not have read comes again.
fn https_client_leaves(fault: &str, reset: bool) {
    let Some((certs, _)) = setup(fault) else {
        return;
    };
    let server = https_server(&certs, &[("EVENTSOURCED_SERVER_KEEPALIVE", "1")]);
    support::leaving::client_leaves(&server, https_reader(&certs), fault, reset);
}

#[test]
fn https_client_fin() {
    https_client_leaves("https client FIN", false);
}

#[test]
fn https_client_rst() {
    https_client_leaves("https client RST", true);
}

#[test]
fn https_client_stops_reading_then_vanishes() {
    let Some((certs, _)) = setup("https_client_stops_reading_then_vanishes") else {
        return;
    };
    let server = https_server(
        &certs,
        &[
            ("EVENTSOURCED_SERVER_WRITE_TIMEOUT", "1"),
            ("EVENTSOURCED_SERVER_KEEPALIVE", "1"),
        ],
    );
    support::leaving::client_stops_reading_then_vanishes(
        &server,
        https_reader(&certs),
        "https client stalls, then vanishes",
    );
}

#[test]
fn curl_reads_an_https_stream_trusting_the_test_ca() {
    let Some((certs, _)) = setup("curl_reads_an_https_stream_trusting_the_test_ca") else {
        return;
    };
    if Command::new("curl").arg("--version").output().is_err() {
        panic!("curl is missing: .ci/run installs it");
    }
    let server = https_server(&certs, &[]);
    let amqp = Amqp::connect();
    let queue = unique("curl");
    amqp.declare(&queue);
    amqp.publish_all(&queue, &numbered(1, 3));
    let url = format!("https://localhost:{}/?id={queue}", server.addr.port());
    let mut curl = Command::new("curl")
        // curl offers h2 and http/1.1; -v shows what the server chose.
        .args(["-sS", "-v", "-N", "--max-time", "20", "--cacert"])
        .arg(certs.join("ca.pem"))
        .arg(&url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start curl");
    let stdout = curl.stdout.take().expect("curl's output");
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut data = Vec::new();
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(value) = line.strip_prefix("data: ") {
                data.push(value.to_string());
                if data.len() == 3 {
                    break;
                }
            }
        }
        data
    });
    let data = lines.join().expect("curl's lines");
    let _ = curl.kill();
    let output = curl.wait_with_output().expect("curl's end");
    assert_eq!(data, numbered(1, 3), "curl: {}", text(&output.stderr));
    // Without the CA, curl refuses the certificate: it is the test CA that makes it trusted.
    let refused = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(certs.join("other-ca.pem"))
        .arg(&url)
        .output()
        .expect("run curl");
    // 60: the peer's certificate cannot be authenticated.
    assert_eq!(refused.status.code(), Some(60), "{}", text(&refused.stderr));
}

#[test]
fn plain_http_to_the_https_port_is_told_so() {
    let Some((certs, _)) = setup("plain_http_to_the_https_port_is_told_so") else {
        return;
    };
    let server = https_server(&certs, &[]);
    let answer = request(server.addr, "GET", "/?id=x", &[]);
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.header("X-Status-Reason"),
        Some("this port speaks HTTPS")
    );
}

#[test]
fn a_handshake_that_arrives_in_pieces_is_still_tls() {
    let Some((certs, _)) = setup("a_handshake_that_arrives_in_pieces_is_still_tls") else {
        return;
    };
    let server = https_server(&certs, &[]);
    let mut tls = support::client::tls_client("localhost", &certs.join("ca.pem"));
    let mut hello = Vec::new();
    tls.write_tls(&mut hello).expect("a ClientHello");
    // Cut where the next byte would read as the start of a request line (an uppercase letter),
    // as a ClientHello split across TCP segments may be.
    let cut = (6..hello.len())
        .find(|&i| hello[i].is_ascii_uppercase())
        .expect("an uppercase byte in the ClientHello");
    let mut socket = TcpStream::connect(server.addr).expect("connect");
    std::io::Write::write_all(&mut socket, &hello[..cut]).expect("write");
    // Long enough for the server to read the first piece on its own: the condition, not a wait
    // for a result.
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::io::Write::write_all(&mut socket, &hello[cut..]).expect("write");
    socket.set_read_timeout(Some(WAIT)).expect("read timeout");
    let mut session = rustls::Stream::new(&mut tls, &mut socket);
    std::io::Write::write_all(
        &mut session,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .expect("a TLS session");
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut session, &mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[test]
fn a_stalled_handshake_costs_a_socket_not_a_worker() {
    let Some((certs, _)) = setup("a_stalled_handshake_costs_a_socket_not_a_worker") else {
        return;
    };
    let server = https_server(
        &certs,
        &[
            ("EVENTSOURCED_SERVER_WORKERS", "1"),
            ("EVENTSOURCED_SERVER_REQUEST_TIMEOUT", "5"),
        ],
    );
    // The start of a TLS record, then nothing.
    let mut stalled = TcpStream::connect(server.addr).expect("connect");
    std::io::Write::write_all(&mut stalled, &[0x16, 0x03, 0x01]).expect("write");
    // The one worker is free: a real client is served meanwhile.
    let amqp = Amqp::connect();
    let queue = unique("handshake");
    amqp.declare(&queue);
    amqp.publish(&queue, "served");
    let mut stream = https_reader(&certs)
        .connect(server.addr, &queue)
        .expect("a stream while a handshake stalls");
    assert_eq!(stream.next_data().as_deref(), Some("served"));
    // And the stalled connection is closed at the head deadline, with no HTTP answer.
    stalled.set_read_timeout(Some(WAIT)).expect("read timeout");
    let mut rest = Vec::new();
    let ended = std::io::Read::read_to_end(&mut stalled, &mut rest);
    assert!(ended.is_ok(), "not closed within {WAIT:?}: {ended:?}");
    assert!(
        rest.is_empty(),
        "an answer to a stalled handshake: {rest:?}"
    );
}

#[test]
fn sighup_swaps_the_certificate_and_open_streams_go_on() {
    let Some((certs, _)) = setup("sighup_swaps_the_certificate_and_open_streams_go_on") else {
        return;
    };
    let site = TempDir::new("site-cert");
    let (cert, key) = (site.path.join("site.pem"), site.path.join("site.key"));
    std::fs::copy(certs.join("server.pem"), &cert).expect("copy");
    std::fs::copy(certs.join("server.key"), &key).expect("copy");
    let server = https_server_with(&cert.display().to_string(), &key.display().to_string(), &[]);
    let amqp = Amqp::connect();
    let queue = unique("renewal");
    amqp.declare(&queue);
    amqp.publish(&queue, "before");
    let mut open = https_reader(&certs)
        .connect(server.addr, &queue)
        .expect("a stream");
    assert_eq!(open.next_data().as_deref(), Some("before"));
    let der = |path: &Path| -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_file(path)
            .expect("a certificate")
            .as_ref()
            .to_vec()
    };
    let first = open.server_certificate().expect("the server's certificate");
    assert_eq!(first, der(&certs.join("server.pem")));

    // A renewal: new files, SIGHUP.
    std::fs::copy(certs.join("renewed.pem"), &cert).expect("copy");
    std::fs::copy(certs.join("renewed.key"), &key).expect("copy");
    server.signal(libc::SIGHUP);
    server.wait_log("reloaded");
    let other = unique("renewal-other");
    amqp.declare(&other);
    let fresh = https_reader(&certs)
        .connect(server.addr, &other)
        .expect("a stream after the reload");
    assert_eq!(
        fresh.server_certificate(),
        Some(der(&certs.join("renewed.pem")))
    );
    // The stream opened before goes on, on its session.
    amqp.publish(&queue, "after");
    assert_eq!(open.next_data().as_deref(), Some("after"));

    // A broken renewal keeps the certificate in use.
    std::fs::write(&key, "not a key").expect("write");
    server.signal(libc::SIGHUP);
    server.wait_log("still serving the certificate loaded before");
    let third = unique("renewal-third");
    amqp.declare(&third);
    let still = https_reader(&certs).connect(server.addr, &third);
    assert_eq!(
        still.and_then(|s| s.server_certificate()),
        Some(der(&certs.join("renewed.pem")))
    );
}

#[test]
fn unusable_tls_files_stop_the_start_with_their_name() {
    let Some((certs, _)) = setup("unusable_tls_files_stop_the_start_with_their_name") else {
        return;
    };
    let key = file(&certs, "server.key");
    let output = run_eventsourced(
        &[],
        &[
            ("EVENTSOURCED_SERVER_ADDRESS", "127.0.0.1:0"),
            ("EVENTSOURCED_SERVER_TLS_CERT", "/nonexistent/site.pem"),
            ("EVENTSOURCED_SERVER_TLS_KEY", &key),
        ],
    );
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("server.tls: cannot read /nonexistent/site.pem"),
        "{stderr}"
    );
    // A key file in place of the certificate.
    let output = run_eventsourced(
        &[],
        &[
            ("EVENTSOURCED_SERVER_ADDRESS", "127.0.0.1:0"),
            ("EVENTSOURCED_SERVER_TLS_CERT", &key),
            ("EVENTSOURCED_SERVER_TLS_KEY", &key),
        ],
    );
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("holds no PEM certificate"), "{stderr}");
    assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
}

#[test]
fn an_amqps_broker_restart_loses_nothing() {
    let Some((certs, _)) = setup("an_amqps_broker_restart_loses_nothing") else {
        return;
    };
    let broker = OwnBroker::start_tls(&certs);
    let (tls_port, _) = broker.tls.clone().expect("a TLS listener");
    let server = Server::start_with_broker(
        &format!("amqps://guest:guest@localhost:{tls_port}/"),
        &[("EVENTSOURCED_BROKER_TLS_CA", &file(&certs, "ca.pem"))],
    )
    .ready();
    let amqp = Amqp::confirming(broker.port).expect("the broker");
    let queue = unique("amqps-restart");
    amqp.declare(&queue);
    let published = numbered(1, 40);
    // Persistent and confirmed: they outlive the restart.
    for message in &published[..20] {
        amqp.publish_confirmed(&queue, message).expect("confirmed");
    }
    let mut reader = Reader::default();
    let mut stream = reader.connect(server.addr, &queue).expect("a stream");
    reader.drain(&mut stream, WAIT, |got| got.len() >= 20);
    drop(amqp);
    broker.restart();
    // The server dials the TLS listener again by itself.
    server.wait_log_count("connected to broker", 2);
    let amqp = Amqp::confirming(broker.port).expect("the broker, again");
    for message in &published[20..] {
        amqp.publish_confirmed(&queue, message).expect("confirmed");
    }
    reader.read_all(|| server.addr, &queue, &published);
    assert_exactly_once("amqps:// broker restarted", &published, &reader.received);
}
