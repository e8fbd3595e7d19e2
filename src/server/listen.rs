//! The server's listener: TLS (the default), or plain TCP (`--insecure-http` on loopback, and
//! `berth up`). Handshakes run beside the accept loop, so a slow or silent client holds up no
//! one else. Each connection carries its [`Peer`]: the address, and the fingerprint of the
//! client certificate it presented (a node's), which the agent API checks.

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);
/// Connections handshaken but not yet taken by the server.
const BACKLOG: usize = 256;

/// Who is at the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub address: SocketAddr,
    /// The fingerprint of the client certificate presented (verified against the CA).
    pub certificate: Option<String>,
}

impl Connected<IncomingStream<'_, Incoming>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Incoming>) -> Peer {
        stream.remote_addr().clone()
    }
}

/// The fingerprint of the client certificate the request's connection presented.
pub struct Presented(pub Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Presented {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Presented, Self::Rejection> {
        let peer = parts.extensions.get::<axum::extract::ConnectInfo<Peer>>();
        Ok(Presented(peer.and_then(|info| info.0.certificate.clone())))
    }
}

/// A connection, in the clear or in TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The server's listening socket, with TLS when it has a configuration.
pub struct Incoming {
    local: SocketAddr,
    accepted: tokio::sync::mpsc::Receiver<(Stream, Peer)>,
    task: tokio::task::AbortHandle,
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Incoming {
    pub fn new(listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> std::io::Result<Incoming> {
        let local = listener.local_addr()?;
        let (sender, accepted) = tokio::sync::mpsc::channel(BACKLOG);
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(async move {
            loop {
                let (socket, address) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors, mostly: wait for some to close.
                        tracing::debug!(%error, "Accepting a connection failed.");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = socket.set_nodelay(true);
                let Some(acceptor) = acceptor.clone() else {
                    if sender.send((Stream::Plain(socket), Peer { address, certificate: None })).await.is_err() {
                        return;
                    }
                    continue;
                };
                let sender = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(socket)).await {
                        Ok(Ok(stream)) => {
                            let certificate = crate::tls::peer_fingerprint(stream.get_ref().1);
                            let _ = sender.send((Stream::Tls(Box::new(stream)), Peer { address, certificate })).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%address, %error, "A TLS handshake failed."),
                        Err(_) => tracing::debug!(%address, "A TLS handshake did not finish in time."),
                    }
                });
            }
        })
        .abort_handle();
        Ok(Incoming { local, accepted, task })
    }
}

impl axum::serve::Listener for Incoming {
    type Io = Stream;
    type Addr = Peer;

    async fn accept(&mut self) -> (Stream, Peer) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Peer> {
        Ok(Peer { address: self.local, certificate: None })
    }
}
