//! Several `-c` files merged as `docker stack deploy` merges them: a later file's service is
//! merged into the earlier one key by key (a later value wins, lists are appended, except
//! `ports` by published port, `volumes` by target and `secrets`/`configs` by source, which
//! replace their match, and `command`/`entrypoint`, which replace); a later top-level
//! network, volume, secret or config replaces the earlier one of its name.

use super::model::{
    Config, Deploy, Healthcheck, LongPort, LongVolume, Placement, ResourceValues, Resources,
    RestartPolicy, Service, ServiceNetworks, UpdateConfig,
};
use super::syntax::{ListOrDict, ShortOrLong};
use std::collections::BTreeMap;

/// Merges `over` into `base`.
pub fn merge(mut base: Config, over: Config) -> Config {
    for (name, service) in over.services {
        match base.services.remove(&name) {
            Some(old) => base.services.insert(name, merge_service(old, service)),
            None => base.services.insert(name, service),
        };
    }
    base.networks.extend(over.networks);
    base.volumes.extend(over.volumes);
    base.secrets.extend(over.secrets);
    base.configs.extend(over.configs);
    base
}

trait Merge {
    fn merge(self, over: Self) -> Self;
}

/// A later value replaces an earlier one.
fn or<T>(base: Option<T>, over: Option<T>) -> Option<T> {
    over.or(base)
}

/// Both present: merged; else whichever is.
fn deep<T: Merge>(base: Option<T>, over: Option<T>) -> Option<T> {
    match (base, over) {
        (Some(b), Some(o)) => Some(b.merge(o)),
        (b, o) => o.or(b),
    }
}

impl Merge for ListOrDict {
    fn merge(mut self, over: Self) -> Self {
        self.0.extend(over.0);
        self
    }
}

impl Merge for ServiceNetworks {
    fn merge(mut self, over: Self) -> Self {
        self.0.extend(over.0);
        self
    }
}

/// Appends `over`, replacing the earlier item with the same key.
fn keyed<T>(base: Vec<T>, over: Vec<T>, key: impl Fn(&T) -> String) -> Vec<T> {
    let mut order: Vec<String> = Vec::new();
    let mut items: BTreeMap<String, T> = BTreeMap::new();
    for item in base.into_iter().chain(over) {
        let k = key(&item);
        if !items.contains_key(&k) {
            order.push(k.clone());
        }
        items.insert(k, item);
    }
    order.into_iter().filter_map(|k| items.remove(&k)).collect()
}

fn port_key(port: &ShortOrLong<LongPort>) -> String {
    match port {
        ShortOrLong::Short(s) => {
            let ports = s.split('/').next().unwrap_or(s);
            let published = ports.rsplit_once(':').map_or("", |(p, _)| p);
            let published = published.rsplit(':').next().unwrap_or(published);
            if published.is_empty() {
                format!("short:{s}")
            } else {
                published.to_string()
            }
        }
        ShortOrLong::Long(l) => l
            .published
            .map_or_else(|| format!("long:{}", l.target), |p| p.to_string()),
    }
}

fn volume_key(volume: &ShortOrLong<LongVolume>) -> String {
    match volume {
        ShortOrLong::Short(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            match parts.as_slice() {
                [target] | [_, target] | [_, target, _] => (*target).to_string(),
                _ => s.clone(),
            }
        }
        ShortOrLong::Long(l) => l.target.clone(),
    }
}

fn source_key<L>(item: &ShortOrLong<L>, source: impl Fn(&L) -> String) -> String {
    match item {
        ShortOrLong::Short(s) => s.clone(),
        ShortOrLong::Long(l) => source(l),
    }
}

fn merge_service(base: Service, over: Service) -> Service {
    Service {
        image: or(base.image, over.image),
        command: or(base.command, over.command),
        entrypoint: or(base.entrypoint, over.entrypoint),
        environment: deep(base.environment, over.environment),
        env_file: or(base.env_file, over.env_file),
        labels: deep(base.labels, over.labels),
        ports: keyed(base.ports, over.ports, port_key),
        networks: deep(base.networks, over.networks),
        volumes: keyed(base.volumes, over.volumes, volume_key),
        secrets: keyed(base.secrets, over.secrets, |s| {
            source_key(s, |l| l.source.clone())
        }),
        configs: keyed(base.configs, over.configs, |s| {
            source_key(s, |l| l.source.clone())
        }),
        healthcheck: deep(base.healthcheck, over.healthcheck),
        stop_grace_period: or(base.stop_grace_period, over.stop_grace_period),
        user: or(base.user, over.user),
        working_dir: or(base.working_dir, over.working_dir),
        hostname: or(base.hostname, over.hostname),
        deploy: deep(base.deploy, over.deploy),
        restart: or(base.restart, over.restart),
    }
}

impl Merge for Healthcheck {
    fn merge(self, o: Self) -> Self {
        Healthcheck {
            test: or(self.test, o.test),
            interval: or(self.interval, o.interval),
            timeout: or(self.timeout, o.timeout),
            start_period: or(self.start_period, o.start_period),
            retries: or(self.retries, o.retries),
            disable: or(self.disable, o.disable),
        }
    }
}

impl Merge for Deploy {
    fn merge(self, o: Self) -> Self {
        Deploy {
            mode: or(self.mode, o.mode),
            replicas: or(self.replicas, o.replicas),
            labels: deep(self.labels, o.labels),
            update_config: deep(self.update_config, o.update_config),
            rollback_config: deep(self.rollback_config, o.rollback_config),
            resources: deep(self.resources, o.resources),
            restart_policy: deep(self.restart_policy, o.restart_policy),
            placement: deep(self.placement, o.placement),
            endpoint_mode: or(self.endpoint_mode, o.endpoint_mode),
        }
    }
}

impl Merge for UpdateConfig {
    fn merge(self, o: Self) -> Self {
        UpdateConfig {
            parallelism: or(self.parallelism, o.parallelism),
            delay: or(self.delay, o.delay),
            failure_action: or(self.failure_action, o.failure_action),
            monitor: or(self.monitor, o.monitor),
            max_failure_ratio: or(self.max_failure_ratio, o.max_failure_ratio),
            order: or(self.order, o.order),
        }
    }
}

impl Merge for Resources {
    fn merge(self, o: Self) -> Self {
        Resources {
            limits: deep(self.limits, o.limits),
            reservations: deep(self.reservations, o.reservations),
        }
    }
}

impl Merge for ResourceValues {
    fn merge(self, o: Self) -> Self {
        ResourceValues {
            cpus: or(self.cpus, o.cpus),
            memory: or(self.memory, o.memory),
            pids: or(self.pids, o.pids),
            generic_resources: or(self.generic_resources, o.generic_resources),
        }
    }
}

impl Merge for RestartPolicy {
    fn merge(self, o: Self) -> Self {
        RestartPolicy {
            condition: or(self.condition, o.condition),
            delay: or(self.delay, o.delay),
            max_attempts: or(self.max_attempts, o.max_attempts),
            window: or(self.window, o.window),
        }
    }
}

impl Merge for Placement {
    fn merge(mut self, o: Self) -> Self {
        self.constraints.extend(o.constraints);
        self.preferences.extend(o.preferences);
        Placement {
            constraints: self.constraints,
            preferences: self.preferences,
            max_replicas_per_node: or(self.max_replicas_per_node, o.max_replicas_per_node),
        }
    }
}

#[cfg(test)]
mod tests;
