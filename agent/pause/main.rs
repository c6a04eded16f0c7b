//! `mesh-pause`: the only process of a task's sandbox container, which holds the task's network
//! namespace (its overlay interfaces, VIP balancing and DNS) from before the task's own container
//! starts until the task is removed. It does nothing but wait to be killed. Built statically by
//! `agent/build.rs` (a container image need not have a libc) and embedded in meshd.

#![forbid(unsafe_code)]

fn main() {
    loop {
        std::thread::park();
    }
}
