//! The HTTP listener: at most `max_connections` connections at once (the others wait in the
//! kernel's queue, so file descriptors stay for the snapshot writer and the broker), a deadline
//! and a size limit for a request's headers, and connections closed when nothing moves either way for the idle
//! timeout (a client that stopped reading a result frees its query at once). With TLS, the
//! handshake must end within the header deadline, and a verified client certificate's name goes
//! with each of the connection's requests.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::response::IntoResponse;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::serve::access::CertificateName;
use crate::serve::audit::AuditLog;
use crate::serve::tls::{self, Tls};

#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
    pub idle_timeout: Duration,
}

/// Serves `app` until `shutdown`, then lets open connections finish their responses.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    tls: Option<Arc<Tls>>,
    audit: Arc<AuditLog>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let open = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = connections.clone().acquire_owned() => permit.expect("never closed"),
        };
        let socket = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(error) => {
                    tracing::warn!(%error, "http: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (app, tls, audit, shutdown) = (app.clone(), tls.clone(), audit.clone(), shutdown.clone());
        open.spawn(async move {
            let _permit = permit;
            let socket = Idle::new(socket, limits.idle_timeout);
            let (io, certificate) = match tls {
                None => (Either::Left(socket), None),
                Some(tls) => match tokio::time::timeout(limits.header_timeout, tls.acceptor().accept(socket)).await {
                    Ok(Ok(stream)) => {
                        let name = tls::client_name(stream.get_ref().1).map(CertificateName);
                        (Either::Right(stream), name)
                    }
                    Ok(Err(error)) => return tracing::debug!(%error, "http: TLS handshake failed"),
                    Err(_) => return tracing::debug!("http: no TLS handshake within the header timeout"),
                },
            };
            let service = hyper::service::service_fn(move |mut request: axum::http::Request<hyper::body::Incoming>| {
                let (app, certificate, audit) = (app.clone(), certificate.clone(), audit.clone());
                async move {
                    // hyper's buffer limit is approximate (a head that arrives in one read can
                    // pass it): the head is measured here, exactly.
                    if head_bytes(&request) > limits.max_header_bytes {
                        let (method, path) = (request.method().as_str(), request.uri().path());
                        audit.request(None, method, path, 431, std::time::Instant::now());
                        let message = format!(
                            "the request's headers are larger than [http] max_header_bytes = {}",
                            limits.max_header_bytes
                        );
                        return Ok::<_, std::convert::Infallible>(
                            (axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, message).into_response(),
                        );
                    }
                    if let Some(name) = certificate {
                        request.extensions_mut().insert(name);
                    }
                    app.oneshot(request.map(axum::body::Body::new)).await
                }
            });
            let io = TokioIo::new(io);
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                // hyper asserts a buffer of at least 8 KiB ([http] max_header_bytes is checked too).
                .max_buf_size(limits.max_header_bytes.max(8192))
                .serve_connection(io, service);
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = ended {
                tracing::debug!(%error, "http connection ended with an error");
            }
        });
    }
    open.close();
    open.wait().await;
    Ok(())
}

/// The size of a request's head as sent: its request line and each header line.
fn head_bytes<B>(request: &axum::http::Request<B>) -> usize {
    let line = request.method().as_str().len() + request.uri().to_string().len() + "  HTTP/1.1\r\n".len();
    line + request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + ": \r\n".len())
        .sum::<usize>()
}

/// A socket that fails with `TimedOut` once nothing has been read or written for `timeout`.
pub struct Idle {
    io: TcpStream,
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
}

impl Idle {
    pub fn new(io: TcpStream, timeout: Duration) -> Idle {
        Idle { io, timeout, timer: Box::pin(tokio::time::sleep(timeout)) }
    }

    fn moved(&mut self) {
        let next = Instant::now() + self.timeout;
        self.timer.as_mut().reset(next);
    }

    /// Pending I/O: still waiting, unless the connection has been idle too long.
    fn waiting<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "idle connection"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Idle {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.waiting(cx),
        }
    }
}

impl AsyncWrite for Idle {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write(cx, data) {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    self.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.waiting(cx),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Pending => self.waiting(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
