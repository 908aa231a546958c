//! L4 proxying: accept, pick an endpoint (over mutual TLS when it has a
//! sidecar), copy bytes both ways.

use std::sync::Arc;

use tracing::debug;

use crate::router::Shared;

/// One of the weighted clusters, in proportion to its weight.
pub(crate) fn pick(clusters: &[(String, u32)]) -> String {
    let total: u64 = clusters.iter().map(|(_, w)| u64::from(*w)).sum();
    let mut at = fastrand::u64(..total.max(1));
    for (name, weight) in clusters {
        if at < u64::from(*weight) {
            return name.clone();
        }
        at -= u64::from(*weight);
    }
    clusters.first().map(|(n, _)| n.clone()).unwrap_or_default()
}

pub(crate) async fn proxy<S>(mut downstream: S, cluster: String, shared: Arc<Shared>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let state = shared.state.borrow().clone();
    let Some(c) = state.clusters.get(&cluster) else {
        debug!(%cluster, "no such cluster; closing");
        return;
    };
    let rt = shared.upstreams.get(c);
    let endpoints = rt.endpoints(&state).await;
    let Some(addr) = rt.pick(&endpoints, &[], None) else {
        debug!(%cluster, "no endpoint; closing");
        return;
    };
    let _guard = rt.start(addr);
    let mut upstream = match rt.connect_tcp(addr, rt.secure(&endpoints, addr)).await {
        Ok(s) => s,
        Err(error) => {
            debug!(%cluster, %addr, %error, "upstream connection failed");
            rt.record(
                addr,
                crate::upstream::Outcome::ConnectFailure,
                endpoints.len(),
            );
            return;
        }
    };
    match tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
        Ok((up, down)) => debug!(sent = up, received = down, "tcp connection closed"),
        Err(e) => debug!(error = %e, "tcp connection failed"),
    }
}

/// The clusters of the SNI route whose names admit the ClientHello's server
/// name (exactly, or `*.suffix`), read without consuming the handshake.
pub(crate) async fn sni_route<'a>(
    stream: &tokio::net::TcpStream,
    routes: &'a [crate::config::SniRoute],
) -> Option<&'a [(String, u32)]> {
    let sni = peek_sni(stream).await?;
    let admits = |name: &str| match name.strip_prefix('*') {
        Some(suffix) => sni.ends_with(suffix) && sni.len() > suffix.len(),
        None => name.eq_ignore_ascii_case(&sni),
    };
    let route = routes.iter().find(|r| r.names.iter().any(|n| admits(n)));
    debug!(%sni, matched = route.is_some(), "SNI");
    route.map(|r| r.clusters.as_slice())
}

async fn peek_sni(stream: &tokio::net::TcpStream) -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        match client_hello_sni(&buf[..n]) {
            Parsed::Sni(name) => return name,
            Parsed::Incomplete if n > 0 && n < buf.len() => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            _ => return None,
        }
    }
}

#[derive(Debug, PartialEq)]
enum Parsed {
    Sni(Option<String>),
    Incomplete,
    NotTls,
}

/// The server name of a TLS ClientHello (RFC 8446 §4.1.2, RFC 6066 §3).
fn client_hello_sni(b: &[u8]) -> Parsed {
    let Some(&first) = b.first() else {
        return Parsed::Incomplete;
    };
    if first != 0x16 {
        return Parsed::NotTls;
    }
    let Some(record_len) = b
        .get(3..5)
        .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
    else {
        return Parsed::Incomplete;
    };
    let Some(hello) = b.get(5..5 + record_len) else {
        return Parsed::Incomplete;
    };
    parse_hello(hello).map_or(Parsed::NotTls, Parsed::Sni)
}

fn parse_hello(h: &[u8]) -> Option<Option<String>> {
    // Handshake type 1 (ClientHello), 3-byte length, version, random.
    if *h.first()? != 1 {
        return None;
    }
    let mut at = 4 + 2 + 32;
    let take = |at: &mut usize, len_bytes: usize| -> Option<usize> {
        let len = match len_bytes {
            1 => usize::from(*h.get(*at)?),
            _ => usize::from(u16::from_be_bytes([*h.get(*at)?, *h.get(*at + 1)?])),
        };
        *at += len_bytes + len;
        Some(len)
    };
    take(&mut at, 1)?; // session id
    take(&mut at, 2)?; // cipher suites
    take(&mut at, 1)?; // compression methods
    let ext_len = take(&mut at, 2)?;
    let mut ext = at - ext_len;
    while ext + 4 <= at {
        let kind = u16::from_be_bytes([*h.get(ext)?, *h.get(ext + 1)?]);
        let len = usize::from(u16::from_be_bytes([*h.get(ext + 2)?, *h.get(ext + 3)?]));
        let data = h.get(ext + 4..ext + 4 + len)?;
        if kind == 0 {
            // server_name_list: 2-byte length, then (type 0, 2-byte length, name).
            let name_len = usize::from(u16::from_be_bytes([*data.get(3)?, *data.get(4)?]));
            let name = data.get(5..5 + name_len)?;
            return Some(Some(String::from_utf8_lossy(name).to_ascii_lowercase()));
        }
        ext += 4 + len;
    }
    Some(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real ClientHello, as rustls writes it for `sni`.
    fn client_hello(sni: &str) -> Vec<u8> {
        let roots = rustls::RootCertStore::empty();
        let config = rustls::ClientConfig::builder_with_provider(kite_identity::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut conn = rustls::ClientConnection::new(
            std::sync::Arc::new(config),
            sni.to_owned().try_into().unwrap(),
        )
        .unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn reads_the_server_name() {
        let hello = client_hello("nginx.example.com");
        assert_eq!(
            client_hello_sni(&hello),
            Parsed::Sni(Some("nginx.example.com".to_owned()))
        );
        assert_eq!(
            client_hello_sni(&hello[..hello.len() - 1]),
            Parsed::Incomplete
        );
        assert_eq!(client_hello_sni(b"GET / HTTP/1.1\r\n"), Parsed::NotTls);
    }
}
