//! The delayer behind `lab fault NODE delay D`: a process in the node's namespace bound to its
//! NFQUEUE, which holds every queued packet for D and then accepts it (this kernel has no netem).
//! [`serve`] is its loop; [`start`] and [`stop`] run it for a lab node.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::fault::DELAY_QUEUE;
use super::state::LabNode;
use crate::process;

/// The delayer's binary (in `tests/src/bin`).
pub const BINARY: &str = "mesh-lab-delay";
/// The file a delayer creates once it is bound to its queue.
const READY_FILE: &str = "delay.ready";
/// The most packets the kernel queues for the delayer before accepting more without delay.
const QUEUE_LEN: u32 = 8192;
/// While packets are held, how often new arrivals are read (and stamped with their arrival).
const TICK: Duration = Duration::from_micros(500);

/// Starts the delayer for `node` and waits until it is bound; returns its pid.
pub fn start(node: &LabNode, delay: Duration) -> anyhow::Result<u32> {
    let bin = crate::meshctl::binary(BINARY)?;
    let ready = node.dir.join(READY_FILE);
    let _ = std::fs::remove_file(&ready);
    let log = File::create(node.dir.join("delay.log")).context("cannot create delay.log")?;
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", node.netns_path()))
        .arg(bin)
        .args(["--queue", &DELAY_QUEUE.to_string()])
        .args(["--delay-ms", &delay.as_millis().to_string()])
        .args(["--ready", &ready.display().to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("cannot clone log handle")?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot start the delayer through nsenter")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "the delayer exited ({status}): {}",
                crate::log_tail(&node.dir.join("delay.log"), 3)
            );
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the delayer did not bind its queue within 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // nsenter execs the delayer: this pid is the delayer's. It outlives this process on purpose
    // (its pid is in the lab's record), so it is not waited for here.
    Ok(child.id())
}

/// Stops a delayer (its queue then lets packets pass, `--queue-bypass`).
pub fn stop(pid: u32) {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if String::from_utf8_lossy(&cmdline).contains(BINARY) {
        process::terminate(pid, Duration::from_secs(2));
    }
}

/// Binds NFQUEUE `queue` in this namespace, creates `ready`, then accepts every packet `delay`
/// after it arrived, in arrival order. Runs until killed.
pub fn serve(queue_num: u16, delay: Duration, ready: &Path) -> anyhow::Result<()> {
    let mut queue = nfq::Queue::open().context("cannot open a netfilter queue socket")?;
    queue
        .bind(queue_num)
        .with_context(|| format!("cannot bind netfilter queue {queue_num}"))?;
    queue
        .set_copy_range(queue_num, 0)
        .context("cannot set the queue's copy range")?;
    queue
        .set_queue_max_len(queue_num, QUEUE_LEN)
        .context("cannot set the queue's length")?;
    queue
        .set_fail_open(queue_num, true)
        .context("cannot make the queue fail open")?;
    File::create(ready).with_context(|| format!("cannot create {}", ready.display()))?;
    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    loop {
        // Nothing held: sleep in the kernel until a packet comes.
        if held.is_empty() {
            queue.set_nonblocking(false);
            let msg = queue.recv().context("cannot read the netfilter queue")?;
            held.push_back((Instant::now() + delay, msg));
            queue.set_nonblocking(true);
        }
        loop {
            match queue.recv() {
                Ok(msg) => held.push_back((Instant::now() + delay, msg)),
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(err) => return Err(err).context("cannot read the netfilter queue"),
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, mut msg)) = held.pop_front() {
                msg.set_verdict(nfq::Verdict::Accept);
                queue.verdict(msg).context("cannot accept a held packet")?;
            }
        }
        // Packets held: wake for the next one due, or sooner to stamp new arrivals on time.
        if let Some((due, _)) = held.front() {
            std::thread::sleep(due.saturating_duration_since(now).min(TICK));
        }
    }
}
