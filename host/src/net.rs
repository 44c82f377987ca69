//! Serving HTTP with limits a hostile client cannot get around: a cap on
//! open connections per listener (past it, a new connection is closed at
//! once, so its file descriptor is freed and the other listeners keep
//! theirs), and a deadline for every request's headers, which also closes a
//! kept-alive connection that stays idle (HTTP/1).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// A request's headers must arrive within this long after the
    /// connection is ready for them (a kept-alive connection included).
    pub header_timeout: Duration,
}

/// Serves `router` on `listener` until `shutdown` completes, then lets the
/// requests in progress finish (their connections close after them).
/// `name` names the listener in the log.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    name: &'static str,
    shutdown: impl Future<Output = ()> + Send,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let mut refused = 0u64;
    let mut said = Instant::now() - Duration::from_secs(60);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let (stream, _peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, most often: the connections that
                // are open go on; try again shortly.
                tracing::warn!(listener = name, error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            drop(stream);
            refused += 1;
            if said.elapsed() >= Duration::from_secs(1) {
                tracing::warn!(
                    listener = name,
                    max_connections = limits.max_connections,
                    refused,
                    "connection limit reached: new connections are closed at once"
                );
                said = Instant::now();
                refused = 0;
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let first_byte = limits.header_timeout;
        tokio::spawn(async move {
            // The protocol is told from the first bytes, and that wait has
            // no deadline of its own: a connection that never sends one is
            // closed after the header timeout.
            let mut one = [0u8; 1];
            match tokio::time::timeout(first_byte, stream.peek(&mut one)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => {
                    tracing::debug!(
                        listener = name,
                        "connection closed before its first request"
                    );
                    drop(slot);
                    return;
                }
            }
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(listener = name, error = %e, "connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
