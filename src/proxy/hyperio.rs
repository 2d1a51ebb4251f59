//! hyper's I/O traits over a plaintext compio socket, without unsafe code: compio's own
//! buffered compat stream does the completion-based reads and writes; a read hands hyper the
//! bytes already in its buffer (`put_slice`: one copy, no zero-filling of hyper's buffer, no
//! per-call thread check). Measured against cyper-core's `HyperStream` in docs/benchmarks.md;
//! TLS connections keep cyper-core's stream.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use compio::io::compat::AsyncStream;
use compio::net::TcpStream;
use futures_util::{AsyncBufRead, AsyncWrite};

/// Read buffer per connection: large enough that a bulk body moves in few reads.
const BUFFER: usize = 64 * 1024;

/// A plaintext TCP connection for hyper.
pub struct PlainIo(Pin<Box<AsyncStream<TcpStream>>>);

impl PlainIo {
    pub fn new(stream: TcpStream) -> Self {
        PlainIo(Box::pin(AsyncStream::with_capacity(BUFFER, stream)))
    }
}

/// A stream whose first bytes were already read (by the HTTP/1.1 path, before it handed the
/// connection to hyper): they are read again first.
pub struct Prefixed<T> {
    prefix: Vec<u8>,
    at: usize,
    inner: T,
}

impl<T> Prefixed<T> {
    pub fn new(prefix: Vec<u8>, inner: T) -> Self {
        Prefixed {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.prefix.len() {
            let n = (this.prefix.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

impl hyper::rt::Read for PlainIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let data = ready!(self.0.as_mut().poll_fill_buf(cx))?;
        let n = data.len().min(buf.remaining());
        buf.put_slice(&data[..n]);
        self.0.as_mut().consume(n);
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for PlainIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.as_mut().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.0.as_mut().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_close(cx)
    }
}
