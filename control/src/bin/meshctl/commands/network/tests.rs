//! `network` rows and the inspect shape.

use super::*;
use mesh_proto::{Annotations, IpamConfig, Meta, NetworkAllocation};

fn network(name: &str, allocated: bool) -> Network {
    let mut labels = std::collections::HashMap::new();
    labels.insert("team".to_string(), "net".to_string());
    let mut driver_opts = std::collections::HashMap::new();
    driver_opts.insert("mtu".to_string(), "1350".to_string());
    Network {
        id: format!("{name}0123456789abcdefghijkl"),
        meta: Some(Meta {
            created_at: 1_700_000_000_000_000_000,
            ..Default::default()
        }),
        spec: Some(NetworkSpec {
            annotations: Some(Annotations {
                name: name.into(),
                labels,
            }),
            driver: "overlay".into(),
            ipam: vec![IpamConfig {
                subnet: "10.9.0.0/24".into(),
                gateway: String::new(),
                ip_range: "10.9.0.128/25".into(),
            }],
            attachable: true,
            driver_opts,
            ..Default::default()
        }),
        allocation: allocated.then(|| NetworkAllocation {
            vni: 4097,
            ipam: vec![IpamConfig {
                subnet: "10.9.0.0/24".into(),
                gateway: "10.9.0.1".into(),
                ip_range: "10.9.0.128/25".into(),
            }],
        }),
    }
}

#[test]
fn inspect_has_the_engine_api_shape() {
    let value = serde_json::to_value(network_json(&network("front", true))).expect("json");
    let want = json!({
        "Name": "front",
        "Id": "front0123456789abcdefghijkl",
        "Created": "2023-11-14T22:13:20.000000000Z",
        "Scope": "swarm",
        "Driver": "overlay",
        "EnableIPv6": false,
        "IPAM": {
            "Driver": "default",
            "Options": null,
            "Config": [{"Subnet": "10.9.0.0/24", "Gateway": "10.9.0.1", "IPRange": "10.9.0.128/25"}]
        },
        "Internal": false,
        "Attachable": true,
        "Ingress": false,
        "Containers": {},
        "Options": {"com.docker.network.driver.overlay.vxlanid_list": "4097", "mtu": "1350"},
        "Labels": {"team": "net"}
    });
    assert_eq!(value, want);

    // Before allocation: the user's request, no VXLAN id, no empty gateway key.
    let pending = serde_json::to_value(network_json(&network("back", false))).expect("json");
    assert_eq!(
        pending["IPAM"]["Config"],
        json!([{"Subnet": "10.9.0.0/24", "IPRange": "10.9.0.128/25"}])
    );
    assert_eq!(pending["Options"], json!({"mtu": "1350"}));
}

#[test]
fn ls_rows() {
    let rows = network_rows(&[network("web", true), network("api", false)]);
    let mut out = Vec::new();
    render(&mut out, &rows, false, false).expect("render");
    let text = String::from_utf8(out).expect("utf8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["api012345678", "api", "overlay", "swarm"]
    );
    let mut out = Vec::new();
    render(&mut out, &rows, false, true).expect("render");
    let first: Value =
        serde_json::from_slice(out.split(|b| *b == b'\n').next().unwrap_or_default())
            .expect("json line");
    assert_eq!(
        first,
        json!({"ID": "api012345678", "Name": "api", "Driver": "overlay", "Scope": "swarm"})
    );
    let mut out = Vec::new();
    render(&mut out, &rows, true, false).expect("render");
    assert_eq!(
        String::from_utf8(out).expect("utf8"),
        "api012345678\nweb012345678\n"
    );
}
