//! The hardened accept loop both admin listeners share.
//!
//! - **bind**: an unspecified address (`0.0.0.0` or `[::]`) means every address of both families:
//!   one `[::]` socket with `IPV6_V6ONLY` off (IPv4 clients arrive as v4-mapped addresses), and
//!   `0.0.0.0` where IPv6 is unavailable, as Go's `net.Listen("tcp", ...)` does for the other
//!   Kubernetes components.
//! - **connection cap**: at most [`MAX_CONNECTIONS`] connections per listener; the next one waits
//!   in the kernel's backlog (it is not accepted) until one ends.
//! - **timeouts**: request headers within [`HEADER_READ_TIMEOUT`]; one request per connection
//!   (no keep-alive), and the whole connection (TLS handshake, request, response) within
//!   [`CONNECTION_TIMEOUT`], after which it is closed whatever its state.
//! - **shutdown**: no new connection once `shutdown` is cancelled; those in flight get
//!   [`SHUTDOWN_GRACE`] to finish.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// Concurrent connections per listener.
pub(super) const MAX_CONNECTIONS: usize = 64;
/// Time for a client to send its request headers.
pub(super) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a whole connection: TLS handshake, request, handler and response.
pub(super) const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Time connections in flight get to finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Largest request head (request line and headers) accepted; a bearer token fits many times.
const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Listen backlog.
const BACKLOG: i32 = 128;

/// Binds `addr` (see the module docs for unspecified addresses).
pub(super) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    if !addr.ip().is_unspecified() {
        return bind_socket(addr, false);
    }
    let any_v6 = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), addr.port());
    match bind_socket(any_v6, true) {
        Ok(listener) => Ok(listener),
        // The port is taken (or privileged): the IPv4 wildcard would fail the same way.
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied
            ) =>
        {
            Err(err)
        }
        Err(err) => {
            debug!(error = %err, port = addr.port(), "no IPv6 here, listening on IPv4 only");
            bind_socket(
                SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port()),
                false,
            )
        }
    }
}

fn bind_socket(addr: SocketAddr, dual_stack: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if dual_stack {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// The address a listener is bound to, for the logs.
pub(super) fn local_addr(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map_or_else(|e| format!("? ({e})"), |a| a.to_string())
}

/// Serves `router` on `listener` (over TLS when `tls` is set) until `shutdown` is cancelled, then
/// waits for the connections in flight (at most [`SHUTDOWN_GRACE`]).
pub(super) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let connections = TaskTracker::new();
    loop {
        // A slot first: beyond the cap, connections stay in the backlog, unaccepted.
        let Some(Ok(slot)) = shutdown
            .run_until_cancelled(slots.clone().acquire_owned())
            .await
        else {
            break;
        };
        let (stream, peer) = match shutdown.run_until_cancelled(listener.accept()).await {
            None => break,
            Some(Ok(accepted)) => accepted,
            Some(Err(err)) => {
                // E.g. out of file descriptors: do not spin.
                warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let tls = tls.clone();
        let router = router.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let connection = async {
                match tls {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => serve_connection(stream, router, &shutdown).await,
                        Err(err) => debug!(%peer, error = %err, "TLS handshake failed"),
                    },
                    None => serve_connection(stream, router, &shutdown).await,
                }
            };
            let grace = async {
                shutdown.cancelled().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            };
            tokio::select! {
                done = tokio::time::timeout(CONNECTION_TIMEOUT, connection) => {
                    if done.is_err() {
                        debug!(%peer, "connection closed: took longer than {CONNECTION_TIMEOUT:?}");
                    }
                }
                () = grace => {}
            }
        });
    }
    connections.close();
    connections.wait().await;
}

/// One HTTP/1.1 request on one connection.
async fn serve_connection<S>(stream: S, router: Router, shutdown: &CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        debug!(error = %err, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unspecified_address_listens_on_both_families() {
        let listener = bind(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0)).unwrap();
        let local = listener.local_addr().unwrap();
        let port = local.port();
        let accept = tokio::spawn(async move {
            for _ in 0..2 {
                let _ = listener.accept().await;
            }
        });
        tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .expect("IPv4 clients reach the unspecified listener");
        if local.is_ipv6() {
            // Dual-stack: the same socket takes IPv6 clients too.
            tokio::net::TcpStream::connect((Ipv6Addr::LOCALHOST, port))
                .await
                .expect("IPv6 clients reach the dual-stack listener");
        } else {
            eprintln!("no IPv6 on this machine: bound {local}");
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), accept).await;
    }

    #[tokio::test]
    async fn a_specific_address_is_bound_as_given() {
        let listener = bind(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0)).unwrap();
        assert_eq!(
            listener.local_addr().unwrap().ip(),
            std::net::IpAddr::from(Ipv4Addr::LOCALHOST)
        );
        let taken = listener.local_addr().unwrap();
        assert_eq!(
            bind(taken).err().map(|e| e.kind()),
            Some(io::ErrorKind::AddrInUse)
        );
    }
}
