//! The server behind a real nginx configured with `examples/nginx.conf`: frames pass the proxy at
//! once, and keep-alives hold an idle stream open past nginx's read timeout. Skipped, saying so,
//! where nginx is not installed (`.ci/run` installs it).

mod support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;
use support::{unique, wait_for, Amqp, Server, Stream, TempDir};

struct Nginx {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Nginx {
    /// nginx with the example site, proxying to `upstream`, with `read_timeout` for streams.
    fn start(upstream: SocketAddr, read_timeout: &str) -> Option<Nginx> {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let dir = TempDir::new("nginx");
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let example =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/nginx.conf"))
                .ok()?;
        let site = example
            .replace("server 127.0.0.1:2069;", &format!("server {upstream};"))
            .replace("listen 8080;", &format!("listen 127.0.0.1:{port};"))
            .replace(
                "proxy_read_timeout 1h;",
                &format!("proxy_read_timeout {read_timeout};"),
            );
        let path = |name: &str| dir.path.join(name).display().to_string();
        std::fs::write(path("site.conf"), site).ok()?;
        let main = format!(
            "daemon off;\nmaster_process off;\npid {pid};\nerror_log {log} info;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {tmp};\n  proxy_temp_path {tmp};\n  fastcgi_temp_path {tmp};\n  uwsgi_temp_path {tmp};\n  scgi_temp_path {tmp};\n  include {site};\n}}\n",
            pid = path("nginx.pid"),
            log = path("error.log"),
            tmp = path("tmp"),
            site = path("site.conf"),
        );
        std::fs::write(path("nginx.conf"), main).ok()?;
        let child = Command::new(binary)
            .args([
                "-p",
                &path(""),
                "-e",
                &path("error.log"),
                "-c",
                &path("nginx.conf"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .ok()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().ok()?;
        let nginx = Nginx {
            child,
            addr,
            _dir: dir,
        };
        wait_for("nginx to listen", support::WAIT, || {
            TcpStream::connect(addr).is_ok()
        });
        Some(nginx)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_or_skip(upstream: SocketAddr, read_timeout: &str) -> Option<Nginx> {
    let nginx = Nginx::start(upstream, read_timeout);
    if nginx.is_none() {
        eprintln!("nginx: SKIPPED, nginx is not installed (apt-get install nginx-light)");
    }
    nginx
}

#[test]
fn each_frame_passes_nginx_at_once() {
    let server = Server::start(&[]).ready();
    let Some(nginx) = nginx_or_skip(server.addr, "1h") else {
        return;
    };
    let amqp = Amqp::connect();
    let queue = unique("nginx");
    amqp.declare(&queue);
    let mut stream = Stream::open(nginx.addr, &format!("/?id={queue}"), &[]);
    assert_eq!(stream.status, 200);
    assert_eq!(
        stream.header("Content-Type"),
        Some("text/event-stream; charset=utf-8")
    );
    // One small frame at a time: a buffering proxy would hold each until its buffer filled.
    for n in 1..=3 {
        amqp.publish(&queue, &format!("m{n}"));
        assert_eq!(stream.next_data(), Some(format!("m{n}")));
    }
}

#[test]
fn keepalives_hold_an_idle_stream_past_the_proxy_read_timeout() {
    let server = Server::start(&[("EVENTSOURCED_SERVER_KEEPALIVE", "1")]).ready();
    let Some(nginx) = nginx_or_skip(server.addr, "2s") else {
        return;
    };
    let amqp = Amqp::connect();
    let queue = unique("idle");
    amqp.declare(&queue);
    let mut stream = Stream::open(nginx.addr, &format!("/?id={queue}"), &[]);
    assert_eq!(stream.status, 200);
    // Idle for twice nginx's read timeout: the condition under test is the idle time itself.
    thread::sleep(Duration::from_secs(4));
    amqp.publish(&queue, "still here");
    assert_eq!(stream.next_data().as_deref(), Some("still here"));
}

#[test]
fn without_keepalives_nginx_closes_an_idle_stream() {
    // The other side of the test above: the read timeout is real, and keep-alives are what beat it.
    let server = Server::start(&[]).ready();
    let Some(nginx) = nginx_or_skip(server.addr, "2s") else {
        return;
    };
    let mut stream = Stream::open(nginx.addr, &format!("/?id={}", unique("idle-off")), &[]);
    assert_eq!(stream.status, 200);
    assert!(
        stream.closed_by_server(Duration::from_secs(10)),
        "nginx kept the idle stream open"
    );
}

#[test]
fn a_reader_behind_nginx_that_stalls_and_leaves_resumes_without_gaps() {
    // nginx reads everything the server writes at once, so the server's TCP sees it all
    // acknowledged: only the client's Last-Event-ID says what was read.
    let server = Server::start(&[("EVENTSOURCED_SERVER_KEEPALIVE", "15")]).ready();
    let Some(nginx) = nginx_or_skip(server.addr, "1h") else {
        return;
    };
    let amqp = Amqp::connect();
    let queue = unique("nginx-stall");
    amqp.declare(&queue);
    let published: Vec<String> = (1..=3000).map(|n| format!("m{n}")).collect();
    for m in &published {
        amqp.publish(&queue, m);
    }
    let target = format!("/?id={queue}");
    let mut stream = Stream::open(nginx.addr, &target, &[]);
    let mut received = Vec::new();
    let mut last = None;
    while received.len() < 1000 {
        let event = stream.next_event().expect("an event");
        received.push(event.data.unwrap_or_default());
        last = event.id.or(last);
    }
    thread::sleep(Duration::from_secs(1));
    drop(stream);
    let last = last.expect("events carry ids");
    let mut again = Stream::open(nginx.addr, &target, &[("Last-Event-ID", last.as_str())]);
    while received.len() < 3000 {
        match again.next_event_within(Duration::from_secs(30)) {
            Ok(Some(event)) => received.push(event.data.unwrap_or_default()),
            _ => break,
        }
    }
    // Exactly once, in order.
    assert_eq!(received, published);
}
