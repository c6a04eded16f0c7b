//! `mesh-docs OUT`: what the .deb ships beside the binaries, generated from meshd's and meshctl's
//! clap definitions so that it cannot fall behind them: man pages (`OUT/man/`: meshd(8), meshctl(1)
//! and one page per meshctl subcommand), bash, zsh and fish completions (`OUT/completions/`) and
//! the commented example `/etc/mesh/meshd.toml` (`OUT/meshd.toml`). Run by `cargo xtask dist`;
//! not installed.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> ExitCode {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: mesh-docs OUT_DIR");
        return ExitCode::FAILURE;
    };
    match generate(&out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mesh-docs: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn generate(out: &Path) -> anyhow::Result<()> {
    let man = out.join("man");
    let completions = out.join("completions");
    for dir in [&man, &completions] {
        // Pages of renamed or removed subcommands must not linger from an earlier run.
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("cannot empty {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let meshd = mesh_agent::config::Config::command();
    let meshctl = mesh_control::cli::Cli::command();

    // meshd is a daemon (section 8); meshctl a command with a page per subcommand (section 1).
    clap_mangen::Man::new(meshd.clone())
        .section("8")
        .manual("mesh")
        .generate_to(&man)
        .context("cannot write meshd's man page")?;
    clap_mangen::generate_to(meshctl.clone(), &man).context("cannot write meshctl's man pages")?;

    for (mut command, name) in [(meshd, "meshd"), (meshctl, "meshctl")] {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            clap_complete::generate_to(shell, &mut command, name, &completions)
                .with_context(|| format!("cannot write {name}'s {shell} completion"))?;
        }
    }

    let example = out.join("meshd.toml");
    std::fs::write(&example, mesh_agent::config::example())
        .with_context(|| format!("cannot write {}", example.display()))?;
    Ok(())
}
