//! meshd's logs: one line per event on stderr (which systemd sends to the journal), as text for
//! people or as JSON for log collectors, filtered per module the way RUST_LOG filters.

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The environment variable read for the filter when neither `--log` nor `MESH_LOG` sets one.
pub const RUST_LOG: &str = "RUST_LOG";

/// The filter when nothing sets one.
const DEFAULT_FILTER: &str = "info";

/// How each event is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-12-03T09:30:00.000000Z  INFO mesh_agent::server: meshd ready socket=/run/mesh/meshd.sock`
    #[default]
    Text,
    /// `{"timestamp":"…","level":"INFO","fields":{"message":"meshd ready","socket":"…"},"target":"…"}`
    Json,
}

/// `--log`'s value parser: a filter RUST_LOG would take, refused in one line otherwise.
pub fn parse_filter(value: &str) -> Result<String, String> {
    EnvFilter::try_new(value)
        .map(|_| value.to_owned())
        .map_err(|err| format!("not a log filter ({err})"))
}

/// The filter to log with: `flag` (from `--log`, `MESH_LOG` or the config file), else RUST_LOG,
/// else `info`. A bad RUST_LOG is refused, naming it, rather than silently ignored.
pub fn filter(flag: Option<&str>) -> Result<EnvFilter, String> {
    if let Some(flag) = flag {
        return EnvFilter::try_new(flag).map_err(|err| format!("--log: not a log filter ({err})"));
    }
    match std::env::var(RUST_LOG) {
        Ok(value) => EnvFilter::try_new(&value)
            .map_err(|err| format!("{RUST_LOG}: not a log filter ({err})")),
        Err(_) => Ok(EnvFilter::new(DEFAULT_FILTER)),
    }
}

/// A subscriber writing `format` to `writer`, with colours only when `ansi`.
pub fn subscriber<W>(
    filter: EnvFilter,
    format: LogFormat,
    writer: W,
    ansi: bool,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(builder.json().finish()),
    }
}

/// Logs to stderr from now on, colouring text only on a terminal.
pub fn init(filter: EnvFilter, format: LogFormat) -> Result<(), String> {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing::subscriber::set_global_default(subscriber(filter, format, std::io::stderr, ansi))
        .map_err(|err| format!("cannot set up logging: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer that keeps what was logged.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Captured {
        type Writer = Captured;
        fn make_writer(&'w self) -> Self::Writer {
            self.clone()
        }
    }

    /// The lines logged by `events` through a subscriber of `format` and `filter`.
    fn logged(format: LogFormat, filter: &str, events: impl FnOnce()) -> Vec<String> {
        let captured = Captured::default();
        let subscriber = subscriber(EnvFilter::new(filter), format, captured.clone(), false);
        tracing::subscriber::with_default(subscriber, events);
        let bytes = captured.0.lock().expect("lock").clone();
        String::from_utf8(bytes)
            .expect("utf-8")
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn json_writes_one_object_a_line_with_the_fields() {
        let lines = logged(LogFormat::Json, "info", || {
            tracing::info!(task.id = "t1", node.id = "n1", "task assigned");
            tracing::warn!("second");
        });
        assert_eq!(lines.len(), 2, "{lines:?}");
        let first: serde_json::Value = serde_json::from_str(&lines[0]).expect("JSON");
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["fields"]["message"], "task assigned");
        assert_eq!(first["fields"]["task.id"], "t1");
        assert_eq!(first["fields"]["node.id"], "n1");
        assert!(first["timestamp"].is_string(), "{first}");
        let second: serde_json::Value = serde_json::from_str(&lines[1]).expect("JSON");
        assert_eq!(second["level"], "WARN");
    }

    #[test]
    fn text_writes_plain_lines_without_colour() {
        let lines = logged(LogFormat::Text, "info", || {
            tracing::info!(task.id = "t1", "task assigned");
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("INFO"), "{}", lines[0]);
        assert!(
            lines[0].contains("task assigned task.id=\"t1\""),
            "{}",
            lines[0]
        );
        assert!(!lines[0].contains('\x1b'), "colour codes: {:?}", lines[0]);
        assert!(serde_json::from_str::<serde_json::Value>(&lines[0]).is_err());
    }

    #[test]
    fn levels_are_set_per_module() {
        let lines = logged(LogFormat::Text, "info,mesh_agent::gossip=debug", || {
            tracing::debug!(target: "mesh_agent::gossip::node", "gossip detail");
            tracing::debug!(target: "mesh_agent::worker", "worker detail");
            tracing::info!(target: "mesh_agent::worker", "worker news");
        });
        let text = lines.join("\n");
        assert!(text.contains("gossip detail"), "{text}");
        assert!(!text.contains("worker detail"), "{text}");
        assert!(text.contains("worker news"), "{text}");
    }

    #[test]
    fn a_bad_filter_is_refused_in_one_line() {
        assert_eq!(
            parse_filter("info,mesh_agent=debug").as_deref(),
            Ok("info,mesh_agent=debug")
        );
        let err = parse_filter("mesh_agent=loud").unwrap_err();
        assert!(err.starts_with("not a log filter"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        let err = filter(Some("[[")).unwrap_err();
        assert!(err.starts_with("--log: "), "{err}");
    }
}
