use super::*;

const SCALE: &str = "# machine: test box\n\
# debug build\n\
scale: nodes=20 tasks=500 managers=1 all-running-s=1.13 tasks/s=444 leader-rss-mib=65.0 raft-entries/s=8.0 largest-msg-kib=5.4\n\
scale: nodes=100 tasks=10000 managers=1 all-running-s=43.50 tasks/s=230 leader-rss-mib=172.0 raft-entries/s=4.0 largest-msg-kib=1.3 join-s=3.25\n\
# release build\n\
scale: nodes=100 tasks=1000 managers=1 all-running-s=2.00 tasks/s=500 leader-rss-mib=80.0 raft-entries/s=9.0 largest-msg-kib=1.0\n\
scale: nodes=100 tasks=100000 managers=1 all-running-s=60.00 tasks/s=1667 leader-rss-mib=900.0 raft-entries/s=30.0 largest-msg-kib=2.0\n";

const GOSSIP: &str = "# machine: test box\n\
gossip: members=10 converge-s=0.44 join-seen-all-s=0.10 death-seen-all-s=14.54 bytes-per-member-s=556 join-bytes-per-member-s=5818 death-bytes-per-member-s=484 build=release\n\
gossip: members=1000 converge-s=10.60 join-seen-all-s=0.90 death-seen-all-s=n/a bytes-per-member-s=700 join-bytes-per-member-s=6000 death-bytes-per-member-s=n/a build=release\n";

/// A fresh directory under the system's temporary one, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mesh-plot-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(dir: &TempDir, scale: &str, gossip: &str) -> anyhow::Result<()> {
    let results = dir.0.join("results");
    std::fs::create_dir_all(&results)?;
    std::fs::write(results.join("scale.txt"), scale)?;
    std::fs::write(results.join("gossip.txt"), gossip)?;
    plot(PlotArgs {
        results,
        out: dir.0.join("out"),
    })
}

/// Whether `svg` has a `<text>` element saying exactly `what` (plotters writes it on a line of
/// its own).
fn text(svg: &str, what: &str) -> bool {
    svg.contains(&format!(">\n{what}\n</text>"))
}

fn circles(svg: &str) -> usize {
    svg.matches("<circle").count()
}

#[test]
fn results_files_become_svg_growth_curves() {
    let dir = TempDir::new("curves");
    run(&dir, SCALE, GOSSIP).expect("plots");
    let read = |name: &str| std::fs::read_to_string(dir.0.join("out").join(name)).expect(name);
    // (file, series names in the legend, points drawn: one circle each)
    let cases: [(&str, &[&str], usize); 5] = [
        (
            "scale-all-running.svg",
            &["20 nodes, debug", "100 nodes, debug", "100 nodes, release"],
            4,
        ),
        ("scale-tasks-per-s.svg", &["100 nodes, release"], 4),
        ("scale-leader-rss.svg", &["20 nodes, debug"], 4),
        (
            "gossip-seen-by-all.svg",
            &[
                "join seen by all, release",
                "death seen by all, release",
                "all see all (from bootstrap), release",
            ],
            // join 2, death 1 (n/a left out), converge 2
            5,
        ),
        (
            "gossip-bytes-per-member.svg",
            &[
                "idle, release",
                "during a join, release",
                "during a death, release",
            ],
            5,
        ),
    ];
    for (file, names, points) in cases {
        let svg = read(file);
        assert!(
            svg.starts_with("<svg"),
            "{file}: {}",
            &svg[..40.min(svg.len())]
        );
        assert!(
            text(&svg, "machine: test box"),
            "{file}: the machine in small print"
        );
        for name in names {
            assert!(text(&svg, name), "{file}: {name}");
        }
        assert_eq!(circles(&svg), points, "{file}");
    }
    // The scale plots have the same points: 4 runs; the axis says what it shows.
    assert!(text(&read("scale-tasks-per-s.svg"), "tasks/s"));
    assert!(text(&read("gossip-seen-by-all.svg"), "members"));
}

#[test]
fn a_bad_results_file_leaves_the_plots_as_they_were() {
    let dir = TempDir::new("bad");
    run(&dir, SCALE, GOSSIP).expect("plots");
    let path = dir.0.join("out").join("scale-all-running.svg");
    // Marked, so that a rewrite with the same drawing would show.
    let before = "an earlier plot";
    std::fs::write(&path, before).expect("mark");
    let bad = GOSSIP.replace("members=1000", "members=lots");
    let err = format!("{:#}", run(&dir, SCALE, &bad).expect_err("bad line"));
    assert!(
        err.contains("gossip.txt") && err.contains("line 3"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&path).expect("plot"), before);
    let no_points = "gossip: members=10 converge-s=n/a join-seen-all-s=n/a death-seen-all-s=n/a bytes-per-member-s=0\n";
    let err = format!("{:#}", run(&dir, SCALE, no_points).expect_err("nothing"));
    assert!(err.contains("no point to draw"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).expect("plot"), before);
}
