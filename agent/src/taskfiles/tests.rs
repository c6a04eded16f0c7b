//! Laying out a task's files in a plain directory (the tmpfs is the privileged tests' part).

use super::*;
use mesh_proto::assignments_message::Type;
use mesh_proto::{
    Config, ConfigReference, ConfigSpec, ContainerSpec, FileTarget, Secret, SecretReference,
    SecretSpec, TaskSpec,
};
use std::os::unix::fs::MetadataExt;

fn ids() -> (u32, u32) {
    (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    )
}

fn task(id: &str) -> Task {
    let (uid, gid) = ids();
    Task {
        id: id.into(),
        spec: Some(TaskSpec {
            container: Some(ContainerSpec {
                secrets: vec![SecretReference {
                    secret_id: "s1".into(),
                    secret_name: "db".into(),
                    file: Some(FileTarget {
                        name: "app/db".into(),
                        uid: uid.to_string(),
                        gid: gid.to_string(),
                        mode: 0o400,
                    }),
                }],
                configs: vec![ConfigReference {
                    config_id: "c1".into(),
                    config_name: "app.conf".into(),
                    file: Some(FileTarget {
                        name: "/etc/app.conf".into(),
                        uid: uid.to_string(),
                        gid: gid.to_string(),
                        mode: 0o444,
                    }),
                }],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn assignments() -> AssignmentsMessage {
    AssignmentsMessage {
        r#type: Type::Complete as i32,
        update_secrets: vec![Secret {
            id: "s1".into(),
            spec: Some(SecretSpec {
                data: b"hunter2".to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        update_configs: vec![Config {
            id: "c1".into(),
            spec: Some(ConfigSpec {
                data: b"port=80".to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn files_are_written_with_their_owner_and_mode_and_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = TaskFiles::new(PathBuf::from("/seen/by/dockerd"), dir.path().to_path_buf());
    files.assign(&assignments());
    let binds = files.write(&task("task1")).expect("written");
    assert_eq!(
        binds,
        [
            FileBind {
                source: PathBuf::from("/seen/by/dockerd/task1/secrets"),
                target: "/run/secrets".into(),
            },
            FileBind {
                source: PathBuf::from("/seen/by/dockerd/task1/files/1"),
                target: "/etc/app.conf".into(),
            },
        ]
    );
    let secret = dir.path().join("task1/secrets/app/db");
    assert_eq!(fs::read(&secret).expect("secret"), b"hunter2");
    let meta = fs::metadata(&secret).expect("metadata");
    assert_eq!((meta.uid(), meta.gid()), ids());
    assert_eq!(meta.mode() & 0o7777, 0o400);
    let task_dir = fs::metadata(dir.path().join("task1")).expect("task dir");
    assert_eq!(task_dir.mode() & 0o777, 0o700);
    assert_eq!(
        fs::read(dir.path().join("task1/files/1")).expect("config"),
        b"port=80"
    );

    // Written again (a task prepared anew), the layout is the same.
    files.write(&task("task1")).expect("rewritten");
    files.write(&task("task2")).expect("written");
    files.retain(&HashSet::from(["task2".to_string()]));
    assert!(!dir.path().join("task1").exists());
    files.remove("task2");
    assert!(!dir.path().join("task2").exists());
}

#[test]
fn nothing_is_left_when_a_file_cannot_be_made() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = TaskFiles::new(dir.path().to_path_buf(), dir.path().to_path_buf());
    let err = files.write(&task("task1")).expect_err("nothing held");
    assert_eq!(
        err.to_string(),
        "secret db (s1) is not available on this node"
    );
    files.assign(&assignments());
    let err = files.write(&task("../escape")).expect_err("bad id");
    assert!(err.to_string().contains("not a valid file name"), "{err}");
    let mut bad = task("task1");
    if let Some(c) = bad.spec.as_mut().and_then(|s| s.container.as_mut()) {
        c.configs[0].file.as_mut().expect("file").name = "/run/secrets/app/db".into();
    }
    let err = files.write(&bad).expect_err("conflicting targets");
    assert!(err.to_string().contains("conflicting target"), "{err}");
    assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 0);
    // A task without secrets or configs gets nothing.
    assert!(files.write(&Task::default()).expect("no files").is_empty());
}
