//! Published ports: what a service's endpoint spec may ask for, and which port each one gets.
//! Ingress ports are cluster-wide, so no other service can publish the same one, in either mode;
//! a port the spec leaves at 0 is picked from 30000–32767, and keeps its number across updates.

use mesh_proto::{EndpointMode, EndpointSpec, PortConfig, PortProtocol, PublishMode, Service};
use std::borrow::Borrow;

use super::validate::Invalid;

/// Where ports without a published number are taken from, as Swarm does.
pub const DYNAMIC_PORTS: std::ops::RangeInclusive<u32> = 30000..=32767;

fn protocol_name(port: &PortConfig) -> &'static str {
    match port.protocol() {
        PortProtocol::Tcp => "tcp",
        PortProtocol::Udp => "udp",
    }
}

/// Checks what can be judged from the spec alone.
pub fn validate(spec: &EndpointSpec) -> Result<(), Invalid> {
    EndpointMode::try_from(spec.mode)
        .map_err(|_| format!("invalid endpoint mode {}", spec.mode))?;
    for (i, port) in spec.ports.iter().enumerate() {
        PortProtocol::try_from(port.protocol).map_err(|_| {
            format!(
                "invalid protocol {} for port {}",
                port.protocol, port.target_port
            )
        })?;
        PublishMode::try_from(port.publish_mode).map_err(|_| {
            format!(
                "invalid publish mode {} for port {}",
                port.publish_mode, port.target_port
            )
        })?;
        if !(1..=65535).contains(&port.target_port) {
            return Err(format!(
                "invalid target port {}: expected 1-65535",
                port.target_port
            ));
        }
        if port.published_port > 65535 {
            return Err(format!(
                "invalid published port {}: expected 1-65535",
                port.published_port
            ));
        }
        let twice = spec.ports[..i].iter().any(|other| {
            other.published_port != 0
                && other.published_port == port.published_port
                && other.protocol == port.protocol
        });
        if twice {
            return Err(format!(
                "port {}/{} is published more than once",
                port.published_port,
                protocol_name(port)
            ));
        }
        if spec.mode() == EndpointMode::Dnsrr && port.publish_mode() == PublishMode::Ingress {
            return Err(format!(
                "port {} is published in ingress mode, which needs --endpoint-mode vip: publish it with mode=host or use vip",
                port.target_port
            ));
        }
    }
    Ok(())
}

/// The spec's ports with published numbers assigned, for service `id`: a port another of
/// `services` publishes is refused when either of them is in ingress mode; a port left at 0 keeps the number `previous` gave
/// it, or gets the lowest free one of [`DYNAMIC_PORTS`].
pub fn assign(
    id: &str,
    spec: &EndpointSpec,
    previous: &[PortConfig],
    services: &[impl Borrow<Service>],
) -> Result<Vec<PortConfig>, Invalid> {
    let others = || {
        let services = services.iter().map(Borrow::borrow);
        services
            .filter(move |s: &&Service| s.id != id)
            .flat_map(|s| {
                let name = s
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.annotations.as_ref())
                    .map_or(s.id.as_str(), |a| a.name.as_str());
                s.endpoint
                    .iter()
                    .flat_map(|e| e.ports.iter())
                    .map(move |p| (name, p))
            })
    };
    let mut assigned: Vec<PortConfig> = Vec::new();
    for port in &spec.ports {
        let mut port = port.clone();
        if port.published_port == 0 {
            let kept = previous.iter().find(|p| {
                p.target_port == port.target_port
                    && p.protocol == port.protocol
                    && p.publish_mode == port.publish_mode
            });
            let taken = |candidate: u32| {
                others().any(|(_, p)| p.published_port == candidate && p.protocol == port.protocol)
                    || spec
                        .ports
                        .iter()
                        .chain(&assigned)
                        .any(|p| p.published_port == candidate && p.protocol == port.protocol)
            };
            port.published_port = match kept.map(|p| p.published_port) {
                Some(number) if !taken(number) => number,
                _ => DYNAMIC_PORTS
                    .clone()
                    .find(|candidate| !taken(*candidate))
                    .ok_or("no free port left in 30000-32767 to publish")?,
            };
        }
        // An ingress port holds its number on every node, so it clashes with another service's
        // port of that number in either mode; host-mode ports only meet on a node, where the
        // scheduler keeps them apart.
        let ingress = port.publish_mode() == PublishMode::Ingress;
        if let Some((owner, _)) = others().find(|(_, p)| {
            (ingress || p.publish_mode() == PublishMode::Ingress)
                && p.published_port == port.published_port
                && p.protocol == port.protocol
        }) {
            return Err(format!(
                "port {}/{} is already published by service {owner}",
                port.published_port,
                protocol_name(&port)
            ));
        }
        assigned.push(port);
    }
    Ok(assigned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::{Annotations, Endpoint, ServiceSpec};

    fn port(published: u32, target: u32) -> PortConfig {
        PortConfig {
            published_port: published,
            target_port: target,
            ..Default::default()
        }
    }

    fn spec(ports: Vec<PortConfig>) -> EndpointSpec {
        EndpointSpec {
            mode: EndpointMode::Vip as i32,
            ports,
        }
    }

    fn service(id: &str, name: &str, ports: Vec<PortConfig>) -> Service {
        Service {
            id: id.into(),
            spec: Some(ServiceSpec {
                annotations: Some(Annotations {
                    name: name.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            endpoint: Some(Endpoint {
                ports,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn two_services_cannot_publish_one_ingress_port() {
        let others = [service("a", "web", vec![port(8080, 80)])];
        let err = assign("b", &spec(vec![port(8080, 8000)]), &[], &others).unwrap_err();
        assert_eq!(err, "port 8080/tcp is already published by service web");
        // The same number over UDP is another port.
        let udp = PortConfig {
            protocol: PortProtocol::Udp as i32,
            ..port(8080, 53)
        };
        assert!(assign("b", &spec(vec![udp]), &[], &others).is_ok());
        // A service updating itself keeps its own port.
        assert!(assign("a", &spec(vec![port(8080, 80)]), &[], &others).is_ok());
    }

    #[test]
    fn an_ingress_port_and_a_host_port_of_one_number_clash_two_host_ports_do_not() {
        let host = |published, target| PortConfig {
            publish_mode: PublishMode::Host as i32,
            ..port(published, target)
        };
        let ingress_web = [service("a", "web", vec![port(8080, 80)])];
        let err = assign("b", &spec(vec![host(8080, 80)]), &[], &ingress_web).unwrap_err();
        assert_eq!(err, "port 8080/tcp is already published by service web");

        let host_web = [service("a", "web", vec![host(8080, 80)])];
        let err = assign("b", &spec(vec![port(8080, 80)]), &[], &host_web).unwrap_err();
        assert_eq!(err, "port 8080/tcp is already published by service web");
        // Two host-mode ports of one number: the scheduler keeps them on different nodes.
        assert!(assign("b", &spec(vec![host(8080, 80)]), &[], &host_web).is_ok());
    }

    #[test]
    fn unpublished_ports_get_the_lowest_free_dynamic_port_and_keep_it() {
        let others = [service("a", "web", vec![port(30000, 80)])];
        let first = assign("b", &spec(vec![port(0, 80), port(0, 81)]), &[], &others).unwrap();
        assert_eq!(
            first.iter().map(|p| p.published_port).collect::<Vec<_>>(),
            [30001, 30002]
        );
        let again = assign("b", &spec(vec![port(0, 81)]), &first, &others).unwrap();
        assert_eq!(again[0].published_port, 30002);
    }

    #[test]
    fn bad_specs_are_refused_with_one_line() {
        let dnsrr = EndpointSpec {
            mode: EndpointMode::Dnsrr as i32,
            ports: vec![port(8080, 80)],
        };
        let host_ok = EndpointSpec {
            mode: EndpointMode::Dnsrr as i32,
            ports: vec![PortConfig {
                publish_mode: PublishMode::Host as i32,
                ..port(8080, 80)
            }],
        };
        assert!(validate(&host_ok).is_ok());
        for (bad, reason) in [
            (dnsrr, "ingress mode"),
            (spec(vec![port(8080, 0)]), "invalid target port"),
            (spec(vec![port(70000, 80)]), "invalid published port"),
            (spec(vec![port(8080, 80), port(8080, 81)]), "more than once"),
            (
                EndpointSpec {
                    mode: 7,
                    ports: vec![],
                },
                "invalid endpoint mode",
            ),
        ] {
            let err = validate(&bad).unwrap_err();
            assert!(err.contains(reason), "{err}");
            assert!(!err.contains('\n'));
        }
    }
}
