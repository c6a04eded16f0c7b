//! Compose files from Docker's documentation and samples (images replaced by the test image),
//! read and converted as a new user would deploy them.

use super::tests::plan;

#[test]
fn compose_files_from_docker_s_documentation_convert() {
    let fixtures: &[(&str, &str, &[&str])] = &[
        (
            "voting-app-3.9.yml",
            include_str!("../testdata/voting-app-3.9.yml"),
            &[
                "shop_db",
                "shop_redis",
                "shop_result",
                "shop_vote",
                "shop_worker",
            ],
        ),
        (
            "voting-app-3.yml",
            include_str!("../testdata/voting-app-3.yml"),
            &[
                "shop_db",
                "shop_redis",
                "shop_result",
                "shop_visualizer",
                "shop_vote",
                "shop_worker",
            ],
        ),
        (
            "docs-deploy-3.9.yml",
            include_str!("../testdata/docs-deploy-3.9.yml"),
            &["shop_mysql", "shop_redis", "shop_wordpress"],
        ),
        (
            "stackdemo-3.yml",
            include_str!("../testdata/stackdemo-3.yml"),
            &["shop_redis", "shop_web"],
        ),
    ];
    for (name, text, services) in fixtures {
        let plan = plan(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got: Vec<&str> = plan.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(&got, services, "{name}");
        for service in &plan.services {
            let image = service
                .spec
                .task
                .as_ref()
                .and_then(|t| t.container.as_ref())
                .map(|c| c.image.as_str());
            assert_eq!(image, Some("mesh/busybox:latest"), "{name}");
        }
    }
    let voting = plan(include_str!("../testdata/voting-app-3.yml")).expect("converts");
    let worker = &voting.services[5].spec;
    assert_eq!(
        worker
            .annotations
            .as_ref()
            .and_then(|a| a.labels.get("APP"))
            .map(String::as_str),
        Some("VOTING")
    );
    let restart = worker
        .task
        .as_ref()
        .and_then(|t| t.restart.as_ref())
        .expect("restart");
    assert_eq!(
        (restart.max_attempts, restart.window_ns),
        (3, 120_000_000_000)
    );
    let nets: Vec<&str> = voting.networks.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(nets, ["shop_backend", "shop_default", "shop_frontend"]);
}
