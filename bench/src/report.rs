//! Results on disk and as Markdown: every scenario run writes one JSON [`Outcome`]; `commandpost-bench report`
//! reads a run's outcomes and prints the tables BENCHMARKS.md shows, commandpost beside its peers (automerge-repo's
//! sync server, Hocuspocus) with the ratio between commandpost and each.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::latency::Summary;
use crate::scenario::{Usages, join_storm, many_incidents, trace, war_room};

/// One scenario's result, tagged with the scenario's name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "scenario", content = "report", rename_all = "kebab-case")]
pub enum Outcome {
    /// `war-room`.
    WarRoom(war_room::Report),
    /// `trace`.
    Trace(trace::Report),
    /// `join-storm`.
    JoinStorm(join_storm::Report),
    /// `many-incidents`.
    ManyIncidents(many_incidents::Report),
    /// `ack-cost`: Automerge alone, one acknowledgement's cost per history length.
    AckCost(Vec<crate::ack_cost::Point>),
}

/// Which way a figure is better, for the ratio column.
#[derive(Clone, Copy)]
enum Better {
    /// Smaller is better (latency, CPU): the ratio is peer ÷ ours.
    Lower,
    /// Larger is better (throughput): the ratio is ours ÷ peer.
    Higher,
    /// No ratio (settings, context).
    Neither,
}

/// One row: a label, each run's value, and which way is better.
struct Row {
    /// What the figure is.
    label: String,
    /// Each run's value, `None` when it has none.
    values: Vec<Option<f64>>,
    /// Decimals to print.
    decimals: usize,
    /// For the ratio.
    better: Better,
}

/// Builds the rows of one table from the runs of one scenario.
struct Table<'a, R> {
    /// The runs, commandpost first.
    runs: &'a [&'a R],
    /// The rows so far.
    rows: Vec<Row>,
}

impl<'a, R> Table<'a, R> {
    fn new(runs: &'a [&'a R]) -> Self {
        Table {
            runs,
            rows: Vec::new(),
        }
    }

    fn row(
        &mut self,
        label: &str,
        decimals: usize,
        better: Better,
        value: impl Fn(&R) -> Option<f64>,
    ) {
        self.rows.push(Row {
            label: label.to_owned(),
            values: self.runs.iter().map(|r| value(r)).collect(),
            decimals,
            better,
        });
    }

    /// The latency rows of a summary.
    fn latency(&mut self, what: &str, summary: impl Fn(&R) -> &Summary) {
        self.row(&format!("{what} p50 (ms)"), 1, Better::Lower, |r| {
            Some(summary(r).p50_ms)
        });
        self.row(&format!("{what} p99 (ms)"), 1, Better::Lower, |r| {
            Some(summary(r).p99_ms)
        });
        self.row(&format!("{what} p99.9 (ms)"), 1, Better::Lower, |r| {
            Some(summary(r).p999_ms)
        });
        self.row(&format!("{what} max (ms)"), 1, Better::Lower, |r| {
            Some(summary(r).max_ms)
        });
    }

    /// The CPU and memory rows.
    fn usage(&mut self, usage: impl Fn(&R) -> &Usages) {
        self.row("machine load average before", 2, Better::Neither, |r| {
            Some(usage(r).load_average)
        });
        self.row("server CPU (s)", 2, Better::Lower, |r| {
            usage(r).server.as_ref().map(|s| s.cpu_s)
        });
        self.row("server CPU (% of one core)", 0, Better::Lower, |r| {
            usage(r)
                .server
                .as_ref()
                .map(|s| 100.0 * s.cpu_s / s.seconds.max(1e-9))
        });
        self.row("server RSS at start (MiB)", 1, Better::Neither, |r| {
            usage(r).server.as_ref().map(|s| s.rss_start_mib)
        });
        self.row("server RSS peak (MiB)", 1, Better::Lower, |r| {
            usage(r).server.as_ref().map(|s| s.rss_peak_mib)
        });
        self.row("load generator CPU (s)", 2, Better::Neither, |r| {
            Some(usage(r).bench.cpu_s)
        });
        self.row("bytes to peers (KiB/s)", 0, Better::Neither, |r| {
            Some(usage(r).bytes_in_per_s / 1024.0)
        });
        self.row("bytes from peers (KiB/s)", 0, Better::Neither, |r| {
            Some(usage(r).bytes_out_per_s / 1024.0)
        });
    }

    /// The Markdown table; with more than one run, a ratio column for each run after the first (commandpost's),
    /// saying by how much the first is better than that one.
    fn render(&self, names: &[String]) -> String {
        let peers = names.len().saturating_sub(1);
        let mut out = String::new();
        let _ = write!(out, "| figure |");
        for name in names {
            let _ = write!(out, " {name} |");
        }
        for name in names.iter().skip(1) {
            let _ = write!(out, " {} better than {name} by |", names[0]);
        }
        out.push('\n');
        out.push_str(&"|---".repeat(names.len() + 1 + peers));
        out.push_str("|\n");
        for row in &self.rows {
            let _ = write!(out, "| {} |", row.label);
            for value in &row.values {
                match value {
                    Some(v) => {
                        let _ = write!(out, " {v:.prec$} |", prec = row.decimals);
                    }
                    None => out.push_str(" – |"),
                }
            }
            for peer in row.values.iter().skip(1) {
                let r = match (row.better, row.values[0], *peer) {
                    (Better::Lower, Some(ours), Some(peer)) if ours > 0.0 => Some(peer / ours),
                    (Better::Higher, Some(ours), Some(peer)) if peer > 0.0 => Some(ours / peer),
                    _ => None,
                };
                match r {
                    Some(r) => {
                        let _ = write!(out, " {r:.1}× |");
                    }
                    None => out.push_str(" |"),
                }
            }
            out.push('\n');
        }
        out
    }
}

/// The Markdown tables of `outcomes`, one per scenario, runs in the order given.
pub fn markdown(outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    war_room_table(outcomes, &mut out);
    trace_table(outcomes, &mut out);
    join_storm_table(outcomes, &mut out);
    many_incidents_table(outcomes, &mut out);
    ack_cost(outcomes, &mut out);
    out
}

/// The `war-room` runs as a Markdown table, if there are any.
fn war_room_table(outcomes: &[Outcome], out: &mut String) {
    let war: Vec<&war_room::Report> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::WarRoom(r) => Some(r),
            _ => None,
        })
        .collect();
    if war.is_empty() {
        return;
    }
    let mut t = Table::new(&war);
    t.row("editors", 0, Better::Neither, |r| {
        Some(f64::from(r.settings.editors))
    });
    t.row("keystrokes/s per editor", 1, Better::Neither, |r| {
        Some(r.settings.rate)
    });
    t.row("viewers", 0, Better::Neither, |r| {
        Some(f64::from(r.settings.viewers))
    });
    t.row("typing (s)", 0, Better::Neither, |r| {
        Some(r.settings.duration_s)
    });
    t.row("keystrokes of history before", 0, Better::Neither, |r| {
        Some(r.settings.history as f64)
    });
    t.row(
        "viewers connected and synced in (s)",
        2,
        Better::Lower,
        |r| Some(r.connect_s),
    );
    t.row(
        "keystrokes typed, all editors (/s)",
        1,
        Better::Neither,
        |r| Some(r.keystrokes_per_s),
    );
    t.row(
        "changes delivered to viewers (/s)",
        0,
        Better::Higher,
        |r| Some(r.delivered_per_s),
    );
    t.latency("keystroke → viewer", |r| &r.latency);
    t.row("p99 in the first window (ms)", 1, Better::Lower, |r| {
        r.windows.first().map(|w| w.latency.p99_ms)
    });
    t.row("p99 in the last window (ms)", 1, Better::Lower, |r| {
        r.windows.last().map(|w| w.latency.p99_ms)
    });
    t.row("worst window's p99 (ms)", 1, Better::Lower, |r| {
        r.windows.iter().map(|w| w.latency.p99_ms).reduce(f64::max)
    });
    t.row(
        "server CPU per delivered change (µs)",
        1,
        Better::Lower,
        |r| r.server_cpu_us_per_delivered,
    );
    t.usage(|r| &r.usage);
    t.row(
        "all converged after typing stopped (s)",
        2,
        Better::Lower,
        |r| Some(r.converge_s),
    );
    t.row("viewers dropped by the server", 0, Better::Lower, |r| {
        Some(f64::from(r.viewers_dropped))
    });
    t.row("editors dropped by the server", 0, Better::Lower, |r| {
        Some(f64::from(r.editors_dropped))
    });
    t.row("changes made by the server", 0, Better::Lower, |r| {
        Some(r.server_changes as f64)
    });
    section(out, "War room", &t, war.iter().map(|r| r.target.clone()));
}

/// The `trace` runs as a Markdown table, if there are any.
fn trace_table(outcomes: &[Outcome], out: &mut String) {
    let traces: Vec<&trace::Report> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Trace(r) => Some(r),
            _ => None,
        })
        .collect();
    if traces.is_empty() {
        return;
    }
    let mut t = Table::new(&traces);
    t.row("keystrokes replayed", 0, Better::Neither, |r| {
        Some(r.keystrokes as f64)
    });
    t.row("viewers", 0, Better::Neither, |r| {
        Some(f64::from(r.settings.viewers))
    });
    t.row(
        "the CRDT alone (Automerge; yrs for Hocuspocus), typing (keystrokes/s)",
        0,
        Better::Neither,
        |r| Some(r.local_typing_per_s),
    );
    t.row(
        "the CRDT alone, applying the editor's batches (changes/s)",
        0,
        Better::Neither,
        |r| Some(r.local_apply_per_s),
    );
    t.row(
        "through the server to every viewer (keystrokes/s)",
        0,
        Better::Higher,
        |r| Some(r.server_per_s),
    );
    t.row("server ÷ the CRDT typing", 2, Better::Higher, |r| {
        Some(r.ratio_to_local_typing)
    });
    t.row("server ÷ the CRDT applying", 2, Better::Higher, |r| {
        Some(r.ratio_to_local_apply)
    });
    t.row("sync messages from the editor", 0, Better::Neither, |r| {
        Some(r.batches as f64)
    });
    t.latency("keystroke → viewer", |r| &r.latency);
    t.row("server CPU per keystroke (µs)", 1, Better::Lower, |r| {
        r.server_cpu_us_per_keystroke
    });
    t.usage(|r| &r.usage);
    section(
        out,
        "Trace replay",
        &t,
        traces.iter().map(|r| r.target.clone()),
    );
}

/// The `join-storm` runs as a Markdown table, if there are any.
fn join_storm_table(outcomes: &[Outcome], out: &mut String) {
    let storms: Vec<&join_storm::Report> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::JoinStorm(r) => Some(r),
            _ => None,
        })
        .collect();
    if storms.is_empty() {
        return;
    }
    let mut t = Table::new(&storms);
    t.row("clients", 0, Better::Neither, |r| {
        Some(f64::from(r.settings.clients))
    });
    t.row("changes of history", 0, Better::Neither, |r| {
        Some(r.settings.history as f64)
    });
    t.row("arriving over (s)", 0, Better::Neither, |r| {
        Some(r.settings.over_s)
    });
    t.row("bytes to one client (KiB)", 0, Better::Lower, |r| {
        Some(r.document_bytes as f64 / 1024.0)
    });
    t.latency("connect → complete document", |r| &r.time_to_document);
    t.usage(|r| &r.usage);
    section(
        out,
        "Join storm",
        &t,
        storms.iter().map(|r| r.target.clone()),
    );
}

/// The `many-incidents` runs as a Markdown table, if there are any.
fn many_incidents_table(outcomes: &[Outcome], out: &mut String) {
    let many: Vec<&many_incidents::Report> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::ManyIncidents(r) => Some(r),
            _ => None,
        })
        .collect();
    if many.is_empty() {
        return;
    }
    let mut t = Table::new(&many);
    t.row("incidents stored", 0, Better::Neither, |r| {
        Some(f64::from(r.settings.store))
    });
    t.row(
        "incidents declared (/s, each durable)",
        0,
        Better::Higher,
        |r| Some(r.declared_per_s),
    );
    t.row("incidents loaded", 0, Better::Neither, |r| {
        Some(f64::from(r.settings.load))
    });
    t.row("idle viewer connections", 0, Better::Neither, |r| {
        Some(f64::from(r.settings.viewers))
    });
    t.row("server RSS, none loaded (MiB)", 1, Better::Lower, |r| {
        Some(r.rss_none_loaded_mib)
    });
    t.row(
        "server RSS, incidents loaded (MiB)",
        1,
        Better::Lower,
        |r| Some(r.rss_loaded_mib),
    );
    t.row(
        "server RSS, viewers connected (MiB)",
        1,
        Better::Lower,
        |r| Some(r.rss_viewers_mib),
    );
    t.row(
        "server RSS, all unloaded again (MiB)",
        1,
        Better::Lower,
        |r| Some(r.rss_unloaded_mib),
    );
    t.row("per loaded idle incident (KiB)", 1, Better::Lower, |r| {
        Some(r.kib_per_loaded_incident)
    });
    t.row("per idle viewer connection (KiB)", 1, Better::Lower, |r| {
        Some(r.kib_per_viewer)
    });
    t.row(
        "unloaded after the last viewer left (s)",
        1,
        Better::Lower,
        |r| Some(r.unload_s),
    );
    section(
        out,
        "Many incidents",
        &t,
        many.iter().map(|r| r.target.clone()),
    );
}

/// The `ack-cost` points as a Markdown table, if there are any.
fn ack_cost(outcomes: &[Outcome], out: &mut String) {
    for outcome in outcomes {
        if let Outcome::AckCost(points) = outcome {
            out.push_str("### Automerge alone: one acknowledgement\n\n");
            out.push_str("| changes of history | server's `receive_sync_message` of one acknowledgement (µs) |\n");
            out.push_str("|---|---|\n");
            for point in points {
                let _ = writeln!(out, "| {} | {:.1} |", point.history, point.ack_us);
            }
            out.push('\n');
        }
    }
}

/// Appends a titled table.
fn section<R>(
    out: &mut String,
    title: &str,
    table: &Table<'_, R>,
    names: impl Iterator<Item = String>,
) {
    let names: Vec<String> = names.collect();
    let _ = writeln!(out, "### {title}\n");
    out.push_str(&table.render(&names));
    out.push('\n');
}

/// The viewer sweep as Markdown: for each viewer count, each server's latency and CPU per delivered change, then
/// the largest count each sustained with p99 ≤ `p99_limit_ms`.
pub fn sweep(outcomes: &[Outcome], p99_limit_ms: f64) -> String {
    let runs: Vec<&war_room::Report> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::WarRoom(r) => Some(r),
            _ => None,
        })
        .collect();
    let mut targets: Vec<&str> = Vec::new();
    let mut counts: Vec<u32> = Vec::new();
    for run in &runs {
        if !targets.contains(&run.target.as_str()) {
            targets.push(&run.target);
        }
        if !counts.contains(&run.settings.viewers) {
            counts.push(run.settings.viewers);
        }
    }
    counts.sort_unstable();
    let find = |target: &str, viewers: u32| {
        runs.iter()
            .find(|r| r.target == target && r.settings.viewers == viewers)
    };
    let mut out = String::from("### Viewer sweep\n\n| viewers |");
    for target in &targets {
        let _ = write!(
            out,
            " {target} p50 (ms) | {target} p99 (ms) | {target} server CPU per delivered change (µs) |"
        );
    }
    out.push('\n');
    out.push_str(&"|---".repeat(1 + 3 * targets.len()));
    out.push_str("|\n");
    for &viewers in &counts {
        let _ = write!(out, "| {viewers} |");
        for target in &targets {
            match find(target, viewers) {
                Some(r) => {
                    let cpu = r
                        .server_cpu_us_per_delivered
                        .map_or_else(|| "–".to_owned(), |c| format!("{c:.1}"));
                    let _ = write!(
                        out,
                        " {:.1} | {:.1} | {cpu} |",
                        r.latency.p50_ms, r.latency.p99_ms
                    );
                }
                None => out.push_str(" – | – | – |"),
            }
        }
        out.push('\n');
    }
    out.push('\n');
    for target in &targets {
        let sustained = counts
            .iter()
            .filter(|&&v| find(target, v).is_some_and(|r| r.latency.p99_ms <= p99_limit_ms))
            .max();
        let _ = writeln!(
            out,
            "- {target}: most viewers with p99 ≤ {p99_limit_ms} ms: {}",
            sustained.map_or_else(|| "none of those tried".to_owned(), u32::to_string)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_runs_get_a_ratio_column_for_each_peer() {
        let runs = [&2.0, &4.0, &1.0];
        let mut t = Table::new(&runs);
        t.row("cpu", 1, Better::Lower, |r: &f64| Some(*r));
        t.row("throughput", 0, Better::Higher, |r: &f64| Some(*r));
        let names = ["commandpost", "sync", "hocuspocus"].map(String::from);
        let table = t.render(&names);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "| figure | commandpost | sync | hocuspocus | commandpost better than sync by | \
             commandpost better than hocuspocus by |"
        );
        assert_eq!(lines[1], "|---|---|---|---|---|---|");
        assert_eq!(lines[2], "| cpu | 2.0 | 4.0 | 1.0 | 2.0× | 0.5× |");
        assert_eq!(lines[3], "| throughput | 2 | 4 | 1 | 0.5× | 2.0× |");
    }
}
