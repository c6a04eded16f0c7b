//! Where the leader's time goes, from what it exposes: commit latency quantiles from its
//! Prometheus histogram, Raft bytes per entry from its log counters, the last snapshot's size and
//! build time, and its CPU time from `/proc`. Each is the difference between two readings, so a
//! figure covers the measured phase only.

use anyhow::Context;

/// A Prometheus histogram as exposed: cumulative counts by upper bound, ascending, the last one
/// `+Inf`; and the sum of the observations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
}

impl Histogram {
    /// The histogram `name` (without `_bucket`) in a text exposition; empty when absent.
    pub fn parse(body: &str, name: &str) -> Self {
        let bucket = format!("{name}_bucket{{le=\"");
        let mut buckets: Vec<(f64, f64)> = body
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix(&bucket)?;
                let (le, rest) = rest.split_once("\"}")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                let count = rest.split_whitespace().next()?.parse().ok()?;
                Some((le, count))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let sum = super::probe::metric(body, &format!("{name}_sum")).unwrap_or(0.0);
        Histogram { buckets, sum }
    }

    /// The observations made between `earlier` and `self` (the same buckets, later counts).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let buckets = self
            .buckets
            .iter()
            .map(|&(le, count)| {
                let before = earlier
                    .buckets
                    .iter()
                    .find(|(l, _)| *l == le)
                    .map_or(0.0, |(_, c)| *c);
                (le, (count - before).max(0.0))
            })
            .collect();
        Histogram {
            buckets,
            sum: (self.sum - earlier.sum).max(0.0),
        }
    }

    pub fn count(&self) -> f64 {
        self.buckets.last().map_or(0.0, |(_, c)| *c)
    }

    /// The `q` quantile (0..=1), interpolated linearly within its bucket as Prometheus'
    /// `histogram_quantile` does; the highest finite bound when it falls in `+Inf`; `None`
    /// without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let (mut lower, mut below) = (0.0, 0.0);
        for &(le, count) in &self.buckets {
            if count >= rank && count > below {
                if le.is_infinite() {
                    return Some(lower);
                }
                return Some(lower + (le - lower) * (rank - below) / (count - below));
            }
            if le.is_finite() {
                lower = le;
            }
            below = count;
        }
        Some(lower)
    }

    /// The mean observation, `None` without observations.
    pub fn mean(&self) -> Option<f64> {
        let count = self.count();
        (count > 0.0).then(|| self.sum / count)
    }
}

/// Clock ticks per second of `/proc/PID/stat`'s times: Linux reports them in USER_HZ, which is
/// 100 on every architecture it runs on today (whatever the kernel's own HZ).
const USER_HZ: f64 = 100.0;

/// The CPU time (user + system, all threads) a process has used, in seconds, from the text of
/// its `/proc/PID/stat`.
pub fn cpu_seconds(stat: &str) -> anyhow::Result<f64> {
    // The command name may hold spaces and parentheses: the fields follow its last ')'.
    let (_, rest) = stat
        .rsplit_once(')')
        .context("/proc/PID/stat has no command name")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14 and stime field 15 (proc(5)).
    let tick = |field: usize| -> anyhow::Result<f64> {
        fields
            .get(field - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .map(|ticks| ticks as f64 / USER_HZ)
            .with_context(|| format!("/proc/PID/stat has no field {field}"))
    };
    Ok(tick(14)? + tick(15)?)
}

/// The CPU seconds process `pid` has used so far.
pub fn process_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} is gone"))?;
    cpu_seconds(&stat)
}

/// The leader's Raft figures over one phase, from its metrics before and after.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RaftPhase {
    pub commit_p50_s: Option<f64>,
    pub commit_p99_s: Option<f64>,
    /// Bytes per entry appended to the log meanwhile, as written (sealed).
    pub bytes_per_entry: Option<f64>,
    /// The last snapshot the leader built (any time), and the mean time building one took.
    pub snapshot_bytes: Option<f64>,
    pub snapshot_s: Option<f64>,
}

const COMMIT: &str = "mesh_raft_commit_latency_seconds";
const LOG_ENTRIES: &str = "mesh_raft_log_entries_total";
const LOG_BYTES: &str = "mesh_raft_log_bytes_total";
const SNAPSHOT_BYTES: &str = "mesh_raft_snapshot_bytes";
const SNAPSHOT_LATENCY: &str = "mesh_raft_snapshot_latency_seconds";

impl RaftPhase {
    pub fn between(before: &str, after: &str) -> Self {
        let commits = Histogram::parse(after, COMMIT).since(&Histogram::parse(before, COMMIT));
        let counter = |body: &str, name: &str| super::probe::metric(body, name);
        let bytes_per_entry = match (
            counter(before, LOG_ENTRIES),
            counter(after, LOG_ENTRIES),
            counter(before, LOG_BYTES),
            counter(after, LOG_BYTES),
        ) {
            (Some(e0), Some(e1), Some(b0), Some(b1)) if e1 > e0 => Some((b1 - b0) / (e1 - e0)),
            _ => None,
        };
        RaftPhase {
            commit_p50_s: commits.quantile(0.5),
            commit_p99_s: commits.quantile(0.99),
            bytes_per_entry,
            snapshot_bytes: counter(after, SNAPSHOT_BYTES).filter(|b| *b > 0.0),
            snapshot_s: Histogram::parse(after, SNAPSHOT_LATENCY).mean(),
        }
    }
}

/// The leader's heartbeat monitor over a phase: how often it was held up a second or more, for
/// how long in all, and how many sessions it ended for missed heartbeats.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MonitorPhase {
    pub stalls: f64,
    pub stalled_s: f64,
    pub misses: f64,
}

const MONITOR_STALLS: &str = "mesh_dispatcher_monitor_stalls_seconds";
const HEARTBEAT_MISSES: &str = "mesh_dispatcher_heartbeat_misses_total";

impl MonitorPhase {
    pub fn between(before: &str, after: &str) -> Self {
        let stalls = Histogram::parse(after, MONITOR_STALLS)
            .since(&Histogram::parse(before, MONITOR_STALLS));
        let misses = |body: &str| super::probe::metric(body, HEARTBEAT_MISSES).unwrap_or(0.0);
        MonitorPhase {
            stalls: stalls.count(),
            stalled_s: stalls.sum,
            misses: misses(after) - misses(before),
        }
    }
}

/// `value` formatted with `decimals`, or `none` when there is no figure.
pub fn or_none(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "none".to_string(), |v| format!("{v:.decimals$}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "# TYPE mesh_raft_commit_latency_seconds histogram\n\
        mesh_raft_commit_latency_seconds_sum 1.5\n\
        mesh_raft_commit_latency_seconds_count 10\n\
        mesh_raft_commit_latency_seconds_bucket{le=\"0.001\"} 2\n\
        mesh_raft_commit_latency_seconds_bucket{le=\"0.002\"} 6\n\
        mesh_raft_commit_latency_seconds_bucket{le=\"0.004\"} 9\n\
        mesh_raft_commit_latency_seconds_bucket{le=\"+Inf\"} 10\n\
        mesh_raft_apply_latency_seconds_bucket{le=\"0.001\"} 99\n";

    #[test]
    fn a_histogram_is_read_by_name() {
        let h = Histogram::parse(BODY, "mesh_raft_commit_latency_seconds");
        assert_eq!(
            h.buckets,
            [
                (0.001, 2.0),
                (0.002, 6.0),
                (0.004, 9.0),
                (f64::INFINITY, 10.0)
            ]
        );
        assert_eq!(h.sum, 1.5);
        assert_eq!(h.count(), 10.0);
        assert_eq!(Histogram::parse(BODY, "mesh_absent"), Histogram::default());
    }

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        let h = Histogram::parse(BODY, "mesh_raft_commit_latency_seconds");
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-12);
        let cases = [
            // rank 1 of the first bucket's 2, from 0 to 1 ms
            (0.1, 0.0005),
            // rank 5: 3 of the second bucket's 4, from 1 to 2 ms
            (0.5, 0.00175),
            // rank 9: the top of the third bucket
            (0.9, 0.004),
            // rank 9.9: in +Inf, so the highest finite bound
            (0.99, 0.004),
        ];
        for (q, want) in cases {
            assert!(close(h.quantile(q), want), "q{q}: {:?}", h.quantile(q));
        }
        assert_eq!(Histogram::default().quantile(0.5), None);
        assert_eq!(Histogram::default().mean(), None);
    }

    #[test]
    fn the_difference_of_two_readings_is_what_happened_between() {
        let before = Histogram::parse(BODY, "mesh_raft_commit_latency_seconds");
        let after = Histogram::parse(
            &BODY
                .replace("_sum 1.5", "_sum 2.5")
                .replace("\"0.004\"} 9", "\"0.004\"} 19")
                .replace("\"+Inf\"} 10", "\"+Inf\"} 20"),
            "mesh_raft_commit_latency_seconds",
        );
        let between = after.since(&before);
        assert_eq!(
            between.buckets,
            [
                (0.001, 0.0),
                (0.002, 0.0),
                (0.004, 10.0),
                (f64::INFINITY, 10.0)
            ]
        );
        assert_eq!(between.mean(), Some(0.1));
        let p50 = between.quantile(0.5).expect("observed");
        assert!((p50 - 0.003).abs() < 1e-12, "{p50}");
    }

    #[test]
    fn raft_figures_cover_the_phase_and_say_none_without_data() {
        let before =
            format!("{BODY}mesh_raft_log_entries_total 10\nmesh_raft_log_bytes_total 5000\n");
        let after = format!(
            "{}mesh_raft_log_entries_total 30\nmesh_raft_log_bytes_total 45000\n\
             mesh_raft_snapshot_bytes 2048\nmesh_raft_snapshot_latency_seconds_sum 0.5\n\
             mesh_raft_snapshot_latency_seconds_bucket{{le=\"1.0\"}} 2\n\
             mesh_raft_snapshot_latency_seconds_bucket{{le=\"+Inf\"}} 2\n",
            BODY.replace("\"0.004\"} 9", "\"0.004\"} 19")
                .replace("\"+Inf\"} 10", "\"+Inf\"} 20")
        );
        let phase = RaftPhase::between(&before, &after);
        assert_eq!(phase.bytes_per_entry, Some(2000.0));
        assert_eq!(phase.snapshot_bytes, Some(2048.0));
        assert_eq!(phase.snapshot_s, Some(0.25));
        // The ten commits between fell in (2 ms, 4 ms]: rank 9.9 of 10 there.
        let p99 = phase.commit_p99_s.expect("commits between");
        assert!((p99 - 0.00398).abs() < 1e-12, "{p99}");
        assert_eq!(or_none(phase.bytes_per_entry, 0), "2000");
        // A manager without the log counters, without commits meanwhile, without a snapshot.
        let idle = RaftPhase::between(BODY, BODY);
        assert_eq!(idle, RaftPhase::default());
        assert_eq!(or_none(idle.commit_p50_s, 1), "none");
    }

    #[test]
    fn the_monitor_figures_cover_the_phase() {
        let body = |stalls: u32, sum: f64, misses: u32| {
            format!(
                "mesh_dispatcher_monitor_stalls_seconds_sum {sum}\n\
                 mesh_dispatcher_monitor_stalls_seconds_count {stalls}\n\
                 mesh_dispatcher_monitor_stalls_seconds_bucket{{le=\"2.0\"}} {stalls}\n\
                 mesh_dispatcher_monitor_stalls_seconds_bucket{{le=\"+Inf\"}} {stalls}\n\
                 mesh_dispatcher_heartbeat_misses_total {misses}\n"
            )
        };
        let phase = MonitorPhase::between(&body(2, 2.5, 1), &body(5, 6.25, 4));
        assert_eq!(
            phase,
            MonitorPhase {
                stalls: 3.0,
                stalled_s: 3.75,
                misses: 3.0
            }
        );
        // A manager that never stalled has no samples yet in older builds: nothing, not an error.
        assert_eq!(MonitorPhase::between("", ""), MonitorPhase::default());
    }

    #[test]
    fn cpu_time_is_user_plus_system() {
        // A command name with a space and a parenthesis in it; utime 250, stime 75 ticks.
        let stat = "4242 (mesh d)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 \
                    100 1000 200";
        assert_eq!(cpu_seconds(stat).expect("parsed"), 3.25);
        for bad in [
            "",
            "4242 (meshd) S 1",
            "4242 (meshd) S 1 2 3 4 5 6 7 8 9 10 x 75",
        ] {
            assert!(cpu_seconds(bad).is_err(), "{bad:?}");
        }
    }
}
