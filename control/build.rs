//! Records the git commit the daemon was built from, for `meshctl version`.

fn main() {
    record_commit();
}

fn record_commit() {
    // Where git keeps them: a worktree's HEAD is not under ../.git, and a path that does not
    // exist would make cargo rerun this script (and rebuild the crate) on every build.
    for name in ["HEAD", "refs/heads", "packed-refs"] {
        if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", name])
            && std::path::Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MESH_GIT_COMMIT={commit}");
}

/// What `git ARGS` prints, trimmed; None when git is missing, fails or prints nothing.
fn git(args: &[&str]) -> Option<String> {
    std::process::Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}
