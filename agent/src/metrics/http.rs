//! The metrics endpoint: plain HTTP/1.1, `GET /metrics` and nothing else. Plaintext and
//! unauthenticated, like Docker's `metrics-addr`: bind it where only the monitoring reaches.
//!
//! Whatever a client does costs meshd little ([`Limits::DEFAULT`]): at most 16 connections are
//! served at once (more are closed at once), a request head must arrive within 5 s and fit in
//! [`MAX_HEAD_BYTES`], and every connection is closed after 10 s, keep-alive or not. Renders are serialised, and one takes well under
//! a millisecond at a thousand tasks.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// What one client may take of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; one more is closed as soon as it is accepted.
    pub connections: usize,
    /// Time for a request head to arrive.
    pub header_timeout: Duration,
    /// Time a connection may stay open, whatever it does.
    pub connection_timeout: Duration,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        connections: 16,
        header_timeout: Duration::from_secs(5),
        connection_timeout: Duration::from_secs(10),
    };
}
/// hyper's smallest read buffer: a request head larger than this is refused.
pub const MAX_HEAD_BYTES: usize = 8192;
/// What Prometheus is told the body is: the OpenMetrics text `prometheus-client` writes.
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Produces the body of one scrape.
pub type Scrape = Arc<dyn Fn() -> BoxFuture<'static, String> + Send + Sync>;

/// Serves `scrape` on `listener` until `shutdown` turns true; open connections end with it.
pub async fn serve(listener: TcpListener, scrape: Scrape, shutdown: watch::Receiver<bool>) {
    serve_with(listener, scrape, shutdown, Limits::DEFAULT).await;
}

/// [`serve`] within `limits`.
pub async fn serve_with(
    listener: TcpListener,
    scrape: Scrape,
    mut shutdown: watch::Receiver<bool>,
    limits: Limits,
) {
    let slots = Arc::new(Semaphore::new(limits.connections));
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, most likely: let some connections end first.
                tracing::debug!(%error, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("metrics connection refused: too many open");
            continue;
        };
        let scrape = scrape.clone();
        connections.spawn(async move {
            let _slot = slot;
            let service = service_fn(move |request| respond(request, scrape.clone()));
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(limits.connection_timeout, connection).await;
        });
    }
    connections.shutdown().await;
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn respond(
    request: Request<Incoming>,
    scrape: Scrape,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() != "/metrics" {
        return Ok(plain(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        ));
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: use GET\n",
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(response);
    }
    let mut response = Response::new(Full::new(Bytes::from(scrape().await)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE_OPENMETRICS),
    );
    Ok(response)
}
