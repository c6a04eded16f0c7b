//! `mesh-lab-delay --queue N --delay-ms MS --ready FILE`: holds every packet of NFQUEUE N (in the
//! namespace it runs in) for MS milliseconds, then accepts it. Started by `cargo xtask lab fault
//! NODE delay …`; see `mesh_tests::lab::delay`.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mesh-lab-delay: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let usage = "usage: mesh-lab-delay --queue N --delay-ms MS --ready FILE";
    let mut args = std::env::args().skip(1);
    let (mut queue, mut delay, mut ready) = (None, None, None);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value; {usage}"))?;
        match flag.as_str() {
            "--queue" => queue = Some(value.parse::<u16>()?),
            "--delay-ms" => delay = Some(Duration::from_millis(value.parse::<u64>()?)),
            "--ready" => ready = Some(PathBuf::from(value)),
            _ => anyhow::bail!("unknown flag {flag}; {usage}"),
        }
    }
    match (queue, delay, ready) {
        (Some(queue), Some(delay), Some(ready)) => {
            mesh_tests::lab::delay::serve(queue, delay, &ready)
        }
        _ => anyhow::bail!("{usage}"),
    }
}
