//! `meshctl events`: the arguments. Times are read as Docker reads them: RFC 3339 (with or
//! without a zone, `Z` assumed), a date, Unix seconds (with a fraction), or a duration before
//! now (`10m`, `1h30m`).

use clap::Args;

use crate::events::TYPES;

/// One `--filter`: only `type=` is known.
fn parse_filter(value: &str) -> Result<String, String> {
    let Some((key, kind)) = value.split_once('=') else {
        return Err(format!(
            "invalid filter {value:?}: expected type=service|node|task|network"
        ));
    };
    if key != "type" {
        return Err(format!(
            "unknown filter {key:?}: meshctl events filters by type=service|node|task|network"
        ));
    }
    if !TYPES.contains(&kind) {
        return Err(format!(
            "unknown event type {kind:?}: expected one of {}",
            TYPES.join(", ")
        ));
    }
    Ok(kind.to_owned())
}

fn now_nanos() -> i64 {
    crate::store::now_nanos()
}

/// A `--since`/`--until` value as Unix nanoseconds, durations counted back from `now`.
pub fn parse_time_at(value: &str, now: i64) -> Result<i64, String> {
    let invalid = || {
        format!(
            "invalid time {value:?}: expected RFC 3339 (2026-12-03T09:30:00Z), a date, Unix seconds or a duration such as 10m"
        )
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(invalid());
    }
    if let Some((seconds, fraction)) = unix_seconds(value) {
        return seconds
            .checked_mul(1_000_000_000)
            .and_then(|n| n.checked_add(fraction))
            .ok_or_else(invalid);
    }
    if let Ok(duration) = humantime::parse_duration(value) {
        let back = i64::try_from(duration.as_nanos()).map_err(|_| invalid())?;
        return Ok(now.saturating_sub(back));
    }
    let full = if value.len() == 10 {
        format!("{value}T00:00:00Z")
    } else {
        value.to_owned()
    };
    let time = humantime::parse_rfc3339_weak(&full).map_err(|_| invalid())?;
    let since_epoch = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| invalid())?;
    i64::try_from(since_epoch.as_nanos()).map_err(|_| invalid())
}

/// `1700000000` or `1700000000.25`: seconds and nanoseconds.
fn unix_seconds(value: &str) -> Option<(i64, i64)> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !(fraction.is_empty() || digits(fraction) && fraction.len() <= 9) {
        return None;
    }
    let nanos = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}").parse().ok()?
    };
    Some((whole.parse().ok()?, nanos))
}

fn parse_time(value: &str) -> Result<i64, String> {
    parse_time_at(value, now_nanos())
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Filter output by type (type=service|node|task|network); repeat for several types
    #[arg(short, long = "filter", value_parser = parse_filter)]
    pub filter: Vec<String>,
    /// Show events since this time (RFC 3339, a date, Unix seconds, or a duration like 10m)
    #[arg(long, value_parser = parse_time)]
    pub since: Option<i64>,
    /// Stream events until this time (same forms as --since)
    #[arg(long, value_parser = parse_time)]
    pub until: Option<i64>,
    /// Format the output: `json` for one JSON object per line
    #[arg(long, value_parser = super::parse_format)]
    pub format: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_290_200_000_000_000; // 2026-12-03T09:30:00Z

    #[test]
    fn times() {
        for (input, want) in [
            ("2026-12-03T09:30:00Z", Ok(NOW)),
            ("2026-12-03T09:30:00.5Z", Ok(NOW + 500_000_000)),
            ("2026-12-03T09:30:00", Ok(NOW)),
            ("2026-12-03", Ok(NOW - (9 * 3600 + 30 * 60) * 1_000_000_000)),
            ("1796290200", Ok(NOW)),
            ("1796290200.000000001", Ok(NOW + 1)),
            ("10m", Ok(NOW - 600 * 1_000_000_000)),
            ("1h30m", Ok(NOW - 5400 * 1_000_000_000)),
        ] {
            assert_eq!(parse_time_at(input, NOW), want, "{input}");
        }
        for bad in [
            "",
            "yesterday",
            "2026-13-03",
            "12.3.4",
            "1796290200.0000000001",
            "-5",
        ] {
            assert!(parse_time_at(bad, NOW).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters() {
        assert_eq!(parse_filter("type=service"), Ok("service".into()));
        assert_eq!(
            parse_filter("type=container"),
            Err(
                "unknown event type \"container\": expected one of service, node, task, network, secret, config"
                    .into()
            )
        );
        assert_eq!(
            parse_filter("event=create"),
            Err("unknown filter \"event\": meshctl events filters by type=service|node|task|network".into())
        );
        assert!(parse_filter("service").is_err());
    }
}
