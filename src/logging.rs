//! Log lines as the original writes them: `[PID] 2026/11/22 11:33:55.123456 LEVEL message`,
//! to stderr. The level comes from `--log-level`, else `RUST_LOG`, else info.

use crate::clock::UtcTime;
use std::io::Write;

pub fn init(level: Option<&str>) {
    // The libraries' own chatter stays out unless asked for.
    let default = "info,amiquip=warn";
    let filter = match level {
        Some(level) => format!("{level},amiquip=warn"),
        None => std::env::var("RUST_LOG").unwrap_or_else(|_| default.to_string()),
    };
    let pid = std::process::id();
    env_logger::Builder::new()
        .parse_filters(&filter)
        .format(move |out, record| {
            writeln!(
                out,
                "[{pid}] {} {:<5} {}",
                UtcTime::now().log_stamp(),
                record.level(),
                record.args()
            )
        })
        .init();
}
