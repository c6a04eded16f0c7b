//! Polls a service's tasks and draws its convergence: redrawn bars on a terminal, plain changed
//! lines otherwise.

use super::{Snapshot, evaluate};
use crate::error::CliError;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use mesh_proto::control_client::ControlClient;
use mesh_proto::gather;
use mesh_proto::service_spec::Mode;
use mesh_proto::{GetServiceRequest, ListServicesRequest, ListTasksRequest, Service, UpdateState};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const POLL: Duration = Duration::from_millis(100);
const VERIFY: Duration = Duration::from_secs(1);
/// How long a service just written may be unknown to the manager answering (a follower that has
/// not applied the write yet).
const CATCH_UP: Duration = Duration::from_secs(10);

/// Where progress goes: nowhere (`--quiet`), bars on a terminal, or plain lines.
enum Sink {
    Quiet,
    Bars {
        multi: MultiProgress,
        bars: HashMap<String, ProgressBar>,
        style: ProgressStyle,
        verify: Option<ProgressBar>,
    },
    Plain {
        printed: HashMap<String, String>,
    },
}

impl Sink {
    fn new(quiet: bool) -> Sink {
        if quiet {
            return Sink::Quiet;
        }
        match ProgressStyle::with_template("{msg}") {
            Ok(style) if std::io::stdout().is_terminal() => Sink::Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
                bars: HashMap::new(),
                style,
                verify: None,
            },
            _ => Sink::Plain {
                printed: HashMap::new(),
            },
        }
    }

    /// Shows `text` on the line keyed `key` (created below the others on first use).
    fn line(&mut self, key: &str, text: String) -> std::io::Result<()> {
        match self {
            Sink::Quiet => Ok(()),
            Sink::Bars {
                multi,
                bars,
                style,
                verify,
            } => {
                let bar = bars.entry(key.to_string()).or_insert_with(|| {
                    let bar = ProgressBar::new(0).with_style(style.clone());
                    match verify {
                        Some(verify) => multi.insert_before(verify, bar),
                        None => multi.add(bar),
                    }
                });
                bar.set_message(text);
                Ok(())
            }
            Sink::Plain { printed } => {
                if printed.get(key) == Some(&text) {
                    return Ok(());
                }
                writeln!(std::io::stdout(), "{text}")?;
                printed.insert(key.to_string(), text);
                Ok(())
            }
        }
    }

    fn verify(&mut self, text: String) -> std::io::Result<()> {
        if let Sink::Bars {
            multi,
            style,
            verify,
            ..
        } = self
        {
            let bar = verify
                .get_or_insert_with(|| multi.add(ProgressBar::new(0).with_style(style.clone())));
            bar.set_message(text);
            return Ok(());
        }
        self.line("verify", text)
    }

    fn show(&mut self, snapshot: &Snapshot) -> std::io::Result<()> {
        let overall = format!(
            "overall progress: {} out of {} tasks",
            snapshot.running, snapshot.desired
        );
        self.line("overall", overall)?;
        for line in &snapshot.lines {
            self.line(
                &format!("task {}", line.id),
                format!("{}: {}", line.id, line.text),
            )?;
        }
        Ok(())
    }

    fn finish(&mut self) {
        if let Sink::Bars { bars, verify, .. } = self {
            bars.values()
                .chain(verify.iter())
                .for_each(ProgressBar::finish);
        }
    }
}

/// Waits until `service` has converged (every desired task running for a second, and its rolling
/// update, if any, done), drawing progress unless `quiet`. Fails when a task is rejected or a slot
/// keeps failing, when the update pauses, or when it is rolled back because it failed; `since` is
/// when the command started (Unix nanoseconds), so older failures don't count.
pub async fn watch(
    control: &mut ControlClient<Channel>,
    service: &Service,
    since: i64,
    quiet: bool,
) -> Result<(), CliError> {
    let name = service
        .spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map_or(service.id.as_str(), |a| a.name.as_str())
        .to_string();
    let global = matches!(
        service.spec.as_ref().and_then(|s| s.mode.as_ref()),
        Some(Mode::Global(_))
    );
    let asked_rollback = update_state(service) == UpdateState::RollbackStarted;
    // Why the update rolled itself back, once it did.
    let mut rolled_back: Option<String> = None;
    let mut service = service.clone();
    let mut sink = Sink::new(quiet);
    let mut stable_since: Option<Instant> = None;
    let mut ticker = tokio::time::interval(POLL);
    let watching = Instant::now();
    loop {
        ticker.tick().await;
        let request = GetServiceRequest {
            reference: service.id.clone(),
        };
        service = match control.get_service(request).await {
            Ok(reply) => reply.into_inner(),
            // A manager that is not the leader answers from its own store, which may not have
            // applied the write that just made the service yet: it exists, so ask again.
            Err(status)
                if status.code() == tonic::Code::NotFound && watching.elapsed() < CATCH_UP =>
            {
                continue;
            }
            Err(status) => return Err(status.into()),
        };
        let status = service.update_status.clone().unwrap_or_default();
        match update_state(&service) {
            UpdateState::Paused => {
                sink.finish();
                return Err(CliError::Converge(format!(
                    "service {name} update paused: {}",
                    status.message
                )));
            }
            UpdateState::RollbackPaused => {
                sink.finish();
                return Err(CliError::Converge(format!(
                    "service {name} rollback paused: {}",
                    status.message
                )));
            }
            UpdateState::RollbackStarted | UpdateState::RollbackCompleted
                if !asked_rollback && rolled_back.is_none() =>
            {
                stable_since = None;
                sink.line("rollback", format!("rollback: {}", status.message))?;
                rolled_back = Some(status.message.clone());
            }
            _ => {}
        }
        let replicas = match service.spec.as_ref().and_then(|s| s.mode.as_ref()) {
            Some(Mode::Replicated(r)) => r.replicas,
            _ => 0,
        };
        let request = ListTasksRequest {
            service_ids: vec![service.id.clone()],
            ..ListTasksRequest::default()
        };
        let tasks = gather(control.list_tasks(request).await?.into_inner())
            .await?
            .tasks;
        let desired = if global {
            let services = gather(
                control
                    .list_services(ListServicesRequest {})
                    .await?
                    .into_inner(),
            )
            .await?;
            services
                .desired_tasks
                .get(&service.id)
                .copied()
                .unwrap_or(0)
        } else {
            replicas
        };
        let snapshot = evaluate(&service, &tasks, desired, since);
        sink.show(&snapshot)?;
        if let Some(failure) = snapshot.failure {
            sink.finish();
            return Err(CliError::Converge(format!(
                "service {name} did not converge: {failure}"
            )));
        }
        let updating = matches!(
            update_state(&service),
            UpdateState::Updating | UpdateState::RollbackStarted
        );
        if !snapshot.converged || updating {
            stable_since = None;
            if snapshot.converged {
                sink.verify("verify: Waiting for the update monitor to end...".to_string())?;
            }
            continue;
        }
        let started = *stable_since.get_or_insert_with(Instant::now);
        if started.elapsed() >= VERIFY {
            sink.verify(format!("verify: Service {name} converged"))?;
            sink.finish();
            if let Some(reason) = rolled_back {
                return Err(CliError::Converge(format!(
                    "service {name} rolled back: {reason}"
                )));
            }
            return Ok(());
        }
        let left = (VERIFY - started.elapsed()).as_secs() + 1;
        sink.verify(format!(
            "verify: Waiting {left} seconds to verify that tasks are stable..."
        ))?;
    }
}

fn update_state(service: &Service) -> UpdateState {
    service
        .update_status
        .as_ref()
        .and_then(|s| UpdateState::try_from(s.state).ok())
        .unwrap_or(UpdateState::Unknown)
}
