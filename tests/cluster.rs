//! Several instances on a real three-node RabbitMQ cluster (`make test-cluster` starts it; each
//! test is skipped, saying so, without one), with quorum queues: one stream per queue across
//! instances, and every numbered message exactly once for clients that resume with
//! `Last-Event-ID` while the node leading their queue, or the node their stream's connection is
//! on, is killed. The pauses clients saw are printed (`--nocapture`), not asserted.

mod support;

use std::thread;
use std::time::{Duration, Instant};
use support::cluster::{follow, Cluster, Publisher};
use support::{
    assert_exactly_once, numbered, open_at_once, the_one_served, unique, Server, Stream, QUORUM,
};

/// How long a following client may take to get everything, a node's loss included.
const FOLLOW: Duration = Duration::from_secs(90);
/// The publisher's pace: about a hundred messages a second.
const PACE: Duration = Duration::from_millis(10);

fn server_on(ports: &[u16], env: &[(&str, &str)]) -> Server {
    let nodes = Cluster::nodes(ports);
    let mut all = vec![("EVENTSOURCED_BROKER_NODE", nodes.as_str()), QUORUM];
    all.extend_from_slice(env);
    let server = Server::start_with_broker(&Cluster::url(ports[0]), &all);
    // Streams go round-robin over the connections that are up: all of them.
    server.wait_log_count("connected to broker", ports.len());
    server
}

#[test]
fn ten_requests_at_once_on_two_nodes_make_one_stream() {
    let Some(cluster) = Cluster::from_env("ten_requests_at_once_on_two_nodes_make_one_stream")
    else {
        return;
    };
    let [one, two, three] = cluster.ports[..] else {
        panic!("three nodes")
    };
    let reject = [("EVENTSOURCED_QUEUE_CONFLICT", "reject")];
    let (a, b) = (server_on(&[one], &reject), server_on(&[two], &reject));
    let mut publisher = Publisher::new(&[three]);
    for round in 0..3 {
        // A fresh queue: the first request declares it.
        let queue = unique("cluster-race");
        let answers = open_at_once(&[a.addr, b.addr], &format!("/?id={queue}"), 10);
        let mut holder = the_one_served(answers, &format!("round {round}"));
        assert_eq!(
            cluster.consumers_of(&queue, three),
            ["true"],
            "round {round}"
        );
        let published = numbered(1, 20);
        for m in &published {
            publisher.publish(&queue, m);
        }
        let received: Vec<String> = (0..published.len())
            .map(|_| holder.next_data().expect("a message"))
            .collect();
        assert_exactly_once("the one stream of ten requests", &published, &received);
    }
}

#[test]
fn the_queue_leaders_node_killed_while_a_client_streams() {
    let Some(cluster) = Cluster::from_env("the_queue_leaders_node_killed_while_a_client_streams")
    else {
        return;
    };
    let [one, two, three] = cluster.ports[..] else {
        panic!("three nodes")
    };
    let queue = unique("leader-lost");
    cluster.declare_quorum(&queue, one);
    assert_eq!(cluster.leader_of(&queue, two), one);
    // The bridge and the publisher are on the other nodes.
    let server = server_on(&[two, three], &[]);
    let published = numbered(1, 400);
    let client = follow(vec![server.addr], &queue, published.len(), FOLLOW);
    let mut publisher = Publisher::new(&[three, two]);
    let mut killed = None;
    let mut killed_at = None;
    for (n, m) in published.iter().enumerate() {
        if n == 100 {
            killed_at = Some(Instant::now());
            killed = Some(cluster.kill(one));
        }
        publisher.publish(&queue, m);
        thread::sleep(PACE);
    }
    let followed = client.join().expect("the client");
    let new_leader = cluster.leader_of(&queue, two);
    eprintln!(
        "leader on node {one} killed: new leader {new_leader}, publisher retries {}, client \
         connections {}, longest pause between messages {:?} (publishing took {:?} after the kill)",
        publisher.retries,
        followed.connections,
        followed.longest_pause,
        killed_at.map(|at| at.elapsed())
    );
    eprintln!(
        "failover: leader-loss longest_pause_ms={} client_connections={} publisher_retries={}",
        followed.longest_pause.as_millis(),
        followed.connections,
        publisher.retries
    );
    assert_exactly_once(
        "the queue's leader node killed",
        &published,
        &followed.received,
    );
    assert_ne!(new_leader, one);
    drop(killed);
}

#[test]
fn the_node_of_a_bridge_connection_killed_while_clients_stream() {
    let Some(cluster) =
        Cluster::from_env("the_node_of_a_bridge_connection_killed_while_clients_stream")
    else {
        return;
    };
    let [one, two, three] = cluster.ports[..] else {
        panic!("three nodes")
    };
    // Leaders on node 3, which stays: only connections are lost with node 1.
    let queues: Vec<String> = (0..6).map(|i| unique(&format!("node-lost-{i}"))).collect();
    for queue in &queues {
        cluster.declare_quorum(queue, three);
    }
    let server = server_on(&[one, two, three], &[]);
    let published = numbered(1, 150);
    let clients: Vec<_> = queues
        .iter()
        .map(|queue| follow(vec![server.addr], queue, published.len(), FOLLOW))
        .collect();
    // Every stream is open, some of them on node 1.
    server.wait_log_count("stream \"test-node-lost-", queues.len());
    let on_one = format!("on broker 127.0.0.1:{one}");
    let streams_on_one = server
        .log_text()
        .lines()
        .filter(|l| l.contains(&on_one))
        .count();
    assert!(streams_on_one > 0, "no stream on node {one}");
    let mut publisher = Publisher::new(&[three]);
    let mut killed = None;
    let mut noticed = None;
    for (n, m) in published.iter().enumerate() {
        if n == 50 {
            let at = Instant::now();
            killed = Some(cluster.kill(one));
            server.wait_log(&format!(
                "lost connection to broker amqp://guest:***@127.0.0.1:{one}"
            ));
            noticed = Some(at.elapsed());
        }
        for queue in &queues {
            publisher.publish(queue, m);
        }
        thread::sleep(PACE);
    }
    let followed: Vec<_> = clients
        .into_iter()
        .map(|c| c.join().expect("a client"))
        .collect();
    let longest = followed.iter().map(|f| f.longest_pause).max();
    eprintln!(
        "node {one} killed with {streams_on_one} of {} streams on it: the server noticed after \
         {noticed:?}; longest pause a client saw {longest:?}",
        queues.len()
    );
    eprintln!(
        "failover: connection-node-loss noticed_ms={} longest_pause_ms={} streams_moved={streams_on_one}",
        noticed.unwrap_or_default().as_millis(),
        longest.unwrap_or_default().as_millis()
    );
    for f in &followed {
        assert_exactly_once("a client on a node killed", &published, &f.received);
    }
    // Node 1 comes back and is used again, the server still running.
    let connected = format!("connected to broker amqp://guest:***@127.0.0.1:{one}");
    let mut killed = killed.expect("node 1 was killed");
    killed.restart();
    let back = Instant::now();
    let deadline = back + Duration::from_secs(60);
    while server.log_text().matches(&connected).count() < 2 {
        assert!(Instant::now() < deadline, "node {one} not used again");
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "failover: node-back connected_again_ms={}",
        back.elapsed().as_millis()
    );
    let before = server.log_text().matches(&on_one).count();
    let later: Vec<Stream> = (0..3)
        .map(|i| {
            Stream::open(
                server.addr,
                &format!("/?id={}", unique(&format!("back-{i}"))),
                &[],
            )
        })
        .collect();
    server.wait_log_count("stream \"test-back-", 3);
    assert!(
        server.log_text().matches(&on_one).count() > before,
        "no new stream on node {one}"
    );
    drop(later);
}
