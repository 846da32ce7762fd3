//! Many clients at once: the set-up of thousands of streams, their memory, and their coming
//! back after a restart; the Go original measured the same way when a build of it is named.

use super::*;

/// `count` new queues named after `name`, each holding the messages "0" to "3".
pub(super) fn queues_with_four(amqp: &Amqp, name: &str, count: usize) -> Vec<String> {
    let prefix = unique(name);
    let queues: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    for queue in &queues {
        amqp.declare(queue);
        for n in 0..4 {
            amqp.publish(queue, &n.to_string());
        }
    }
    queues
}

/// A client for each of `queues` connects at once, and each reads the four messages its queue
/// holds: the crowd, whether all did, and the seconds it took (at most 180).
pub(super) fn four_each(
    addr: std::net::SocketAddr,
    queues: &[String],
) -> (crowd::Crowd, bool, f64) {
    let mut crowd = crowd::Crowd::new(addr);
    let began = Instant::now();
    for queue in queues {
        crowd.open(queue);
    }
    let all = crowd.run_until(began + Duration::from_secs(180), |c| c.data.len() >= 4);
    (crowd, all, began.elapsed().as_secs_f64())
}

/// A free loopback port, so that a restarted server listens where its clients come back to.
pub(super) fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").to_string()
}

/// `count` clients, each with its own queue holding four messages, connect at once: the time
/// until every one has its four, and the server's CPU per stream. Then the server is restarted
/// while two more messages wait in each queue, and every client comes back with its
/// `Last-Event-ID` after the stream's jittered `retry:`: the time until all have all six, and
/// whether any was lost or repeated.
pub(super) fn set_up_and_come_back(count: usize, build: &str) -> Vec<Row> {
    let workers = (count + 100).to_string();
    let address = free_address();
    let env = [
        ("EVENTSOURCED_SERVER_ADDRESS", address.as_str()),
        ("EVENTSOURCED_SERVER_WORKERS", workers.as_str()),
        ("EVENTSOURCED_SERVER_RETRY", "2000"),
    ];
    let amqp = Amqp::connect();
    let queues = queues_with_four(&amqp, "bench-scale", count);
    let mut server = Server::start(&env).ready();
    let pid = server.pid();
    thread::sleep(Duration::from_millis(300));
    let rss_before = proc_status(pid, "VmRSS:");
    let broker = broker_pid();
    let broker_cpu = broker.map_or(0.0, process_cpu);
    let cpu = process_cpu(pid);
    let (mut crowd, all, set_up) = four_each(server.addr, &queues);
    let cpu = process_cpu(pid) - cpu;
    let broker_cpu = broker.map_or(0.0, process_cpu) - broker_cpu;
    let streaming = crowd.clients.iter().filter(|c| c.data.len() >= 4).count();
    thread::sleep(Duration::from_secs(1));
    let rss = proc_status(pid, "VmRSS:");
    let per_stream = rss.saturating_sub(rss_before) as f64 / streaming.max(1) as f64;
    let mut rows = vec![
        row(
            &format!("{build}: {count} clients at once, 4 messages each: all served after"),
            format!("{set_up:.1} s{}", if all { "" } else { " (not all)" }),
            "",
            format!("{streaming} of {count} streaming"),
        ),
        row(
            &format!("{build}: {count} clients: CPU per stream set-up"),
            format!("{:.2} ms", cpu * 1000.0 / count as f64),
            &format!("{:.2} ms (the broker)", broker_cpu * 1000.0 / count as f64),
            "the server's CPU, and the broker's, over the set-up divided by the streams".into(),
        ),
        row(
            &format!("{build}: {count} streams after 4 messages: RSS per stream"),
            format!("{per_stream:.1} KiB"),
            "",
            format!("{} MiB in all", rss / 1024),
        ),
    ];
    // The restart: the old server drains and ends; two more messages wait in every queue.
    let (_, stopped_in) = server.stop_with(15);
    drop(server);
    for queue in &queues {
        for n in 4..6 {
            amqp.publish(queue, &n.to_string());
        }
    }
    let server = Server::start(&env).ready();
    let restarted = Instant::now();
    crowd.come_back = true;
    let all = crowd.run_until(restarted + Duration::from_secs(120), |c| {
        c.data.len() >= 6 && c.streaming()
    });
    let back = restarted.elapsed().as_secs_f64();
    let expected: Vec<String> = (0..6).map(|n| n.to_string()).collect();
    let exact = crowd.clients.iter().filter(|c| c.data == expected).count();
    let repeated = crowd
        .clients
        .iter()
        .filter(|c| c.data.len() > BTreeSet::from_iter(&c.data).len())
        .count();
    let short = crowd.clients.iter().filter(|c| c.data.len() < 6).count();
    crowd.close_all();
    drop(server);
    for queue in &queues {
        amqp.delete(queue);
    }
    rows.push(row(
        &format!("{build}: {count} clients coming back with Last-Event-ID after a restart: all streaming after"),
        format!("{back:.1} s{}", if all { "" } else { " (not all)" }),
        "",
        format!(
            "{exact} of {count} have each message once; {repeated} with a repeat, {short} missing some; \
             retry 2 s ± 20 %; the old server drained in {:.1} s",
            stopped_in.as_secs_f64()
        ),
    ));
    rows
}

/// The Go original serving the same load as `set_up_and_come_back`'s first part: `count`
/// clients at once, four messages each. It reads `config.yml` beside its binary, so the binary
/// is copied into a directory of its own; one broker connection per 1,500 streams (it opens at
/// most 2,047 channels on each).
pub(super) fn go_set_up(count: usize, binary: &str) -> Row {
    let dir = TempDir::new("go-original");
    let copy = dir.path.join("eventsourced");
    let address = free_address();
    let broker = std::env::var("EVENTSOURCED_TEST_AMQP").unwrap_or_default();
    let nodes = format!("    - {broker}\n").repeat(count / 1500 + 1);
    let written = std::fs::copy(binary, &copy).and_then(|_| {
        std::fs::write(
            dir.path.join("config.yml"),
            format!(
                "server:\n  address: {address}\nbroker:\n  node:\n{nodes}queue:\n  pattern: ${{query:id}}\n  expires: 1800\n"
            ),
        )
    });
    let what = format!("Go original: {count} clients at once, 4 messages each: all served after");
    if let Err(e) = written {
        return row(&what, "-".into(), "", format!("cannot set it up: {e}"));
    }
    let Ok(mut child) = std::process::Command::new(&copy)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    else {
        return row(&what, "-".into(), "", "cannot start it".into());
    };
    let addr: std::net::SocketAddr = address.parse().expect("a socket address");
    let up = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() && Instant::now() < up {
        thread::sleep(Duration::from_millis(50));
    }
    // Its broker connections open at start; give them the moment they take.
    thread::sleep(Duration::from_secs(1));
    let amqp = Amqp::connect();
    let queues = queues_with_four(&amqp, "bench-go", count);
    let pid = child.id() as i32;
    let cpu = process_cpu(pid);
    let (mut crowd, all, wall) = four_each(addr, &queues);
    let cpu = process_cpu(pid) - cpu;
    let streaming = crowd.clients.iter().filter(|c| c.data.len() >= 4).count();
    thread::sleep(Duration::from_secs(1));
    let rss = proc_status(pid, "VmRSS:");
    crowd.close_all();
    let _ = child.kill();
    let _ = child.wait();
    for queue in &queues {
        amqp.delete(queue);
    }
    row(
        &what,
        format!("{wall:.1} s{}", if all { "" } else { " (not all)" }),
        "",
        format!(
            "{streaming} of {count} streaming; CPU per stream it served {:.2} ms ({:.2} ms per \
             request); {} MiB RSS ({:.1} KiB a stream); {} broker connections",
            cpu * 1000.0 / streaming.max(1) as f64,
            cpu * 1000.0 / count as f64,
            rss / 1024,
            rss as f64 / streaming.max(1) as f64,
            count / 1500 + 1
        ),
    )
}
