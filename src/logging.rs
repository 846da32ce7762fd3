//! Log lines as the original writes them: `[PID] 2026/11/22 11:33:55.123456 LEVEL message`,
//! to stderr. The level comes from `--log-level`, else `RUST_LOG`, else info.
//!
//! env_logger parses the filter and decides what is logged; the line is written here. env_logger
//! formats into a buffer of each thread's that keeps the size of the longest line the thread
//! ever logged: with a thread a stream, that was a few hundred bytes in every worker, larger in
//! those whose stream once ended with a long reason (a broker restart ends them all so), and the
//! memory the smaller ones had held could not be given back from among the larger.
//!
//! A control character in a line (a newline or a terminal escape, from a client's request or a
//! broker's answer) is written as `\xNN`: one record is one line, and a log read on a terminal
//! runs no escape sequence.

use crate::clock::UtcTime;
use std::io::Write;

/// A line is formatted on the stack up to this length; a longer one takes a buffer of its own
/// for the moment it is written.
const ON_STACK: usize = 512;

pub fn init(level: Option<&str>) {
    // The libraries' own chatter stays out unless asked for.
    let default = "info,amiquip=warn";
    let filter = match level {
        Some(level) => format!("{level},amiquip=warn"),
        None => std::env::var("RUST_LOG").unwrap_or_else(|_| default.to_string()),
    };
    let filter = env_logger::Builder::new().parse_filters(&filter).build();
    let max_level = filter.filter();
    let lines = Lines {
        filter,
        pid: std::process::id(),
    };
    // A second call would leave the first logger in place.
    if log::set_boxed_logger(Box::new(lines)).is_ok() {
        log::set_max_level(max_level);
    }
}

struct Lines {
    filter: env_logger::Logger,
    pid: u32,
}

impl log::Log for Lines {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.filter.matches(record) {
            return;
        }
        let mut line = Line::new();
        let formatted = write!(
            line,
            "[{}] {} {:<5} {}",
            self.pid,
            UtcTime::now().log_stamp(),
            record.level(),
            record.args()
        );
        if formatted.is_err() {
            return;
        }
        let escaped;
        let bytes = if line.bytes().iter().any(|&b| is_control(b)) {
            let mut with_escapes = escape_controls(line.bytes());
            with_escapes.push(b'\n');
            escaped = with_escapes;
            &escaped[..]
        } else {
            // Writing to a `Line` does not fail.
            let _ = line.write_all(b"\n");
            line.bytes()
        };
        // One write a line, as lines from many threads interleave.
        let _ = std::io::stderr().lock().write_all(bytes);
    }

    fn flush(&self) {}
}

fn is_control(byte: u8) -> bool {
    byte.is_ascii_control() && byte != b'\t'
}

/// `line` with each control character written as `\xNN`.
fn escape_controls(line: &[u8]) -> Vec<u8> {
    let mut escaped = Vec::with_capacity(line.len() + 16);
    for &byte in line {
        if is_control(byte) {
            let _ = write!(escaped, "\\x{byte:02x}");
        } else {
            escaped.push(byte);
        }
    }
    escaped
}

/// One log line being formatted: on the stack, or in a buffer of its own once longer.
struct Line {
    stack: [u8; ON_STACK],
    len: usize,
    long: Option<Vec<u8>>,
}

impl Line {
    fn new() -> Line {
        Line {
            stack: [0; ON_STACK],
            len: 0,
            long: None,
        }
    }

    fn bytes(&self) -> &[u8] {
        match &self.long {
            Some(long) => long,
            None => &self.stack[..self.len],
        }
    }
}

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Some(long) = &mut self.long {
            long.extend_from_slice(bytes);
        } else if let Some(room) = self.stack.get_mut(self.len..self.len + bytes.len()) {
            room.copy_from_slice(bytes);
            self.len += bytes.len();
        } else {
            let mut long = Vec::with_capacity(2 * (self.len + bytes.len()));
            long.extend_from_slice(&self.stack[..self.len]);
            long.extend_from_slice(bytes);
            self.long = Some(long);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_line_stays_on_the_stack() {
        let mut line = Line::new();
        let what = "stream opened";
        write!(line, "[1] INFO  {what}").unwrap();
        assert!(line.long.is_none());
        assert_eq!(line.bytes(), b"[1] INFO  stream opened");
    }

    #[test]
    fn a_long_line_is_written_whole() {
        let mut line = Line::new();
        let long = "x".repeat(ON_STACK);
        write!(line, "[1] {long} end").unwrap();
        assert_eq!(line.bytes(), format!("[1] {long} end").as_bytes());
        write!(line, "!").unwrap();
        assert!(line.bytes().ends_with(b"end!"));
    }

    #[test]
    fn control_characters_are_written_escaped() {
        assert_eq!(
            escape_controls(b"queue a\nb \x1b[31mred\ttab\x7f"),
            b"queue a\\x0ab \\x1b[31mred\ttab\\x7f"
        );
        assert_eq!(
            escape_controls("caf\u{e9}".as_bytes()),
            "caf\u{e9}".as_bytes()
        );
    }

    #[test]
    fn a_line_that_just_fills_the_stack_stays_there() {
        let mut line = Line::new();
        line.write_all(&[b'a'; ON_STACK]).unwrap();
        assert!(line.long.is_none());
        assert_eq!(line.bytes().len(), ON_STACK);
    }
}
