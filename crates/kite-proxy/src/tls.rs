//! TLS on rustls's unbuffered API, so that a connection holds buffers only
//! while bytes are in them. tokio-rustls keeps rustls's 4 KiB read buffer
//! for the connection's whole life, which made it the largest allocation of
//! every mTLS connection between sidecars waiting for its next request or
//! response (`bench/results/`, the 1,000-connection sample).
//!
//! Bytes read wait in `incoming` until they make a whole record, records
//! rustls has encoded wait in `outgoing` until the socket takes them, and
//! decrypted bytes the reader had no room for wait in `plaintext`. Each is
//! freed once empty. A read with nothing pending goes through the stack,
//! so a connection waiting for bytes holds none of them.

use std::{
    io,
    mem::MaybeUninit,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use rustls::{
    ClientConfig, CommonState, ServerConfig,
    client::UnbufferedClientConnection,
    pki_types::{CertificateDer, ServerName},
    server::UnbufferedServerConnection,
    unbuffered::{
        ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError,
        UnbufferedStatus, WriteTraffic,
    },
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

/// The most read from the socket at once into the stack: a whole TLS
/// record (16 KiB of plaintext and its overhead).
const READ_CHUNK: usize = 16 * 1024 + 256;

/// The least room in `incoming` worth reading into directly.
const MIN_READ: usize = 4096;

/// The most plaintext encrypted per write, which bounds `outgoing`.
const WRITE_CHUNK: usize = 64 * 1024;

/// Room for one record's header, nonce, content type and tag (TLS 1.2:
/// 5 + 8 + 16; TLS 1.3: 5 + 1 + 16), with some to spare.
const RECORD_OVERHEAD: usize = 64;

/// rustls's maximum plaintext per record.
const MAX_FRAGMENT: usize = 16 * 1024;

/// A client or server connection, as both offer the same unbuffered API
/// under different types.
pub(crate) trait Side: Send + Unpin + 'static {
    type Data;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
    fn common(&self) -> &CommonState;
    fn take_peer_certificates(&mut self) -> Option<Vec<CertificateDer<'static>>>;
}

/// `process_tls_records` is an inherent method of each side's type.
macro_rules! side {
    ($conn:ty, $data:ty) => {
        impl Side for $conn {
            type Data = $data;
            fn process<'c, 'i>(
                &'c mut self,
                incoming: &'i mut [u8],
            ) -> UnbufferedStatus<'c, 'i, Self::Data> {
                self.process_tls_records(incoming)
            }
            fn common(&self) -> &CommonState {
                self
            }
            fn take_peer_certificates(&mut self) -> Option<Vec<CertificateDer<'static>>> {
                (**self).take_peer_certificates()
            }
        }
    };
}

side!(
    UnbufferedClientConnection,
    rustls::client::ClientConnectionData
);
side!(
    UnbufferedServerConnection,
    rustls::server::ServerConnectionData
);

pub(crate) type ClientTls = TlsStream<UnbufferedClientConnection>;
pub(crate) type ServerTls = TlsStream<UnbufferedServerConnection>;

/// Completes a client handshake over `io`.
pub(crate) async fn connect(
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    io: TcpStream,
) -> io::Result<ClientTls> {
    let conn = UnbufferedClientConnection::new(config, name).map_err(tls_error)?;
    TlsStream::new(io, conn).handshake().await
}

/// Completes a server handshake over `io`.
pub(crate) async fn accept(config: Arc<ServerConfig>, io: TcpStream) -> io::Result<ServerTls> {
    let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
    TlsStream::new(io, conn).handshake().await
}

pub(crate) struct TlsStream<S> {
    io: TcpStream,
    conn: S,
    /// Bytes read and not yet a whole record.
    incoming: Vec<u8>,
    /// Records not yet written to the socket.
    outgoing: Vec<u8>,
    /// Decrypted bytes not yet read, from `consumed` on.
    plaintext: Vec<u8>,
    consumed: usize,
    /// The peer's close_notify has arrived: reads end here.
    peer_closed: bool,
    /// The socket has reached its end.
    eof: bool,
    /// Our close_notify has been queued.
    closing: bool,
}

/// What `process` is asked to do once rustls lets the application write.
enum Op<'a, 'b> {
    /// Decrypted bytes go here first; the rest waits in `plaintext`.
    Read(&'a mut ReadBuf<'b>),
    Handshake,
    Write(&'a [u8]),
    Close,
}

/// Where `process` stopped.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Step {
    /// Nothing more can happen without more bytes from the peer.
    NeedRead,
    /// `Op::Write` took this many bytes (`Op::Close`: 0).
    Written(usize),
    /// Both sides have sent close_notify.
    Closed,
}

impl<S: Side> TlsStream<S> {
    fn new(io: TcpStream, conn: S) -> Self {
        Self {
            io,
            conn,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            plaintext: Vec::new(),
            consumed: 0,
            peer_closed: false,
            eof: false,
            closing: false,
        }
    }

    /// The peer's certificate chain, once: rustls would keep it (0.9 KiB
    /// for a mesh certificate and its root) for the connection's life, and
    /// a sidecar needs it once, for the peer's identity
    /// (`vendor/rustls/KITE.md`).
    pub(crate) fn take_peer_certificates(&mut self) -> Option<Vec<CertificateDer<'static>>> {
        self.conn.take_peer_certificates()
    }

    pub(crate) fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.common().alpn_protocol()
    }

    async fn handshake(mut self) -> io::Result<Self> {
        std::future::poll_fn(|cx| self.poll_handshake(cx)).await?;
        Ok(self)
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_send(cx))?;
            let step = match self.process(Op::Handshake) {
                Ok(step) => step,
                Err(e) => {
                    self.send_alert();
                    return Poll::Ready(Err(e));
                }
            };
            if !self.outgoing.is_empty() {
                continue;
            }
            if !self.conn.common().is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if step == Step::Closed || self.eof {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "tls handshake eof",
                )));
            }
            ready!(self.poll_fill(cx))?;
        }
    }

    /// Runs rustls over what has been read until it needs more bytes or
    /// `op` is done: decrypts into `op`'s buffer or `plaintext`, and queues
    /// records to send in `outgoing`.
    fn process(&mut self, mut op: Op<'_, '_>) -> io::Result<Step> {
        let Self {
            conn,
            incoming,
            outgoing,
            plaintext,
            peer_closed,
            ..
        } = self;
        let mut done: Option<Step> = None;
        // Records rustls queues while encrypting (a key update, sealed with
        // the keys before it) must precede what was just encrypted.
        let mut insert_at: Option<usize> = None;
        loop {
            let UnbufferedStatus { mut discard, state } = conn.process(incoming);
            // rustls keeps positions in `incoming` between calls, so what it
            // has consumed is discarded whatever happened, errors included.
            let step: io::Result<Option<Step>> = match state {
                Err(e) => Err(tls_error(e)),
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    let mut result = Ok(None);
                    while let Some(record) = traffic.next_record() {
                        let record = match record {
                            Ok(record) => record,
                            Err(e) => {
                                result = Err(tls_error(e));
                                break;
                            }
                        };
                        discard += record.discard;
                        let mut payload = record.payload;
                        if let Op::Read(buf) = &mut op {
                            let n = buf.remaining().min(payload.len());
                            buf.put_slice(&payload[..n]);
                            payload = &payload[n..];
                        }
                        plaintext.extend_from_slice(payload);
                    }
                    result
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => match insert_at {
                    Some(at) => {
                        let mut record = Vec::new();
                        encode(&mut data, &mut record).map(|()| {
                            outgoing.splice(at..at, record.iter().copied());
                            insert_at = Some(at + record.len());
                            None
                        })
                    }
                    None => encode(&mut data, outgoing).map(|()| None),
                },
                // The records stay in `outgoing`, in order, until the socket
                // takes them.
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    Ok(None)
                }
                Ok(ConnectionState::BlockedHandshake) => Ok(Some(done.unwrap_or(Step::NeedRead))),
                Ok(ConnectionState::PeerClosed) => {
                    *peer_closed = true;
                    Ok(None)
                }
                Ok(ConnectionState::Closed) => {
                    *peer_closed = true;
                    Ok(Some(done.unwrap_or(Step::Closed)))
                }
                Ok(ConnectionState::WriteTraffic(mut traffic)) => match (&op, done) {
                    (_, Some(step)) => Ok(Some(step)),
                    (Op::Read(_) | Op::Handshake, None) => Ok(Some(Step::NeedRead)),
                    (Op::Write(data), None) => {
                        insert_at = Some(outgoing.len());
                        encrypt(&mut traffic, data, outgoing).map(|n| {
                            done = Some(Step::Written(n));
                            None
                        })
                    }
                    (Op::Close, None) => {
                        insert_at = Some(outgoing.len());
                        close_notify(&mut traffic, outgoing).map(|()| {
                            done = Some(Step::Written(0));
                            None
                        })
                    }
                },
                Ok(other) => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected TLS state: {other:?}"),
                )),
            };
            if discard == incoming.len() {
                *incoming = Vec::new();
            } else {
                incoming.drain(..discard);
            }
            if let Some(step) = step? {
                return Ok(step);
            }
        }
    }

    /// After a TLS error rustls has queued an alert saying why; it goes out
    /// if the socket takes it at once.
    fn send_alert(&mut self) {
        while let Ok(ConnectionState::EncodeTlsData(mut data)) =
            self.conn.process(&mut self.incoming).state
        {
            if encode(&mut data, &mut self.outgoing).is_err() {
                break;
            }
        }
        let _ = self.io.try_write(&self.outgoing);
        self.outgoing = Vec::new();
    }

    /// Reads what the socket has into `incoming`. With nothing pending the
    /// read goes through the stack and `incoming` is allocated to fit, or,
    /// when the read filled the stack (a large body on its way), with room
    /// for the next; with part of a record pending, reads go straight into
    /// the room `incoming` has.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if !self.incoming.is_empty() && self.incoming.capacity() - self.incoming.len() >= MIN_READ {
            loop {
                ready!(self.io.poll_read_ready(cx))?;
                match self.io.try_read_buf(&mut self.incoming) {
                    Ok(n) => return Poll::Ready(Ok(self.note_read(n))),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        }
        let mut stack = [const { MaybeUninit::<u8>::uninit() }; READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut stack);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        let read = buf.filled();
        if read.len() == READ_CHUNK {
            self.incoming.reserve(2 * READ_CHUNK);
        }
        self.incoming.extend_from_slice(read);
        Poll::Ready(Ok(self.note_read(read.len())))
    }

    fn note_read(&mut self, n: usize) -> usize {
        if n == 0 {
            self.eof = true;
        }
        n
    }

    /// Encrypts what of `data` fits in one write into `outgoing`.
    fn seal(&mut self, cx: &mut Context<'_>, data: &[u8]) -> io::Result<usize> {
        let had_plaintext = self.plaintext.len();
        let step = self.process(Op::Write(data))?;
        if self.plaintext.len() > had_plaintext {
            // Decrypted here, not in poll_read: the reader may be waiting.
            cx.waker().wake_by_ref();
        }
        match step {
            Step::Written(n) => Ok(n),
            Step::Closed => Err(io::ErrorKind::BrokenPipe.into()),
            Step::NeedRead => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "TLS handshake not complete",
            )),
        }
    }

    /// Writes `outgoing` to the socket, and frees it once written.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.outgoing.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.outgoing))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n == self.outgoing.len() {
                self.outgoing = Vec::new();
            } else {
                self.outgoing.drain(..n);
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Sends what is queued without waiting for the socket; a write
    /// waiting on it registers the task.
    fn try_send(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.poll_send(cx) {
            Poll::Ready(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    fn take_plaintext(&mut self, buf: &mut ReadBuf<'_>) {
        let rest = &self.plaintext[self.consumed..];
        let n = buf.remaining().min(rest.len());
        buf.put_slice(&rest[..n]);
        self.consumed += n;
        if self.consumed == self.plaintext.len() {
            self.plaintext = Vec::new();
            self.consumed = 0;
        }
    }
}

impl<S: Side> AsyncRead for TlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.consumed < this.plaintext.len() {
            this.take_plaintext(buf);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        loop {
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            // A key update's answer, queued while reading, goes out now.
            this.try_send(cx)?;
            this.process(Op::Read(buf))?;
            if buf.filled().len() > before || this.consumed < this.plaintext.len() {
                if buf.filled().len() == before {
                    this.take_plaintext(buf);
                }
                return Poll::Ready(Ok(()));
            }
            if this.peer_closed {
                continue;
            }
            if this.eof {
                // As rustls's own reader: without close_notify the data may
                // have been cut short.
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed connection without sending TLS close_notify",
                )));
            }
            ready!(this.poll_fill(cx))?;
        }
    }
}

impl<S: Side> AsyncWrite for TlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // What earlier writes queued goes first, which bounds `outgoing`.
        ready!(this.poll_send(cx))?;
        let n = this.seal(cx, data)?;
        this.try_send(cx)?;
        Poll::Ready(Ok(n))
    }

    /// hyper then queues a message's head and body chunks as they are
    /// instead of copying them into one buffer: a small message still goes
    /// in one record, a large body is encrypted where it lies.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if bufs.iter().filter(|b| !b.is_empty()).count() < 2 {
            let one = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            return self.poll_write(cx, one);
        }
        if total <= MAX_FRAGMENT {
            let mut joined = Vec::with_capacity(total);
            for b in bufs {
                joined.extend_from_slice(b);
            }
            return self.poll_write(cx, &joined);
        }
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        let mut written = 0;
        for b in bufs.iter().filter(|b| !b.is_empty()) {
            let room = WRITE_CHUNK.saturating_sub(written);
            if room == 0 {
                break;
            }
            let part = &b[..b.len().min(room)];
            match this.seal(cx, part) {
                Ok(n) => {
                    written += n;
                    if n < part.len() {
                        break;
                    }
                }
                Err(e) if written == 0 => return Poll::Ready(Err(e)),
                // What was encrypted goes out; the error shows on the next write.
                Err(_) => break,
            }
        }
        this.try_send(cx)?;
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closing {
            this.closing = true;
            // A connection rustls has already closed or failed has nothing
            // more to say; the socket still shuts down.
            let _ = this.process(Op::Close);
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// Appends a record rustls has made to `out`.
fn encode<D>(data: &mut EncodeTlsData<'_, D>, out: &mut Vec<u8>) -> io::Result<()> {
    let required = match data.encode(&mut []) {
        Ok(_) => return Ok(()),
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
            required_size
        }
        Err(e) => return Err(io::Error::other(e.to_string())),
    };
    let start = out.len();
    out.resize(start + required, 0);
    let n = data
        .encode(&mut out[start..])
        .map_err(|e| io::Error::other(e.to_string()))?;
    out.truncate(start + n);
    Ok(())
}

/// Encrypts up to `WRITE_CHUNK` of `data` onto `out`; returns how much.
fn encrypt<D>(
    traffic: &mut WriteTraffic<'_, D>,
    data: &[u8],
    out: &mut Vec<u8>,
) -> io::Result<usize> {
    let data = &data[..data.len().min(WRITE_CHUNK)];
    let start = out.len();
    let records = data.len().div_ceil(MAX_FRAGMENT).max(1);
    out.resize(start + data.len() + records * RECORD_OVERHEAD, 0);
    let n = match traffic.encrypt(data, &mut out[start..]) {
        Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
            out.resize(start + required_size, 0);
            traffic.encrypt(data, &mut out[start..])
        }
        other => other,
    };
    match n {
        Ok(n) => {
            out.truncate(start + n);
            Ok(data.len())
        }
        Err(e) => {
            out.truncate(start);
            Err(io::Error::other(e.to_string()))
        }
    }
}

fn close_notify<D>(traffic: &mut WriteTraffic<'_, D>, out: &mut Vec<u8>) -> io::Result<()> {
    let start = out.len();
    out.resize(start + RECORD_OVERHEAD, 0);
    match traffic.queue_close_notify(&mut out[start..]) {
        Ok(n) => {
            out.truncate(start + n);
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(io::Error::other(e.to_string()))
        }
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

#[cfg(test)]
mod tests;
