//! A real browser: headless Chromium (Debian's) loads `examples/browser.html`, whose EventSource
//! connects through the server; messages published to RabbitMQ appear in the page, the server
//! restarts, and the page reconnects by itself and goes on, nothing lost, nothing twice. The
//! test reads the page's DOM over the DevTools protocol (`--remote-debugging-pipe`). Skipped,
//! saying so, where Chromium is not installed (`.ci/run` installs it).
//!
//! No passing condition may end a page's stream for good (EventSource gives up on any status
//! but 200): with the pool full, the broker stopped, or the queue held by another instance, the
//! page keeps trying and shows the next message once the condition clears, nothing lost and
//! nothing twice.

#[path = "browser/chromium.rs"]
mod chromium;
mod support;

use amiquip::AmqpProperties;
use chromium::Browser;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::{numbered, unique, wait_for, Amqp, OwnBroker, Server, Stream};

#[test]
fn the_example_page_receives_and_reconnects_after_a_restart() {
    let Some(mut browser) = Browser::launch() else {
        eprintln!("browser: SKIPPED, chromium is not installed (apt-get install chromium)");
        return;
    };
    let address = free_address();
    let settings = [
        ("EVENTSOURCED_SERVER_ADDRESS", address.as_str()),
        ("EVENTSOURCED_SERVER_KEEPALIVE", "1"),
        // Browsers wait about 3 s before reconnecting by default; the page gets 300 ms.
        ("EVENTSOURCED_SERVER_RETRY", "300"),
    ];
    let mut server = Server::start(&settings).ready();
    let amqp = Amqp::connect();
    let queue = unique("browser");
    amqp.declare(&queue);
    amqp.publish_all(&queue, &numbered(1, 3));
    let page = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/browser.html");
    browser.open(&format!(
        "file://{page}?server=http://{address}&id={queue}&start"
    ));
    wait_for("the first messages in the page", support::WAIT, || {
        browser.events() == numbered(1, 3)
    });
    assert_eq!(
        browser.text("document.getElementById('status').dataset.state"),
        "open"
    );

    // The server goes away; messages keep being published meanwhile.
    let (status, _) = server.stop_with(libc::SIGTERM);
    assert!(status.success());
    wait_for("the page to notice", support::WAIT, || {
        browser.text("document.getElementById('status').dataset.state") == "error"
    });
    amqp.publish_all(&queue, &numbered(4, 6));
    let _server = Server::start(&settings).ready();
    amqp.publish_all(&queue, &numbered(7, 8));
    wait_for(
        "the page to reconnect and catch up",
        Duration::from_secs(30),
        || browser.events().len() >= 8,
    );
    // Every message once, in order: the page's Last-Event-ID told the new server what it had.
    assert_eq!(browser.events(), numbered(1, 8));
    assert_eq!(
        browser.text("document.getElementById('status').dataset.state"),
        "open"
    );
}

#[test]
fn the_example_page_streams_over_https_and_comes_back_after_a_restart() {
    let Some((certs, _)) = support::tls_setup() else {
        eprintln!(
            "browser over HTTPS: SKIPPED, no test certificates (run it through scripts/test)"
        );
        return;
    };
    // Chromium trusts the test CA, and checks the server's chain and name against it.
    let Some(mut browser) = Browser::launch_trusting(&certs.join("ca.pem")) else {
        eprintln!("browser: SKIPPED, chromium is not installed (apt-get install chromium)");
        return;
    };
    let port = support::closed_port();
    let address = format!("127.0.0.1:{port}");
    let (cert, key) = (
        certs.join("server.pem").display().to_string(),
        certs.join("server.key").display().to_string(),
    );
    let settings = [
        ("EVENTSOURCED_SERVER_ADDRESS", address.as_str()),
        ("EVENTSOURCED_SERVER_TLS_CERT", cert.as_str()),
        ("EVENTSOURCED_SERVER_TLS_KEY", key.as_str()),
        ("EVENTSOURCED_SERVER_KEEPALIVE", "1"),
        ("EVENTSOURCED_SERVER_RETRY", "300"),
    ];
    let mut server = Server::start(&settings).ready();
    let amqp = Amqp::connect();
    let queue = unique("browser-https");
    amqp.declare(&queue);
    amqp.publish_all(&queue, &numbered(1, 3));
    // The page itself comes over HTTPS too, as on a dashboard (where an http:// stream would be
    // mixed content, which browsers block).
    let pages = HttpsPages::serve(&cert, &key);
    browser.open(&format!(
        "https://localhost:{}/browser.html?server=https://localhost:{port}&id={queue}&start",
        pages.port
    ));
    wait_for("the first messages in the page", support::WAIT, || {
        browser.events() == numbered(1, 3)
    });
    assert_eq!(page_state(&mut browser), "open");
    server.wait_log("stream ");
    let (status, _) = server.stop_with(libc::SIGTERM);
    assert!(status.success());
    amqp.publish_all(&queue, &numbered(4, 6));
    let _server = Server::start(&settings).ready();
    wait_for(
        "the page to reconnect over HTTPS and catch up",
        Duration::from_secs(30),
        || browser.events().len() >= 6,
    );
    assert_eq!(browser.events(), numbered(1, 6));
    assert_eq!(page_state(&mut browser), "open");
}

/// `examples/` served over HTTPS by Python's http.server (the page, not the stream), stopped
/// when dropped.
struct HttpsPages {
    child: Child,
    port: u16,
}

impl HttpsPages {
    fn serve(cert: &str, key: &str) -> HttpsPages {
        let port = support::closed_port();
        let script = format!(
            "import http.server, ssl, functools\n\
             handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory={dir:?})\n\
             server = http.server.HTTPServer(('127.0.0.1', {port}), handler)\n\
             context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
             context.load_cert_chain({cert:?}, {key:?})\n\
             server.socket = context.wrap_socket(server.socket, server_side=True)\n\
             server.serve_forever()\n",
            dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples"),
        );
        let child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3, to serve the example page over HTTPS");
        let pages = HttpsPages { child, port };
        wait_for("the page server", support::WAIT, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        pages
    }
}

impl Drop for HttpsPages {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback address for a server the page will reach.
fn free_address() -> String {
    format!("127.0.0.1:{}", support::closed_port())
}

fn example_page(address: &str, queue: &str) -> String {
    let page = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/browser.html");
    format!("file://{page}?server=http://{address}&id={queue}&start")
}

fn page_state(browser: &mut Browser) -> String {
    browser.text("document.getElementById('status').dataset.state")
}

/// The page, which had m1 and m2, shows m3 within `within`, each once, and its stream is open.
fn shows_the_next_message(browser: &mut Browser, within: Duration) {
    wait_for("the next message", within, || {
        browser.events() == numbered(1, 3)
    });
    assert_eq!(page_state(browser), "open");
}

/// Waits until the server refused the page's stream for `reason` at least `times` times, and
/// checks that the page is still trying.
fn refused_and_still_trying(
    browser: &mut Browser,
    server: &Server,
    queue: &str,
    reason: &str,
    times: usize,
) {
    server.wait_log_count(&format!("refused GET /?id={queue} from "), times);
    server.wait_log(reason);
    assert_ne!(page_state(browser), "closed", "the page gave up");
}

#[test]
fn a_full_pool_does_not_end_the_page() {
    let Some(mut browser) = Browser::launch() else {
        eprintln!("browser: SKIPPED, chromium is not installed (apt-get install chromium)");
        return;
    };
    let address = free_address();
    let server = Server::start(&[
        ("EVENTSOURCED_SERVER_ADDRESS", address.as_str()),
        ("EVENTSOURCED_SERVER_WORKERS", "1"),
    ])
    .ready();
    let amqp = Amqp::connect();
    let queue = unique("browser-pool");
    amqp.declare(&queue);
    amqp.publish_all(&queue, &numbered(1, 2));
    // Another client holds the only worker.
    let holder = Stream::open(server.addr, &format!("/?id={}", unique("holder")), &[]);
    assert_eq!(holder.status, 200);
    browser.open(&example_page(&address, &queue));
    refused_and_still_trying(&mut browser, &server, &queue, "server: too many streams", 2);
    holder.close();
    wait_for("the page to be served", Duration::from_secs(30), || {
        browser.events() == numbered(1, 2)
    });
    amqp.publish(&queue, "m3");
    shows_the_next_message(&mut browser, support::WAIT);
}

#[test]
fn a_stopped_broker_does_not_end_the_page() {
    let Some(mut browser) = Browser::launch() else {
        eprintln!("browser: SKIPPED, chromium is not installed (apt-get install chromium)");
        return;
    };
    let broker = OwnBroker::start();
    let address = free_address();
    let server = Server::start_with_broker(
        &broker.url(),
        &[("EVENTSOURCED_SERVER_ADDRESS", address.as_str())],
    )
    .ready();
    let queue = unique("browser-broker");
    let persistent = || AmqpProperties::default().with_delivery_mode(2);
    {
        let amqp = Amqp::connect_to(broker.port).expect("the private broker");
        amqp.declare(&queue);
        for m in numbered(1, 2) {
            amqp.publish_with(&queue, m.as_bytes(), persistent());
        }
    }
    browser.open(&example_page(&address, &queue));
    wait_for("the first messages", support::WAIT, || {
        browser.events() == numbered(1, 2)
    });
    broker.stop();
    refused_and_still_trying(
        &mut browser,
        &server,
        &queue,
        "broker: no connection available",
        2,
    );
    broker.start_again();
    let amqp = Amqp::connect_to(broker.port).expect("the private broker, again");
    amqp.publish_with(&queue, b"m3", persistent());
    // The server re-dials the broker with backoff.
    shows_the_next_message(&mut browser, Duration::from_secs(60));
}

#[test]
fn a_queue_held_by_another_instance_does_not_end_the_page() {
    let Some(mut browser) = Browser::launch() else {
        eprintln!("browser: SKIPPED, chromium is not installed (apt-get install chromium)");
        return;
    };
    let holding = Server::start(&[]).ready();
    let address = free_address();
    let _serving = Server::start(&[("EVENTSOURCED_SERVER_ADDRESS", address.as_str())]).ready();
    let amqp = Amqp::connect();
    let queue = unique("browser-held");
    amqp.declare(&queue);
    amqp.publish_all(&queue, &numbered(1, 2));
    // An old connection on the other instance holds the queue, silent: it never reads again.
    let old = Stream::open(holding.addr, &format!("/?id={queue}"), &[]);
    assert_eq!(old.status, 200);
    wait_for(
        "the old connection to hold the messages",
        support::WAIT,
        || amqp.ready(&queue) == 0,
    );
    browser.open(&example_page(&address, &queue));
    wait_for("the page to be served", Duration::from_secs(30), || {
        browser.events() == numbered(1, 2)
    });
    amqp.publish(&queue, "m3");
    shows_the_next_message(&mut browser, support::WAIT);
    // The default `share`: the holding instance relays the stream to the page's.
    holding.wait_log("relayed to a reader on another instance");
    drop(old);
}

/// How many times the current tab's EventSource opened, and how many gaps it was told of.
fn opens_and_gaps(browser: &mut Browser) -> (u32, u32) {
    let number = |browser: &mut Browser, field: &str| {
        browser
            .text(&format!(
                "document.getElementById('status').dataset.{field}"
            ))
            .parse()
            .unwrap_or(0)
    };
    (number(browser, "opens"), number(browser, "gaps"))
}

/// Prints what a tab showed against what it should have: received, missing, duplicated, and
/// how many times its EventSource opened (`--nocapture` shows it).
fn report_tab(browser: &mut Browser, what: &str, expected: &[String]) {
    let shown = browser.events();
    let unique: std::collections::BTreeSet<&String> = shown.iter().collect();
    let missing = expected.iter().filter(|m| !unique.contains(m)).count();
    let (opens, gaps) = opens_and_gaps(browser);
    eprintln!(
        "{what}: received {}, missing {missing}, duplicated {}, opens {opens}, gaps {gaps}",
        shown.len(),
        shown.len() - unique.len()
    );
}

/// Publishes `messages` at about 20 a second.
fn publish_paced(amqp: &Amqp, queue: &str, messages: &[String]) {
    for m in messages {
        amqp.publish(queue, m);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_and_three_tabs_on_one_id_each_show_every_message_once() {
    let Some(mut browser) = Browser::launch() else {
        eprintln!("browser: SKIPPED, chromium is not installed (apt-get install chromium)");
        return;
    };
    let address = free_address();
    // A short age, so that the window releases while the tabs read (the default is 120 s).
    let server = Server::start(&[
        ("EVENTSOURCED_SERVER_ADDRESS", address.as_str()),
        ("EVENTSOURCED_QUEUE_REPLAY_AGE", "2"),
    ])
    .ready();
    let amqp = Amqp::connect();
    let queue = unique("tabs");
    amqp.declare(&queue);
    let page = example_page(&address, &queue);
    for tab in 0..2 {
        browser.open(&page);
        wait_for("the tab's stream open", support::WAIT, || {
            page_state(&mut browser) == "open"
        });
        assert_eq!(tab, browser.tabs.len() - 1);
    }
    // Two tabs, for longer than the age bound: 100 messages at 20 a second.
    publish_paced(&amqp, &queue, &numbered(1, 100));
    for tab in 0..2 {
        browser.switch(tab);
        wait_for("every message in the tab", support::WAIT, || {
            browser.events().len() >= 100
        });
        assert_eq!(browser.events(), numbered(1, 100), "tab {tab}");
    }
    // A third tab joins; it gets what is still held, then every new message.
    browser.open(&page);
    wait_for("the third tab's stream open", support::WAIT, || {
        page_state(&mut browser) == "open"
    });
    publish_paced(&amqp, &queue, &numbered(101, 200));
    for tab in 0..3 {
        browser.switch(tab);
        wait_for("every message in the tab", support::WAIT, || {
            browser.events().last() == Some(&"m200".to_string())
        });
        let shown = browser.events();
        let expected = if tab < 2 {
            numbered(1, 200)
        } else {
            let first: u32 = shown[0][1..].parse().expect("a numbered message");
            numbered(first, 200)
        };
        report_tab(&mut browser, &format!("one instance, tab {tab}"), &expected);
        assert_eq!(shown, expected, "tab {tab}: every message once, in order");
        assert!(
            shown.len() >= 100,
            "tab {tab} got the messages since it opened"
        );
        let (opens, gaps) = opens_and_gaps(&mut browser);
        assert!(opens <= 2, "tab {tab} opened {opens} times");
        assert_eq!(gaps, 0, "tab {tab}");
        assert_eq!(page_state(&mut browser), "open");
    }
    assert!(
        !server.log_text().contains("taken over"),
        "no tab took the queue from another"
    );
}

#[test]
fn a_tab_closed_and_reopened_with_its_last_event_id_catches_up_exactly() {
    let Some(mut browser) = Browser::launch() else {
        eprintln!("browser: SKIPPED, chromium is not installed (apt-get install chromium)");
        return;
    };
    let address = free_address();
    let server = Server::start(&[
        ("EVENTSOURCED_SERVER_ADDRESS", address.as_str()),
        ("EVENTSOURCED_QUEUE_REPLAY_AGE", "2"),
    ])
    .ready();
    let amqp = Amqp::connect();
    let queue = unique("tab-back");
    amqp.declare(&queue);
    let page = example_page(&address, &queue);
    let staying = browser.open(&page);
    wait_for("the first tab open", support::WAIT, || {
        page_state(&mut browser) == "open"
    });
    let leaving = browser.open(&page);
    wait_for("the second tab open", support::WAIT, || {
        page_state(&mut browser) == "open"
    });
    publish_paced(&amqp, &queue, &numbered(1, 20));
    wait_for("the second tab's messages", support::WAIT, || {
        browser.events().len() >= 20
    });
    let last = browser.text("document.querySelector('#events li').dataset.id");
    assert!(!last.is_empty(), "the page shows the events' ids");
    browser.close_tab(leaving);
    server.wait_log("closed for");
    // While it is away (for less than the age bound), the other tab goes on.
    amqp.publish_all(&queue, &numbered(21, 30));
    browser.open(&format!("{page}&lastEventId={last}"));
    wait_for("the reopened tab to catch up", support::WAIT, || {
        browser.events().len() >= 10
    });
    report_tab(
        &mut browser,
        "one instance, tab reopened",
        &numbered(21, 30),
    );
    assert_eq!(browser.events(), numbered(21, 30), "exactly what it missed");
    assert_eq!(opens_and_gaps(&mut browser), (1, 0));
    browser.switch(staying);
    wait_for("the staying tab", support::WAIT, || {
        browser.events().len() >= 30
    });
    assert_eq!(browser.events(), numbered(1, 30));
}

#[test]
fn a_page_whose_last_event_is_no_longer_held_is_told_of_the_gap() {
    let Some(mut browser) = Browser::launch() else {
        eprintln!("browser: SKIPPED, chromium is not installed (apt-get install chromium)");
        return;
    };
    let address = free_address();
    let _server = Server::start(&[
        ("EVENTSOURCED_SERVER_ADDRESS", address.as_str()),
        ("EVENTSOURCED_QUEUE_REPLAY_AGE", "1"),
    ])
    .ready();
    let amqp = Amqp::connect();
    let queue = unique("tab-gap");
    amqp.declare(&queue);
    let page = example_page(&address, &queue);
    browser.open(&page);
    wait_for("the first tab open", support::WAIT, || {
        page_state(&mut browser) == "open"
    });
    amqp.publish_all(&queue, &numbered(1, 10));
    wait_for("the first tab's messages", support::WAIT, || {
        browser.events().len() >= 10
    });
    let oldest = browser.text("document.querySelector('#events li:last-child').dataset.id");
    wait_for(
        "the window to release all but the newest",
        Duration::from_secs(10),
        || amqp.ready(&queue) == 0 && support::unacked(&queue) == "1",
    );
    // A page that last saw the first message, long released.
    browser.open(&format!("{page}&lastEventId={oldest}"));
    wait_for("the gap shown, then what is held", support::WAIT, || {
        opens_and_gaps(&mut browser).1 == 1 && !browser.events().is_empty()
    });
    assert_eq!(browser.events(), ["m10"]);
    amqp.publish(&queue, "m11");
    wait_for("the next message", support::WAIT, || {
        browser.events().len() == 2
    });
    assert_eq!(browser.events(), ["m10", "m11"]);
    assert_eq!(opens_and_gaps(&mut browser), (1, 1));
}

#[test]
fn tabs_split_over_two_instances_each_show_every_message_once() {
    let Some(mut browser) = Browser::launch() else {
        eprintln!("browser: SKIPPED, chromium is not installed (apt-get install chromium)");
        return;
    };
    let (address_a, address_b) = (free_address(), free_address());
    let short = ("EVENTSOURCED_QUEUE_REPLAY_AGE", "2");
    let a = Server::start(&[("EVENTSOURCED_SERVER_ADDRESS", address_a.as_str()), short]).ready();
    let b = Server::start(&[("EVENTSOURCED_SERVER_ADDRESS", address_b.as_str()), short]).ready();
    let amqp = Amqp::connect();
    let queue = unique("tabs-split");
    amqp.declare(&queue);
    // One tab through a, two through b (a balancer without sticky sessions).
    let pages = [
        example_page(&address_a, &queue),
        example_page(&address_b, &queue),
        example_page(&address_b, &queue),
    ];
    for page in &pages {
        browser.open(page);
        wait_for("the tab's stream open", support::WAIT, || {
            page_state(&mut browser) == "open"
        });
    }
    b.wait_log_count("following the stream another instance holds", 2);
    publish_paced(&amqp, &queue, &numbered(1, 100));
    for tab in 0..3 {
        browser.switch(tab);
        wait_for("every message in the tab", support::WAIT, || {
            browser.events().len() >= 100
        });
        assert_eq!(browser.events(), numbered(1, 100), "tab {tab}");
    }
    // The second tab closes and comes back, through b, with its last event.
    browser.switch(1);
    let last = browser.text("document.querySelector('#events li').dataset.id");
    browser.close_tab(1);
    b.wait_log("closed for");
    amqp.publish_all(&queue, &numbered(101, 110));
    browser.open(&format!("{}&lastEventId={last}", pages[1]));
    wait_for("the reopened tab to catch up", support::WAIT, || {
        browser.events().len() >= 10
    });
    report_tab(
        &mut browser,
        "two instances, tab 1 reopened",
        &numbered(101, 110),
    );
    assert_eq!(
        browser.events(),
        numbered(101, 110),
        "exactly what it missed"
    );
    assert_eq!(opens_and_gaps(&mut browser), (1, 0));
    for tab in [0, 2] {
        browser.switch(tab);
        wait_for("the tab's messages", support::WAIT, || {
            browser.events().len() >= 110
        });
        report_tab(
            &mut browser,
            &format!("two instances, tab {tab}"),
            &numbered(1, 110),
        );
        assert_eq!(browser.events(), numbered(1, 110), "tab {tab}");
        let (opens, gaps) = opens_and_gaps(&mut browser);
        assert!(opens <= 2, "tab {tab} opened {opens} times");
        assert_eq!(gaps, 0);
    }
    assert!(!a.log_text().contains("taken over") && !b.log_text().contains("taken over"));
}
