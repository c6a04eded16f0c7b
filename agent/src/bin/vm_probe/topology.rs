//! A sandbox and three backends, each its own network namespace with a veth on one bridge in
//! the VM's namespace (10.0.1.0/24); TCP and UDP servers in the backends that answer with their
//! name; clients in the sandbox.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use mesh_agent::netlink::{Netlink, Netns, RtNetlink, VethSpec, run_in_netns};

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
pub const VIP2: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 3);
pub const SANDBOX_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 10);
/// The backends' names and addresses.
pub const BACKENDS: [(&str, Ipv4Addr); 3] = [
    ("b5", Ipv4Addr::new(10, 0, 1, 5)),
    ("b6", Ipv4Addr::new(10, 0, 1, 6)),
    ("b7", Ipv4Addr::new(10, 0, 1, 7)),
];
/// Ports every backend answers on.
pub const TCP_PORTS: [u16; 2] = [8080, 9090];
pub const UDP_PORT: u16 = 5353;
const BRIDGE: &str = "br0";
const TIMEOUT: Duration = Duration::from_secs(3);

pub struct Topology {
    pub sandbox: Netns,
}

/// Brings up the loopback device of the VM's own namespace.
pub async fn loopback_up() -> Result<(), String> {
    let host = Netns::current();
    RtNetlink::new()
        .set_up(&host, "lo")
        .await
        .map_err(|e| e.to_string())
}

/// Creates the bridge, the namespaces and their links.
pub async fn build() -> Result<Topology, String> {
    let netlink = RtNetlink::new();
    let host = Netns::current();
    let e = |e: mesh_agent::netlink::NetlinkError| e.to_string();
    netlink
        .create_bridge(&host, BRIDGE, 1500)
        .await
        .map_err(e)?;
    netlink.set_up(&host, BRIDGE).await.map_err(e)?;
    let members = [("sandbox", SANDBOX_ADDR)].into_iter().chain(BACKENDS);
    let mut sandbox = None;
    for (name, addr) in members {
        let ns = netlink.create_netns(name).await.map_err(e)?;
        let spec = VethSpec {
            name: format!("v-{name}"),
            peer: format!("p-{name}"),
            peer_ns: ns.clone(),
            peer_rename: "eth0".into(),
            mtu: 1500,
        };
        netlink.create_veth(&host, &spec).await.map_err(e)?;
        netlink
            .set_master(&host, &spec.name, BRIDGE)
            .await
            .map_err(e)?;
        netlink.set_up(&host, &spec.name).await.map_err(e)?;
        let net = ipnet::Ipv4Net::new(addr, 24).map_err(|e| e.to_string())?;
        netlink.add_address(&ns, "eth0", net).await.map_err(e)?;
        netlink.set_up(&ns, "eth0").await.map_err(e)?;
        netlink.set_up(&ns, "lo").await.map_err(e)?;
        if name == "sandbox" {
            sandbox = Some(ns);
        }
    }
    Ok(Topology {
        sandbox: sandbox.ok_or("no sandbox")?,
    })
}

/// Starts each backend's servers, on threads that live as long as the VM.
pub fn serve() -> Result<(), String> {
    for (name, _) in BACKENDS {
        let ns = Netns::named(name);
        for port in TCP_PORTS {
            let listener = run_in_netns(&ns, "listen", move || {
                TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
            })
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            std::thread::spawn(move || {
                for mut stream in listener.incoming().flatten() {
                    let _ = stream.write_all(name.as_bytes());
                }
            });
        }
        let socket = run_in_netns(&ns, "bind", || {
            UdpSocket::bind((Ipv4Addr::UNSPECIFIED, UDP_PORT))
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        std::thread::spawn(move || {
            let mut buf = [0; 64];
            while let Ok((_, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(name.as_bytes(), from);
            }
        });
    }
    Ok(())
}

/// One TCP connection from the sandbox: the name of the backend that answered.
pub fn tcp_ask(sandbox: &Netns, to: SocketAddrV4) -> Result<String, String> {
    let asked = run_in_netns(sandbox, "connect", move || -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&to.into(), TIMEOUT)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    });
    asked
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("TCP to {to}: {e}"))
}

/// One datagram from a connected UDP socket in the sandbox: the name in the answer, which only
/// arrives if it comes back from `to` itself.
pub fn udp_ask(sandbox: &Netns, to: SocketAddrV4) -> Result<String, String> {
    let asked = run_in_netns(sandbox, "udp", move || -> std::io::Result<String> {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        socket.connect(to)?;
        socket.set_read_timeout(Some(TIMEOUT))?;
        socket.send(b"?")?;
        let mut buf = [0; 64];
        let n = socket.recv(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    });
    asked
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("UDP to {to}: {e}"))
}
