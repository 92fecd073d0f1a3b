//! Whether an HTTP/1.1 connection is between requests, so that hyper's
//! header timeout can be told apart: a client that began a request and
//! did not finish its headers in time (slowloris), or a keep-alive
//! connection that stayed idle past the same deadline (a normal client
//! being tidied away).
//!
//! hyper reports both as the same timeout error. [`Watched`] wraps the
//! connection's socket and notes what happened last: bytes read from the
//! client (a request is under way) or bytes written to it (an answer went
//! out, so, with no pipelining, the connection is between requests). A
//! pipelined request whose bytes all arrived before the answer to the one
//! ahead of it is the exception: if its headers were incomplete and no
//! byte followed, its timeout is counted as idle.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A socket that records whether its peer is mid-request.
#[derive(Debug)]
pub struct Watched<S> {
    inner: S,
    mid_request: Arc<AtomicBool>,
}

impl<S> Watched<S> {
    /// Wrap `inner`; the returned flag is true while a request is under
    /// way (bytes read since the last answer) and false between requests.
    pub fn new(inner: S) -> (Watched<S>, Arc<AtomicBool>) {
        let mid_request = Arc::new(AtomicBool::new(false));
        let watched = Watched {
            inner,
            mid_request: Arc::clone(&mid_request),
        };
        (watched, mid_request)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.mid_request.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.mid_request.store(false, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.mid_request.store(false, Ordering::Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reading_starts_a_request_and_answering_ends_it() {
        let (client, server) = tokio::io::duplex(64);
        let (mut server, mid_request) = Watched::new(server);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        assert!(!mid_request.load(Ordering::Relaxed));

        client_write.write_all(b"GET / HT").await.unwrap();
        let mut buf = [0u8; 8];
        server.read_exact(&mut buf).await.unwrap();
        assert!(mid_request.load(Ordering::Relaxed), "half a request read");

        server.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        assert!(!mid_request.load(Ordering::Relaxed), "answered");
        let mut answer = [0u8; 19];
        client_read.read_exact(&mut answer).await.unwrap();

        client_write.write_all(b"G").await.unwrap();
        server.read_exact(&mut buf[..1]).await.unwrap();
        assert!(
            mid_request.load(Ordering::Relaxed),
            "the next request began"
        );
    }
}
