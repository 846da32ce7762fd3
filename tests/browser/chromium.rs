//! Headless Chromium driven over the DevTools protocol (`--remote-debugging-pipe`): launched with
//! a profile of its own, it opens pages and tabs and reads their DOM; `None` where it is not
//! installed.

use super::support::TempDir;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

pub struct Browser {
    child: Child,
    commands: File,
    replies: BufReader<File>,
    next_id: u64,
    session: Option<String>,
    /// Every tab opened: its target and session ids.
    pub tabs: Vec<(String, String)>,
    _profile: TempDir,
    _home: Option<TempDir>,
}

fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array we pass.
    let status = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(status, 0, "pipe2");
    (fds[0], fds[1])
}

impl Browser {
    pub fn launch() -> Option<Browser> {
        Browser::launch_with(None)
    }

    /// Chromium that trusts the CA in `ca` as a system-wide one: in the NSS database of a home
    /// of its own (`$HOME/.pki/nssdb`, where Chromium on Linux reads trusted roots).
    pub fn launch_trusting(ca: &std::path::Path) -> Option<Browser> {
        chromium()?;
        let home = TempDir::new("chromium-home");
        let db = format!("sql:{}", home.path.join(".pki/nssdb").display());
        std::fs::create_dir_all(home.path.join(".pki/nssdb")).expect("an NSS directory");
        let certutil = |args: &[&str]| {
            let status = Command::new("certutil")
                .args(args)
                .status()
                .expect("certutil (libnss3-tools; .ci/run installs it)");
            assert!(status.success(), "certutil {args:?}");
        };
        certutil(&["-d", &db, "-N", "--empty-password"]);
        let ca = ca.display().to_string();
        certutil(&[
            "-d",
            &db,
            "-A",
            "-t",
            "C,,",
            "-n",
            "eventsourced test CA",
            "-i",
            &ca,
        ]);
        Browser::launch_with(Some(home))
    }

    /// Chromium, with `home` as its HOME when given.
    pub fn launch_with(home: Option<TempDir>) -> Option<Browser> {
        let binary = chromium()?;
        let profile = TempDir::new("chromium");
        let (command_read, command_write) = pipe();
        let (reply_read, reply_write) = pipe();
        let mut command = Command::new(binary);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.path.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                File::create(profile.path.join("chromium.log")).map_or(Stdio::null(), Stdio::from),
            );
        // SAFETY: between fork and exec only async-signal-safe dup2 calls, which put the pipe
        // ends where Chromium expects them (3: commands in, 4: replies out), without CLOEXEC.
        unsafe {
            command.pre_exec(move || {
                // Out of the way first: either end may itself be fd 3 or 4.
                let high_read = libc::fcntl(command_read, libc::F_DUPFD, 10);
                let high_write = libc::fcntl(reply_write, libc::F_DUPFD, 10);
                if high_read < 0
                    || high_write < 0
                    || libc::dup2(high_read, 3) < 0
                    || libc::dup2(high_write, 4) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        if let Some(home) = &home {
            command.env("HOME", &home.path);
        }
        let child = command.spawn().ok()?;
        // SAFETY: each fd is ours, open, and owned from here on by exactly one File.
        let (commands, replies) = unsafe {
            libc::close(command_read);
            libc::close(reply_write);
            (
                File::from_raw_fd(command_write),
                File::from_raw_fd(reply_read),
            )
        };
        Some(Browser {
            child,
            commands,
            replies: BufReader::new(replies),
            next_id: 1,
            session: None,
            tabs: Vec::new(),
            _profile: profile,
            _home: home,
        })
    }

    /// Sends a DevTools command and returns its reply (JSON text).
    pub fn call(&mut self, method: &str, params: &str) -> String {
        let id = self.next_id;
        self.next_id += 1;
        let session = self
            .session
            .as_ref()
            .map(|s| format!(",\"sessionId\":\"{s}\""))
            .unwrap_or_default();
        let message =
            format!("{{\"id\":{id},\"method\":\"{method}\",\"params\":{params}{session}}}\0");
        self.commands
            .write_all(message.as_bytes())
            .expect("write to chromium");
        let start = format!("{{\"id\":{id},");
        loop {
            let mut reply = Vec::new();
            let n = self
                .replies
                .read_until(0, &mut reply)
                .expect("read from chromium");
            assert!(n > 0, "chromium closed the DevTools pipe");
            reply.pop();
            let reply = String::from_utf8_lossy(&reply).to_string();
            if reply.starts_with(&start) {
                assert!(
                    !reply.starts_with(&format!("{start}\"error\"")),
                    "{method}: {reply}"
                );
                return reply;
            }
        }
    }

    /// Opens `url` in a new tab and talks to that tab from now on; returns the tab's number.
    pub fn open(&mut self, url: &str) -> usize {
        self.session = None;
        let created = self.call("Target.createTarget", &format!("{{\"url\":\"{url}\"}}"));
        let target = string_field(&created, "targetId").expect("a target id");
        let attached = self.call(
            "Target.attachToTarget",
            &format!("{{\"targetId\":\"{target}\",\"flatten\":true}}"),
        );
        let session = string_field(&attached, "sessionId").expect("a session id");
        self.session = Some(session.clone());
        self.tabs.push((target, session));
        self.tabs.len() - 1
    }

    /// Talks to tab `tab` from now on.
    pub fn switch(&mut self, tab: usize) {
        self.session = Some(self.tabs[tab].1.clone());
    }

    /// Closes tab `tab`, as a user closing it does (its EventSource goes with it).
    pub fn close_tab(&mut self, tab: usize) {
        self.session = None;
        let target = self.tabs[tab].0.clone();
        self.call(
            "Target.closeTarget",
            &format!("{{\"targetId\":\"{target}\"}}"),
        );
    }

    /// Evaluates `expression` (which yields a string without quotes) in the page.
    pub fn text(&mut self, expression: &str) -> String {
        let params = format!("{{\"expression\":\"{expression}\",\"returnByValue\":true}}");
        let reply = self.call("Runtime.evaluate", &params);
        string_field(&reply, "value").unwrap_or_default()
    }

    /// The data of every event on the page, oldest first.
    pub fn events(&mut self) -> Vec<String> {
        let listed = self.text("[...document.querySelectorAll('#events li:not(.gap)')].reverse().map(li => li.lastChild.textContent).join(',')");
        listed
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's Chromium, where it is installed.
fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

/// The string value of the first `"field":"…"` in a JSON text.
fn string_field(json: &str, field: &str) -> Option<String> {
    let start = json.find(&format!("\"{field}\":\""))? + field.len() + 4;
    let end = json[start..].find('"')? + start;
    Some(json[start..end].to_string())
}
