//! `udp-hostname`, the UDP server and client of the test image (busybox-static has neither: its
//! `nc` has no `-u` and there is no `udpsvd`). `serve PORT` answers every datagram with the
//! container's hostname, so a test sees which task answered; `ask HOST:PORT [SECONDS]` sends one
//! datagram, prints the answer and exits 1 when none came in time.
//!
//! Standard library only: `tests/build.rs` compiles this file, behind a generated `main` that
//! calls [`run`], into a statically linked program that [`super`] puts in the image. The
//! test process uses [`ask`] directly to reach published ports from the host.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How long `ask` waits for an answer when the command line does not say.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(2);

/// The largest answer read; a hostname is at most 64 bytes.
const BUFFER: usize = 512;

/// The program's command line (without its name): `serve PORT` or `ask HOST:PORT [SECONDS]`.
pub fn run(args: impl IntoIterator<Item = String>) -> ExitCode {
    let args: Vec<String> = args.into_iter().collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["serve", port] => match port.parse::<u16>() {
            Ok(port) => serve(port).map(|()| String::new()),
            Err(_) => return usage(),
        },
        ["ask", target] => ask(target, DEFAULT_WAIT),
        ["ask", target, seconds] => match seconds.parse::<f64>() {
            Ok(s) if s > 0.0 && s.is_finite() => ask(target, Duration::from_secs_f64(s)),
            _ => return usage(),
        },
        _ => return usage(),
    };
    match result {
        Ok(answer) => {
            println!("{answer}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("udp-hostname: {err}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: udp-hostname serve PORT | udp-hostname ask HOST:PORT [SECONDS]");
    ExitCode::from(2)
}

/// The UTS namespace's hostname (a container's own name).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// Answers every datagram to `PORT` on all addresses with [`hostname`]; returns only on error.
pub fn serve(port: u16) -> io::Result<()> {
    answer_forever(&UdpSocket::bind(("0.0.0.0", port))?, &hostname())
}

fn answer_forever(socket: &UdpSocket, name: &str) -> io::Result<()> {
    let mut buf = [0u8; BUFFER];
    loop {
        let (_, from) = socket.recv_from(&mut buf)?;
        // A client that went away is no reason to stop answering the others.
        let _ = socket.send_to(name.as_bytes(), from);
    }
}

/// Sends one datagram to `target` (`HOST:PORT`, resolved as the system resolves names) from an
/// unconnected socket, and returns the answer that comes back from that same address within
/// `wait`. Datagrams from elsewhere are ignored, as a resolver ignores them: an answer that does
/// not come from the address asked (a VIP, a node's published port) is a failure, named in the
/// error.
pub fn ask(target: &str, wait: Duration) -> io::Result<String> {
    let addr = target
        .to_socket_addrs()?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{target} has no IPv4 address"),
            )
        })?;
    let socket = UdpSocket::bind(("0.0.0.0", 0))?;
    socket.send_to(b"hostname?", addr)?;
    let deadline = Instant::now() + wait;
    let mut strays = Vec::new();
    let mut buf = [0u8; BUFFER];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let mut msg = format!("no answer from {addr} within {wait:?}");
            if !strays.is_empty() {
                msg.push_str(&format!(" (ignored datagrams from {strays:?})"));
            }
            return Err(io::Error::new(io::ErrorKind::TimedOut, msg));
        }
        socket.set_read_timeout(Some(left))?;
        match socket.recv_from(&mut buf) {
            Ok((n, from)) if from == addr => {
                return Ok(String::from_utf8_lossy(&buf[..n]).trim().to_owned());
            }
            Ok((_, from)) => strays.push(from),
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server on a loopback port of its own, answering `name` from a thread.
    fn server(name: &'static str) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        std::thread::spawn(move || answer_forever(&socket, name));
        addr
    }

    #[test]
    fn every_datagram_is_answered_with_the_name() {
        let addr = server("task-1").to_string();
        for _ in 0..3 {
            assert_eq!(ask(&addr, DEFAULT_WAIT).unwrap(), "task-1");
        }
    }

    #[test]
    fn silence_is_a_timeout_naming_the_address() {
        // Bound, so the datagram is queued rather than refused, and never answered.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let started = Instant::now();
        let err = ask(&addr.to_string(), Duration::from_millis(200)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        let mut buf = [0u8; BUFFER];
        let (n, _) = silent.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hostname?");
    }

    #[test]
    fn an_answer_from_another_address_does_not_count() {
        // The asked socket forwards the question to a second one, which answers from its own
        // port: what a VIP whose replies were not rewritten back would look like.
        let asked = UdpSocket::bind("127.0.0.1:0").unwrap();
        let other = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = asked.local_addr().unwrap();
        let other_addr = other.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; BUFFER];
            let (_, client) = asked.recv_from(&mut buf).unwrap();
            other.send_to(b"impostor", client).unwrap();
        });
        let err = ask(&addr.to_string(), Duration::from_millis(500)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains(&other_addr.to_string()), "{err}");
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        for args in [
            &[][..],
            &["serve"],
            &["serve", "http"],
            &["ask"],
            &["ask", "x:1", "-1"],
            &["listen", "1"],
        ] {
            let args = args.iter().map(|a| (*a).to_owned());
            assert_eq!(run(args), ExitCode::from(2));
        }
    }
}
