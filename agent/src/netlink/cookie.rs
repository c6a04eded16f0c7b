//! The cookie of a network namespace: the number eBPF programs see for its sockets
//! (`bpf_get_netns_cookie`), which the service load balancer keys its maps by.

use super::real::{on_own_thread, open_netns};
use super::{NetlinkError, Netns, sys};

/// The netns cookie of `ns`, read on a short-lived thread that enters the namespace and exits with
/// it, so the rest of the process never changes namespace.
pub async fn netns_cookie(ns: &Netns) -> Result<u64, NetlinkError> {
    const OP: &str = "read netns cookie";
    let file = open_netns(OP, ns)?;
    on_own_thread(OP, ns.to_string(), move || {
        sys::setns_net(&file)?;
        sys::netns_cookie()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_namespace_is_an_error() {
        let ns = Netns::from_path("/nonexistent/mesh-netns");
        let err = netns_cookie(&ns).await.unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }
}
