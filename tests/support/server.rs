//! The server binary under test: started with a config file of its own on a free port, its log
//! collected so a test can wait for a line, killed when dropped.

use super::client::{request, Response};
use super::{broker_url, TempDir, WAIT};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The server binary, running with a config file of its own and the given environment
/// overrides (`EVENTSOURCED_SECTION_KEY`). Killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<(Mutex<String>, Condvar)>,
    _dir: TempDir,
}

impl Server {
    pub fn start(env: &[(&str, &str)]) -> Server {
        Server::start_with_broker(&broker_url(), env)
    }

    pub fn start_with_broker(broker: &str, env: &[(&str, &str)]) -> Server {
        let dir = TempDir::new("server");
        let config = dir.path.join("config.yml");
        std::fs::write(
            &config,
            format!("server:\n  address: 127.0.0.1:0\n  keepalive: 0\nbroker:\n  node:\n    - {broker}\n"),
        )
        .expect("write test config");
        // EVENTSOURCED_BIN runs another build (the static one, say) under the same tests.
        let binary = std::env::var("EVENTSOURCED_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_eventsourced").to_string());
        let mut command = Command::new(binary);
        command
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start the server binary");
        let stderr = child.stderr.take().expect("server stderr");
        let log = Arc::new((Mutex::new(String::new()), Condvar::new()));
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            let quiet = std::env::var_os("EVENTSOURCED_QUIET_SERVER").is_some();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !quiet {
                    eprintln!("server| {line}");
                }
                let (text, changed) = &*sink;
                let mut text = text.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
                changed.notify_all();
            }
        });
        let mut server = Server {
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            log,
            _dir: dir,
        };
        let line = server.wait_log("listening on ");
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .expect("listening address in the log");
        server.addr = addr;
        server
    }

    /// Waits until a log line contains `needle`, and returns that line.
    pub fn wait_log(&self, needle: &str) -> String {
        self.wait_log_count(needle, 1)
    }

    /// Waits until `count` log lines contain `needle`; returns the last of them.
    pub fn wait_log_count(&self, needle: &str, count: usize) -> String {
        let (text, changed) = &*self.log;
        let end = Instant::now() + WAIT;
        let mut guard = text.lock().unwrap();
        loop {
            let lines: Vec<&str> = guard.lines().filter(|l| l.contains(needle)).collect();
            if lines.len() >= count {
                return lines[count - 1].to_string();
            }
            let now = Instant::now();
            assert!(
                now < end,
                "server never logged {count} x {needle:?}; log:\n{guard}"
            );
            guard = changed.wait_timeout(guard, end - now).unwrap().0;
        }
    }

    pub fn log_text(&self) -> String {
        self.log.0.lock().unwrap().clone()
    }

    /// Waits until the server has a broker connection.
    pub fn ready(self) -> Server {
        self.wait_log("connected to broker");
        self
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` (`libc::SIGTERM`, say) without waiting for anything.
    pub fn signal(&self, signal: i32) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// Sends `signal` and waits for the exit, returning the status and how long it took.
    pub fn stop_with(&mut self, signal: i32) -> (ExitStatus, Duration) {
        let started = Instant::now();
        self.signal(signal);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the server") {
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < WAIT,
                "server did not exit after signal {signal}"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn get(&self, target: &str, headers: &[(&str, &str)]) -> Response {
        request(self.addr, "GET", target, headers)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds a process has used (user + system), from /proc.
pub fn process_cpu(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / hz
}
