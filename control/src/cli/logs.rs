//! `meshctl service logs`: the arguments.

use clap::Args;

/// How much of the existing output `--tail` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    All,
    Lines(u64),
}

/// `--tail all` or a number of lines.
fn parse_tail(value: &str) -> Result<Tail, String> {
    if value == "all" {
        return Ok(Tail::All);
    }
    value
        .parse()
        .map(Tail::Lines)
        .map_err(|_| format!("invalid tail {value:?}: expected \"all\" or a non-negative integer"))
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short, long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs ("all" or N)
    #[arg(long, default_value = "all", value_parser = parse_tail, allow_negative_numbers = true)]
    pub tail: Tail,
    /// Show timestamps
    #[arg(short, long)]
    pub timestamps: bool,
    /// Do not truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// A service (id, name or prefix) or a task id
    pub reference: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails() {
        assert_eq!(parse_tail("all"), Ok(Tail::All));
        assert_eq!(parse_tail("10"), Ok(Tail::Lines(10)));
        assert_eq!(
            parse_tail("-1"),
            Err("invalid tail \"-1\": expected \"all\" or a non-negative integer".to_string())
        );
    }
}
