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
}

impl Side for UnbufferedClientConnection {
    type Data = rustls::client::ClientConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn common(&self) -> &CommonState {
        self
    }
}

impl Side for UnbufferedServerConnection {
    type Data = rustls::server::ServerConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn common(&self) -> &CommonState {
        self
    }
}

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

    pub(crate) fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.common().peer_certificates()
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
    fn encrypt(&mut self, cx: &mut Context<'_>, data: &[u8]) -> io::Result<usize> {
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
        let n = this.encrypt(cx, data)?;
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
            match this.encrypt(cx, part) {
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
mod tests {
    use std::time::Duration;

    use kite_identity::{SpiffeId, ca::Ca, tls::Credentials};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    struct Mesh {
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
        /// A client whose certificate is from another mesh.
        stranger: Arc<ClientConfig>,
    }

    fn mesh() -> Mesh {
        let ca = Ca::ephemeral("cluster.local").unwrap();
        let other = Ca::ephemeral("cluster.local").unwrap();
        // Issued by `issuer`, trusting `ca`'s root.
        let credentials = |issuer: &Ca, sa: &str| {
            let id = SpiffeId::new("cluster.local", "default", sa);
            let (chain, key) = issuer
                .issue(Some(&id), &[], Duration::from_secs(3600))
                .unwrap();
            Credentials::from_pem(&chain, &key, &ca.root_pem()).unwrap()
        };
        let server = credentials(&ca, "server");
        let alpn: &[&[u8]] = &[b"http/1.1"];
        Mesh {
            server: Arc::new(server.server_config(alpn).unwrap()),
            client: Arc::new(
                credentials(&ca, "client")
                    .client_config(vec![], alpn)
                    .unwrap(),
            ),
            stranger: Arc::new(
                credentials(&other, "client")
                    .client_config(vec![], alpn)
                    .unwrap(),
            ),
        }
    }

    fn name() -> ServerName<'static> {
        ServerName::try_from("mesh.local").unwrap()
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    /// Bytes that tell their position, so that a lost or reordered record shows.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
    }

    fn holds_nothing<S>(tls: &TlsStream<S>) -> bool {
        tls.incoming.capacity() == 0
            && tls.outgoing.capacity() == 0
            && tls.plaintext.capacity() == 0
    }

    #[tokio::test]
    async fn client_exchanges_with_tokio_rustls_server_and_idles_without_buffers() {
        let mesh = mesh();
        let (c, s) = pair().await;
        let acceptor = tokio_rustls::TlsAcceptor::from(mesh.server.clone());
        let server = tokio::spawn(async move {
            let mut tls = acceptor.accept(s).await.unwrap();
            // Echo 1 MiB back as it comes, then close cleanly.
            let mut got = vec![0u8; 1 << 20];
            tls.read_exact(&mut got).await.unwrap();
            tls.write_all(&got).await.unwrap();
            tls.shutdown().await.unwrap();
            got
        });
        let mut tls = connect(mesh.client.clone(), name(), c).await.unwrap();
        assert_eq!(tls.alpn_protocol(), Some(&b"http/1.1"[..]));
        let certs = tls.peer_certificates().unwrap();
        assert_eq!(
            kite_identity::tls::spiffe_ids(&certs[0])[0].to_string(),
            "spiffe://cluster.local/ns/default/sa/server"
        );
        let sent = pattern(1 << 20, 7);
        tls_write(&mut tls, &sent).await.unwrap();
        let mut back = Vec::new();
        tls.read_to_end(&mut back).await.unwrap();
        assert_eq!(server.await.unwrap(), sent);
        assert!(back == sent, "echoed bytes differ");
        assert!(
            holds_nothing(&tls),
            "a connection that has read everything holds buffers"
        );
    }

    async fn tls_write<S: Side>(tls: &mut TlsStream<S>, data: &[u8]) -> io::Result<()> {
        tls.write_all(data).await?;
        tls.flush().await
    }

    #[tokio::test]
    async fn server_serves_tokio_rustls_client_and_sees_its_identity() {
        let mesh = mesh();
        let (c, s) = pair().await;
        let connector = tokio_rustls::TlsConnector::from(mesh.client.clone());
        let client = tokio::spawn(async move {
            let mut tls = connector.connect(name(), c).await.unwrap();
            // The request goes out with the client's last handshake flight.
            tls.write_all(b"ping").await.unwrap();
            let mut pong = [0u8; 4];
            tls.read_exact(&mut pong).await.unwrap();
            // A key update the peer must answer before it writes again.
            tls.get_mut().1.refresh_traffic_keys().unwrap();
            tls.write_all(&pattern(100_000, 3)).await.unwrap();
            let mut back = vec![0u8; 100_000];
            tls.read_exact(&mut back).await.unwrap();
            tls.shutdown().await.unwrap();
            let mut rest = Vec::new();
            tls.read_to_end(&mut rest).await.unwrap();
            (pong, back, rest)
        });
        let mut tls = accept(mesh.server.clone(), s).await.unwrap();
        let certs = tls.peer_certificates().unwrap();
        assert_eq!(
            kite_identity::tls::spiffe_ids(&certs[0])[0].to_string(),
            "spiffe://cluster.local/ns/default/sa/client"
        );
        let mut ping = [0u8; 4];
        tls.read_exact(&mut ping).await.unwrap();
        assert_eq!(&ping, b"ping");
        tls_write(&mut tls, b"pong").await.unwrap();
        assert!(holds_nothing(&tls));
        let mut got = vec![0u8; 100_000];
        tls.read_exact(&mut got).await.unwrap();
        assert!(got == pattern(100_000, 3));
        tls_write(&mut tls, &got).await.unwrap();
        // The client's close_notify ends our reads cleanly.
        let mut rest = Vec::new();
        tls.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        tls.shutdown().await.unwrap();
        let (pong, back, rest) = client.await.unwrap();
        assert_eq!(&pong, b"pong");
        assert!(back == got);
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn both_ends_kite_and_reads_smaller_than_a_record() {
        let mesh = mesh();
        let (c, s) = pair().await;
        let server = tokio::spawn(async move {
            let mut tls = accept(mesh.server.clone(), s).await.unwrap();
            let mut all = Vec::new();
            let mut small = [0u8; 7];
            loop {
                let n = tls.read(&mut small).await.unwrap();
                if n == 0 {
                    break;
                }
                all.extend_from_slice(&small[..n]);
            }
            all
        });
        let mut tls = connect(mesh.client.clone(), name(), c).await.unwrap();
        let sent = pattern(50_000, 11);
        tls_write(&mut tls, &sent).await.unwrap();
        tls.shutdown().await.unwrap();
        assert!(server.await.unwrap() == sent);
    }

    #[tokio::test]
    async fn vectored_writes_keep_their_order() {
        let mesh = mesh();
        let (c, s) = pair().await;
        let acceptor = tokio_rustls::TlsAcceptor::from(mesh.server.clone());
        let server = tokio::spawn(async move {
            let mut tls = acceptor.accept(s).await.unwrap();
            let mut all = Vec::new();
            tls.read_to_end(&mut all).await.unwrap();
            all
        });
        let mut tls = connect(mesh.client.clone(), name(), c).await.unwrap();
        assert!(tls.is_write_vectored());
        let head = pattern(200, 1);
        let body = pattern(100_000, 2);
        let tail = pattern(10, 3);
        // A small message (one record), then a large one (each part
        // encrypted where it lies, in as many writes as it takes).
        let messages: [&[&[u8]]; 2] = [&[&head, &[], &tail], &[&head, &body, &tail]];
        let mut sent = Vec::new();
        for parts in messages {
            let all = parts.concat();
            let mut done = 0;
            while done < all.len() {
                // The parts from `done` on, as hyper would pass them.
                let mut skip = done;
                let slices: Vec<io::IoSlice<'_>> = parts
                    .iter()
                    .map(|p| {
                        let rest = &p[skip.min(p.len())..];
                        skip -= skip.min(p.len());
                        io::IoSlice::new(rest)
                    })
                    .collect();
                let n =
                    std::future::poll_fn(|cx| Pin::new(&mut tls).poll_write_vectored(cx, &slices))
                        .await
                        .unwrap();
                assert!(n > 0);
                done += n;
            }
            sent.extend_from_slice(&all);
        }
        tls.shutdown().await.unwrap();
        assert!(server.await.unwrap() == sent, "bytes lost or reordered");
    }

    #[tokio::test]
    async fn end_without_close_notify_is_an_error() {
        let mesh = mesh();
        let (c, s) = pair().await;
        let acceptor = tokio_rustls::TlsAcceptor::from(mesh.server.clone());
        let server = tokio::spawn(async move {
            let tls = acceptor.accept(s).await.unwrap();
            let (mut tcp, _) = tls.into_inner();
            tcp.write_all(b"not a record").await.ok();
            drop(tcp);
        });
        let mut tls = connect(mesh.client.clone(), name(), c).await.unwrap();
        server.await.unwrap();
        let mut buf = Vec::new();
        let err = tls.read_to_end(&mut buf).await.unwrap_err();
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_certificate_from_another_mesh_is_refused_with_an_alert() {
        let mesh = mesh();
        let (c, s) = pair().await;
        let connector = tokio_rustls::TlsConnector::from(mesh.stranger.clone());
        let client = tokio::spawn(async move {
            // TLS 1.3: the client's side is done before the server has
            // checked its certificate; the alert arrives on the first read.
            let mut tls = connector.connect(name(), c).await?;
            let mut buf = [0u8; 1];
            tls.read(&mut buf).await
        });
        let err = accept(mesh.server.clone(), s)
            .await
            .err()
            .expect("handshake refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        let err = client.await.unwrap().unwrap_err();
        assert!(
            err.to_string().contains("alert"),
            "the client saw no alert: {err}"
        );
    }
}
