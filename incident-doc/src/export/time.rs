//! The human forms of times and durations that every export (and the status update) prints, so they read alike
//! everywhere.

use chrono::{DateTime, Duration, Utc};

/// `YYYY-MM-DD HH:MM UTC`, the one human time format of every export.
pub fn format_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// A duration as people read it: `30 s`, `42 min`, `1 h 5 min`, `2 d 3 h`, rounded down, since lifecycle
/// timestamps are only as precise as people set them. Negative durations (timestamps out of order) keep their sign.
pub fn format_duration(d: Duration) -> String {
    let seconds = d.num_seconds();
    let sign = if seconds < 0 { "-" } else { "" };
    let s = seconds.unsigned_abs();
    match (s / 86_400, s / 3600 % 24, s / 60 % 60) {
        (0, 0, 0) => format!("{sign}{s} s"),
        (0, 0, m) => format!("{sign}{m} min"),
        (0, h, m) => format!("{sign}{h} h {m} min"),
        (days, h, _) => format!("{sign}{days} d {h} h"),
    }
}
