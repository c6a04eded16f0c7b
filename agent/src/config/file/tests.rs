use super::*;
use std::path::Path;

/// A value for every key, different from the flag's default. A new flag fails
/// `every_flag_is_a_key` until it has one here.
const SAMPLES: &[(&str, &str)] = &[
    ("state-dir", r#""/srv/mesh""#),
    ("socket", r#""/run/other/meshd.sock""#),
    ("group", r#""operators""#),
    ("docker-host", r#""unix:///run/other/docker.sock""#),
    ("secrets-dir", r#""/run/other/secrets""#),
    ("hostname", r#""node7""#),
    ("listen-addr", r#""10.0.0.7:2377""#),
    ("advertise-addr", r#""192.0.2.7:2377""#),
    ("gossip-port", "7000"),
    ("gwbridge-subnet", r#""172.31.0.0/16""#),
    ("lb-backend", r#""ebpf""#),
    ("log", r#""info,mesh_agent::gossip=debug""#),
    ("log-format", r#""json""#),
    ("metrics-addr", r#""10.0.0.7:9323""#),
];

fn args(list: &[&str]) -> Vec<OsString> {
    std::iter::once("meshd")
        .chain(list.iter().copied())
        .map(OsString::from)
        .collect()
}

/// Loads with `file` holding `toml`, given as `--config` followed by `extra`.
fn load_with(toml: &str, extra: &[&str]) -> Result<Config, LoadError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("meshd.toml");
    std::fs::write(&file, toml).expect("write");
    let mut list = vec!["--config", file.to_str().expect("utf-8")];
    list.extend(extra);
    load_from(args(&list), Path::new("/nonexistent/meshd.toml"))
}

/// The one-line message of a refused file, checked to name `key`.
fn refused(toml: &str, key: &str) -> String {
    let err = load_with(toml, &[]).expect_err("refused");
    let line = err.to_string();
    assert!(
        matches!(&err, LoadError::Key { key: k, .. } if k == key),
        "{line}"
    );
    assert!(line.contains("meshd.toml: key `"), "{line}");
    assert!(!line.contains('\n'), "more than one line: {line:?}");
    line
}

#[test]
fn every_flag_is_a_key() {
    let default = format!(
        "{:?}",
        load_from(args(&[]), Path::new("/nonexistent")).unwrap()
    );
    for key in keys() {
        let (_, value) = SAMPLES
            .iter()
            .find(|(k, _)| *k == key)
            .unwrap_or_else(|| panic!("--{key} has no sample value in SAMPLES"));
        let config = load_with(&format!("{key} = {value}"), &[])
            .unwrap_or_else(|err| panic!("{key} = {value}: {err}"));
        assert_ne!(
            format!("{config:?}"),
            default,
            "{key} = {value} changed nothing"
        );
    }
    assert_eq!(keys().len(), SAMPLES.len(), "a sample names no flag");
}

#[test]
fn the_file_sets_what_the_command_line_does_not() {
    let config = load_with(
        "gossip-port = 7000\nlisten-addr = \"10.0.0.7:2377\"\nlb-backend = \"ebpf\"\n",
        &["--gossip-port", "8000"],
    )
    .unwrap();
    assert_eq!(config.gossip_port, 8000, "the command line wins");
    assert_eq!(
        config.listen_addr, "10.0.0.7:2377",
        "the file wins over the default"
    );
    assert_eq!(config.lb_backend, crate::lb::LbBackend::Ebpf);
    assert_eq!(
        config.state_dir,
        Path::new("/var/lib/mesh"),
        "the default stays"
    );
    // `--flag=value` counts as given on the command line too.
    let config = load_with("gossip-port = 7000\n", &["--gossip-port=0"]).unwrap();
    assert_eq!(config.gossip_port, 0);
}

#[test]
fn an_unknown_key_is_named() {
    let line = refused("gossip-port = 7000\nstate_dir = \"/srv\"\n", "state_dir");
    assert!(
        line.contains("no such setting (meshd takes state-dir, socket,"),
        "{line}"
    );
    refused("config = \"/etc/other.toml\"\n", "config");
    refused("help = true\n", "help");
    refused("[gossip]\nport = 1\n", "gossip");
}

#[test]
fn a_value_of_the_wrong_type_is_named() {
    let line = refused("gossip-port = \"seventy\"\n", "gossip-port");
    assert!(
        line.contains("invalid value 'seventy' for '--gossip-port"),
        "{line}"
    );
    let line = refused("gossip-port = 70000\n", "gossip-port");
    assert!(line.contains("70000"), "{line}");
    let line = refused("state-dir = [\"/a\", \"/b\"]\n", "state-dir");
    assert!(
        line.ends_with("expected a string or a number, found an array"),
        "{line}"
    );
    let line = refused("hostname = { name = \"n\" }\n", "hostname");
    assert!(line.ends_with("found a table"), "{line}");
    let line = refused("lb-backend = \"iptables\"\n", "lb-backend");
    assert!(line.contains("invalid value 'iptables'"), "{line}");
    let line = refused("gwbridge-subnet = \"10.0.0.300/16\"\n", "gwbridge-subnet");
    assert!(line.contains("invalid value"), "{line}");
    let line = refused("log = \"mesh_agent=loud\"\n", "log");
    assert!(line.contains("not a log filter"), "{line}");
    let line = refused("log-format = \"xml\"\n", "log-format");
    assert!(line.contains("invalid value 'xml'"), "{line}");
}

#[test]
fn a_bad_value_in_the_file_is_refused_even_when_the_command_line_overrides_it() {
    let err = load_with("gossip-port = \"x\"\n", &["--gossip-port", "1"]).unwrap_err();
    assert!(matches!(err, LoadError::Key { .. }), "{err}");
}

#[test]
fn a_malformed_file_is_named_with_its_line() {
    let err = load_with("gossip-port = 7000\nsocket = \n", &[]).unwrap_err();
    let line = err.to_string();
    assert!(matches!(err, LoadError::File { .. }), "{line}");
    assert!(line.contains("meshd.toml: line 2: "), "{line}");
    assert!(!line.contains('\n'), "{line:?}");
    let err = load_with("gossip-port = 1\ngossip-port = 2\n", &[]).unwrap_err();
    assert!(err.to_string().contains("line 2: duplicate key"), "{err}");
}

#[test]
fn a_missing_file_is_named_only_when_asked_for() {
    let err = load_from(
        args(&["--config", "/nonexistent/mesh.toml"]),
        Path::new("/nonexistent/meshd.toml"),
    )
    .unwrap_err();
    let line = err.to_string();
    assert!(
        line.starts_with("/nonexistent/mesh.toml: cannot read it ("),
        "{line}"
    );
    // No --config and no default file: the defaults.
    let config = load_from(args(&[]), Path::new("/nonexistent/meshd.toml")).unwrap();
    assert_eq!(config.gossip_port, 7946);
}

#[test]
fn the_default_file_is_read_when_it_exists() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("meshd.toml");
    std::fs::write(&file, "hostname = \"from-default\"\n").unwrap();
    let config = load_from(args(&[]), &file).unwrap();
    assert_eq!(config.hostname.as_deref(), Some("from-default"));
    std::fs::write(&file, "hostnam = \"typo\"\n").unwrap();
    let err = load_from(args(&[]), &file).unwrap_err();
    assert!(err.to_string().contains("key `hostnam`"), "{err}");
}

#[test]
fn command_line_errors_stay_clap_s() {
    let err = load_from(args(&["--no-such-flag"]), Path::new("/nonexistent")).unwrap_err();
    assert!(matches!(err, LoadError::Cli(_)), "{err}");
    let err = load_from(args(&["--help"]), Path::new("/nonexistent")).unwrap_err();
    assert!(
        matches!(&err, LoadError::Cli(e) if e.kind() == clap::error::ErrorKind::DisplayHelp),
        "{err}"
    );
}
