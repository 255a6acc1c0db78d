//! The limits of `commandpost serve` as flags (and environment variables), each overriding the config file's key of
//! the same name; defaults and meanings are in [`Config`] and docs/security.md.

use clap::Args;

use crate::config::{Config, parse_bytes};

/// Limit flags of `serve`; unset flags leave the config file's (or the default) value.
#[derive(Args, Debug, Default)]
pub(super) struct LimitArgs {
    /// Largest /sync frame: bytes, or a size such as 16 MiB [default: 16 MiB].
    #[arg(long, env = "COMMANDPOST_MAX_FRAME_BYTES", value_parser = parse_bytes)]
    max_frame_bytes: Option<usize>,
    /// Largest HTTP request body: bytes, or a size such as 1 MiB [default: 1 MiB].
    #[arg(long, env = "COMMANDPOST_MAX_BODY_BYTES", value_parser = parse_bytes)]
    max_body_bytes: Option<usize>,
    /// Largest stored size of one document: bytes, or a size such as 64 MiB [default: 64 MiB].
    #[arg(long, env = "COMMANDPOST_MAX_DOCUMENT_BYTES", value_parser = parse_bytes)]
    max_document_bytes: Option<usize>,
    /// Open /sync connections per token [default: 4096].
    #[arg(long, env = "COMMANDPOST_MAX_CONNECTIONS_PER_TOKEN")]
    max_connections_per_token: Option<usize>,
    /// Sustained change-carrying sync messages per second per connection [default: 100].
    #[arg(long, env = "COMMANDPOST_MAX_EDITS_PER_SEC")]
    max_edits_per_sec: Option<u32>,
    /// Burst of change-carrying sync messages above that rate [default: 200].
    #[arg(long, env = "COMMANDPOST_EDIT_BURST")]
    edit_burst: Option<u32>,
    /// Sustained ephemeral messages (presence) per second per connection; faster is cut off [default: 20].
    #[arg(long, env = "COMMANDPOST_MAX_EPHEMERAL_PER_SEC")]
    max_ephemeral_per_sec: Option<u32>,
    /// Burst of ephemeral messages above that rate [default: 50].
    #[arg(long, env = "COMMANDPOST_EPHEMERAL_BURST")]
    ephemeral_burst: Option<u32>,
    /// Seconds between server pings on /sync [default: 15].
    #[arg(long, env = "COMMANDPOST_PING_INTERVAL_SECS")]
    ping_interval_secs: Option<u64>,
    /// Seconds of silence after which a /sync connection is closed [default: 60].
    #[arg(long, env = "COMMANDPOST_IDLE_TIMEOUT_SECS")]
    idle_timeout_secs: Option<u64>,
    /// Heavy reads (history, exports, updates) computing at once; as many may wait [default: number of cores].
    #[arg(long, env = "COMMANDPOST_MAX_HEAVY_READS")]
    max_heavy_reads: Option<usize>,
}

impl LimitArgs {
    /// Writes every flag that was given over `config`.
    pub(super) fn apply(self, config: &mut Config) {
        let LimitArgs {
            max_frame_bytes,
            max_body_bytes,
            max_document_bytes,
            max_connections_per_token,
            max_edits_per_sec,
            edit_burst,
            max_ephemeral_per_sec,
            ephemeral_burst,
            ping_interval_secs,
            idle_timeout_secs,
            max_heavy_reads,
        } = self;
        set(&mut config.max_frame_bytes, max_frame_bytes);
        set(&mut config.max_body_bytes, max_body_bytes);
        set(&mut config.max_document_bytes, max_document_bytes);
        set(
            &mut config.max_connections_per_token,
            max_connections_per_token,
        );
        set(&mut config.max_edits_per_sec, max_edits_per_sec);
        set(&mut config.edit_burst, edit_burst);
        set(&mut config.max_ephemeral_per_sec, max_ephemeral_per_sec);
        set(&mut config.ephemeral_burst, ephemeral_burst);
        set(&mut config.ping_interval_secs, ping_interval_secs);
        set(&mut config.idle_timeout_secs, idle_timeout_secs);
        set(&mut config.max_heavy_reads, max_heavy_reads);
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        limits: LimitArgs,
    }

    #[test]
    fn flags_override_only_what_they_name() {
        let flags = Flags::parse_from([
            "serve",
            "--max-document-bytes",
            "1000",
            "--max-frame-bytes",
            "2 MiB",
            "--edit-burst",
            "7",
            "--ephemeral-burst",
            "9",
        ]);
        let mut config = Config {
            max_body_bytes: 42,
            ..Config::default()
        };
        flags.limits.apply(&mut config);
        assert_eq!(config.max_document_bytes, 1000);
        assert_eq!(config.max_frame_bytes, 2 << 20);
        assert_eq!(config.edit_burst, 7);
        assert_eq!(config.ephemeral_burst, 9);
        assert_eq!(config.max_body_bytes, 42);
        assert_eq!(
            config.max_edits_per_sec,
            Config::default().max_edits_per_sec
        );
        assert_eq!(
            config.max_ephemeral_per_sec,
            Config::default().max_ephemeral_per_sec
        );
    }
}
