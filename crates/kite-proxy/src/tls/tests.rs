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
    tls.incoming.capacity() == 0 && tls.outgoing.capacity() == 0 && tls.plaintext.capacity() == 0
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
    let certs = tls.take_peer_certificates().unwrap();
    assert!(
        tls.take_peer_certificates().is_none(),
        "the chain is handed over once"
    );
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
    let certs = tls.take_peer_certificates().unwrap();
    assert!(
        tls.take_peer_certificates().is_none(),
        "the chain is handed over once"
    );
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
            let n = std::future::poll_fn(|cx| Pin::new(&mut tls).poll_write_vectored(cx, &slices))
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

/// A reconnecting sidecar resumes from the ticket it was given, the server
/// keeping no session, and the server still learns the client's identity.
#[tokio::test]
async fn a_reconnect_resumes_from_a_ticket_with_the_clients_identity() {
    let mesh = mesh();
    let server = mesh.server.clone();
    let serve = |s: TcpStream| {
        let server = server.clone();
        async move {
            let mut tls = accept(server, s).await.unwrap();
            let kind = tls.conn.common().handshake_kind();
            let certs = tls.take_peer_certificates().unwrap();
            let mut ping = [0u8; 4];
            tls.read_exact(&mut ping).await.unwrap();
            tls_write(&mut tls, b"pong").await.unwrap();
            tls.shutdown().await.unwrap();
            (
                kind,
                kite_identity::tls::spiffe_ids(&certs[0])[0].to_string(),
            )
        }
    };
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let (c, s) = pair().await;
        let server = tokio::spawn(serve(s));
        let mut tls = connect(mesh.client.clone(), name(), c).await.unwrap();
        let client_kind = tls.conn.common().handshake_kind();
        tls_write(&mut tls, b"ping").await.unwrap();
        // The tickets come before the reply.
        let mut pong = Vec::new();
        tls.read_to_end(&mut pong).await.unwrap();
        assert_eq!(pong, b"pong");
        let (server_kind, identity) = server.await.unwrap();
        assert_eq!(identity, "spiffe://cluster.local/ns/default/sa/client");
        assert_eq!(client_kind, server_kind);
        kinds.push(server_kind);
    }
    use rustls::HandshakeKind::{Full, Resumed};
    assert_eq!(kinds, [Some(Full), Some(Resumed)]);
    assert!(
        !mesh.server.session_storage.can_cache(),
        "sessions are the client's to keep"
    );
}
