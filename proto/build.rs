//! Compiles `mesh/v1/*.proto` with protox (pure Rust, no protoc) and generates the prost messages and
//! tonic services.

fn main() -> anyhow::Result<()> {
    let files = [
        "mesh/v1/types.proto",
        "mesh/v1/specs.proto",
        "mesh/v1/objects.proto",
        "mesh/v1/control.proto",
        "mesh/v1/dispatcher.proto",
        "mesh/v1/raft.proto",
        "mesh/v1/ca.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["."])?;
    tonic_prost_build::configure()
        // openraft's log and transport carry the store's messages through serde.
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        // Messages carrying secrets: src/redact.rs writes their Debug, secrets left out.
        .skip_debug([
            ".mesh.v1.JoinTokens",
            ".mesh.v1.RootCA",
            ".mesh.v1.GossipKey",
            ".mesh.v1.IssueNodeCertificateRequest",
            ".mesh.v1.JoinRequest",
            ".mesh.v1.SessionMessage",
            ".mesh.v1.HeartbeatRequest",
            ".mesh.v1.AssignmentsRequest",
            ".mesh.v1.UpdateTaskStatusRequest",
            ".mesh.v1.LogSubscriptionsRequest",
            ".mesh.v1.PublishLogsMessage",
            ".mesh.v1.SecretSpec",
            ".mesh.v1.ConfigSpec",
        ])
        .compile_fds(descriptors)?;
    Ok(())
}
