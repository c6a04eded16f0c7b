//! kube-proxy's iptables layout for ClusterIP services, written as `iptables-restore` input or as
//! single iptables commands, and the two iptables backends it is applied with.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::ensure;

use super::{Lab, PORT};

/// Bounds every iptables command, the 10,000-service restore included.
const IPTABLES_LIMIT: Duration = Duration::from_secs(600);

/// Which iptables implementation applies the rules; kube-proxy uses the one the host uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Iptables {
    /// iptables over nf_tables (Debian's default).
    Nft,
    /// iptables over the x_tables kernel interface.
    Legacy,
}

impl Iptables {
    pub fn name(self) -> &'static str {
        match self {
            Self::Nft => "iptables-nft",
            Self::Legacy => "iptables-legacy",
        }
    }

    fn restore(self) -> String {
        format!("{}-restore", self.name())
    }

    fn save(self) -> String {
        format!("{}-save", self.name())
    }
}

/// One ClusterIP service on [`PORT`].
pub(super) struct Service {
    pub vip: Ipv4Addr,
    pub backends: Vec<SocketAddrV4>,
}

impl Service {
    pub fn new(vip: Ipv4Addr, backends: &[SocketAddrV4]) -> Self {
        Self {
            vip,
            backends: backends.to_vec(),
        }
    }
}

/// An `iptables-restore` input for the nat table in kube-proxy's layout: OUTPUT jumps to
/// KUBE-SERVICES, which holds one rule per service jumping to its KUBE-SVC chain, which picks a
/// KUBE-SEP chain per endpoint with `-m statistic --mode random`, which DNATs; plus kube-proxy's
/// masquerade marking and the closing nodeports rule.
pub(super) struct KubeRules {
    pub text: String,
    /// How many `-A` lines it has.
    pub appended: usize,
    /// The chains and rules of the services alone, in the order single commands add them.
    services: Vec<Vec<String>>,
}

impl KubeRules {
    /// The rules for `services`, numbered from `first` (which names their chains).
    pub fn new(services: &[Service], first: usize) -> Self {
        let mut chains = String::from(
            "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n\
             :KUBE-POSTROUTING - [0:0]\n",
        );
        let mut rules = String::from(concat!(
            "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
            "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" ",
            "-j KUBE-POSTROUTING\n",
            "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n",
            "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n",
            "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n",
            "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring ",
            "SNAT\" -j MASQUERADE --random-fully\n",
        ));
        let (mut new_chains, mut endpoint_rules, mut jumps) = (Vec::new(), Vec::new(), Vec::new());
        for (i, service) in (first..).zip(services) {
            let name = format!("bench/svc{i}:http");
            let svc = chain_name("SVC", i);
            new_chains.push(svc.clone());
            jumps.push(format!(
                "-A KUBE-SERVICES -d {}/32 -p tcp -m comment --comment \"{name} cluster IP\" \
                 -m tcp --dport {PORT} -j {svc}",
                service.vip
            ));
            let n = service.backends.len();
            for (k, backend) in service.backends.iter().enumerate() {
                let sep = chain_name("SEP", i * n + k);
                new_chains.push(sep.clone());
                let pick = if k + 1 < n {
                    let p = 1.0 / (n - k) as f64;
                    format!("-m statistic --mode random --probability {p:.10} ")
                } else {
                    String::new()
                };
                endpoint_rules.push(format!(
                    "-A {svc} -m comment --comment \"{name} -> {backend}\" {pick}-j {sep}"
                ));
                endpoint_rules.push(format!(
                    "-A {sep} -s {}/32 -m comment --comment \"{name}\" -j KUBE-MARK-MASQ",
                    backend.ip()
                ));
                endpoint_rules.push(format!(
                    "-A {sep} -p tcp -m comment --comment \"{name}\" -m tcp -j DNAT \
                     --to-destination {backend}"
                ));
            }
        }
        for chain in &new_chains {
            let _ = writeln!(chains, ":{chain} - [0:0]");
        }
        for rule in &jumps {
            let _ = writeln!(rules, "{rule}");
        }
        rules.push_str(
            "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must \
             be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n",
        );
        for rule in &endpoint_rules {
            let _ = writeln!(rules, "{rule}");
        }
        // Chains first, then the endpoint rules, then the jumps that make the services live.
        let new = new_chains
            .into_iter()
            .map(|chain| vec!["-N".to_owned(), chain]);
        let appends = endpoint_rules.iter().chain(&jumps).map(|r| shell_words(r));
        Self {
            appended: rules.lines().count(),
            text: format!("{chains}{rules}COMMIT\n"),
            services: new.chain(appends).collect(),
        }
    }
}

/// A chain name shaped like kube-proxy's (`KUBE-SVC-` and 16 base32-looking characters).
fn chain_name(kind: &str, i: usize) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (kind.len() as u64 * 0x51);
    let mut suffix = String::with_capacity(16);
    for _ in 0..16 {
        x = x.rotate_left(5) ^ 0x2545_f491_4f6c_dd1d;
        suffix.push(char::from(ALPHABET[(x & 31) as usize]));
    }
    format!("KUBE-{kind}-{suffix}")
}

/// Splits a rule line into arguments at spaces outside double quotes (the only quoting the
/// rules use).
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quoted, mut started) = (Vec::new(), String::new(), false, false);
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                started = true;
            }
            ' ' if !quoted => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            _ => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}

/// How long adding one service with single iptables commands took.
pub(super) struct SingleCommands {
    /// Its `-A KUBE-SERVICES` alone, the command that makes it live.
    pub append: Duration,
    /// All its commands.
    pub all: Duration,
    pub commands: usize,
}

impl Lab {
    /// Applies `rules` with one `iptables-restore --noflush`, as kube-proxy does; returns how long
    /// it took, and checks that every `-A` line made it into the nat table.
    pub(super) async fn restore(
        &self,
        iptables: Iptables,
        rules: &KubeRules,
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let restore = iptables.restore();
        self.run(&restore, &["--noflush"], Some(&rules.text), IPTABLES_LIMIT)
            .await?;
        let took = start.elapsed();
        let held = self.nat_rules(iptables).await?;
        ensure!(
            held == rules.appended,
            "the {} nat table holds {held} rules after restoring {}",
            iptables.name(),
            rules.appended
        );
        Ok(took)
    }

    /// Adds the services of `rules` (on top of the restored base) one iptables command at a time,
    /// as an older kube-proxy or a script would.
    pub(super) async fn add_singly(
        &self,
        iptables: Iptables,
        rules: &KubeRules,
    ) -> anyhow::Result<SingleCommands> {
        let (mut all, mut append) = (Duration::ZERO, Duration::ZERO);
        for command in &rules.services {
            let mut args = vec!["-t", "nat"];
            args.extend(command.iter().map(String::as_str));
            let start = Instant::now();
            self.run(iptables.name(), &args, None, IPTABLES_LIMIT)
                .await?;
            let took = start.elapsed();
            all += took;
            if command[..2] == ["-A", "KUBE-SERVICES"] {
                append = took;
            }
        }
        Ok(SingleCommands {
            append,
            all,
            commands: rules.services.len(),
        })
    }

    /// Empties the client's nat table; returns how long it took. With iptables-nft the table
    /// itself goes, and with it the conntrack hooks it brought; a legacy table stays registered.
    pub(super) async fn clear_nat(&self, iptables: Iptables) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let empty = Some("*nat\nCOMMIT\n");
        self.run(&iptables.restore(), &[], empty, IPTABLES_LIMIT)
            .await?;
        let took = start.elapsed();
        let held = self.nat_rules(iptables).await?;
        ensure!(held == 0, "{held} {} nat rules left", iptables.name());
        Ok(took)
    }

    async fn nat_rules(&self, iptables: Iptables) -> anyhow::Result<usize> {
        let save = self
            .run(&iptables.save(), &["-t", "nat"], None, IPTABLES_LIMIT)
            .await?;
        Ok(save.lines().filter(|l| l.starts_with("-A ")).count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends() -> Vec<SocketAddrV4> {
        (2..5)
            .map(|k| SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, k), 80))
            .collect()
    }

    #[test]
    fn a_service_gets_kube_proxys_chains_and_rules() {
        let vip = Ipv4Addr::new(10, 96, 0, 10);
        let rules = KubeRules::new(&[Service::new(vip, &backends())], 0);
        let lines: Vec<&str> = rules.text.lines().collect();
        assert_eq!(lines.first(), Some(&"*nat"));
        assert_eq!(lines.last(), Some(&"COMMIT"));
        // 4 base chains and 1 + 3 of the service.
        assert_eq!(lines.iter().filter(|l| l.starts_with(':')).count(), 8);
        // 6 base rules, the service's jump, the nodeports rule, 3 x 3 endpoint rules.
        assert_eq!(rules.appended, 17);
        let picks: Vec<&&str> = lines.iter().filter(|l| l.contains("statistic")).collect();
        assert_eq!(picks.len(), 2);
        assert!(
            picks[0].contains("--probability 0.3333333333"),
            "{}",
            picks[0]
        );
        assert!(
            picks[1].contains("--probability 0.5000000000"),
            "{}",
            picks[1]
        );
        assert!(rules.text.contains("-j DNAT --to-destination 10.0.0.4:80"));
        // The jump comes before the nodeports rule, which ends KUBE-SERVICES.
        let jump = lines.iter().position(|l| l.contains("-d 10.96.0.10/32"));
        let nodeports = lines.iter().position(|l| l.ends_with("-j KUBE-NODEPORTS"));
        assert!(jump.unwrap() < nodeports.unwrap());
    }

    #[test]
    fn single_commands_create_chains_first_and_make_the_service_live_last() {
        let vip = Ipv4Addr::new(10, 96, 0, 10);
        let rules = KubeRules::new(&[Service::new(vip, &backends())], 7);
        let c = &rules.services;
        assert_eq!(c.len(), 4 + 9 + 1);
        assert!(c[..4].iter().all(|c| c[0] == "-N"));
        assert_eq!(c[0][1], chain_name("SVC", 7));
        assert_eq!(c[1][1], chain_name("SEP", 21));
        let last = c.last().unwrap();
        assert_eq!(&last[..4], ["-A", "KUBE-SERVICES", "-d", "10.96.0.10/32"]);
        let comment = last.iter().position(|w| w == "--comment").unwrap();
        assert_eq!(last[comment + 1], "bench/svc7:http cluster IP");
    }

    #[test]
    fn chain_names_are_distinct_and_fit_iptables() {
        let mut names: Vec<String> = (0..30_000).map(|i| chain_name("SEP", i)).collect();
        assert!(names.iter().all(|n| n.len() <= 28));
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 30_000);
    }
}
