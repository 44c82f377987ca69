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

/// Parses a listen address: `IP:PORT` (`127.0.0.1:8080`, `[::1]:8080`,
/// `0.0.0.0:8080`) or `localhost:PORT` (127.0.0.1). Anything else gets a
/// message that shows what to write.
pub fn parse_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    const HOW: &str = "write IP:PORT, e.g. \"127.0.0.1:8080\" (this machine only), \
                       \"0.0.0.0:8080\" (every interface) or \"localhost:8080\"";
    let shown: String = s.chars().take(80).collect();
    if s.parse::<IpAddr>().is_ok() || s.eq_ignore_ascii_case("localhost") {
        return Err(format!("\"{shown}\" has no port: {HOW}"));
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("\"{shown}\" is not an address to listen on: {HOW}"));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("\"{shown}\": the port must be a number from 0 to 65535; {HOW}"))?;
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    Err(format!(
        "\"{shown}\": a listener binds an IP address, not a host name (only \"localhost\" is \
         taken); {HOW}"
    ))
}

/// Serde's side of [`parse_listen`], for config fields.
pub(crate) fn deserialize_listen<'de, D>(d: D) -> Result<std::net::SocketAddr, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let s = <String as serde::Deserialize>::deserialize(d)?;
    parse_listen(&s).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod listen_tests {
    use super::parse_listen;

    #[test]
    fn listen_addresses_parse_or_say_what_to_write() {
        assert_eq!(parse_listen("127.0.0.1:8080").map(|a| a.port()), Ok(8080));
        assert_eq!(parse_listen("[::1]:9").map(|a| a.port()), Ok(9));
        let l = parse_listen("localhost:8080");
        assert_eq!(l.map(|a| a.to_string()), Ok("127.0.0.1:8080".to_owned()));
        for (bad, says) in [
            ("0.0.0.0", "has no port"),
            ("localhost", "has no port"),
            ("example.com:80", "not a host name"),
            ("127.0.0.1:http", "the port must be a number"),
            ("nonsense", "not an address"),
        ] {
            let e = parse_listen(bad).err().unwrap_or_default();
            assert!(e.contains(says) && e.contains("0.0.0.0:8080"), "{bad}: {e}");
        }
    }
}
