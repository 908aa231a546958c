use std::{net::IpAddr, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

use crate::env::Env;

/// The outbound HTTP client of the BookInfo apps. Like the upstream apps it
/// opens a new connection per call (no pooling) and honours `HTTP_PROXY` and
/// `NO_PROXY`, which is how the local mesh captures their traffic.
#[derive(Clone, Debug, Default)]
pub struct Client {
    proxy: Option<Proxy>,
}

#[derive(Clone, Debug)]
struct Proxy {
    authority: String,
    no_proxy: Vec<NoProxy>,
}

#[derive(Clone, Debug, PartialEq)]
enum NoProxy {
    All,
    /// A host name or domain suffix, optionally bound to one port.
    Host {
        name: String,
        port: Option<u16>,
    },
    Cidr {
        net: IpAddr,
        prefix: u8,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid URL {url:?}: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("HTTP exchange with {addr}: {source}")]
    Http { addr: String, source: hyper::Error },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// A response read in full.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

// === impl Client ===

impl Client {
    /// Reads `http_proxy` (preferred, as curl and Python do) or `HTTP_PROXY`,
    /// and `no_proxy` / `NO_PROXY`.
    pub fn from_env(env: &Env) -> Result<Self, crate::Error> {
        let Some(raw) = ["http_proxy", "HTTP_PROXY"]
            .iter()
            .find_map(|name| env.get(name).filter(|v| !v.is_empty()).map(|v| (*name, v)))
        else {
            return Ok(Self::default());
        };
        let (name, value) = raw;
        let authority = parse_proxy(value).ok_or_else(|| crate::Error::BadEnv {
            name: if name == "http_proxy" {
                "http_proxy"
            } else {
                "HTTP_PROXY"
            },
            value: value.to_owned(),
            reason: "expected http://host:port",
        })?;
        let no_proxy = ["no_proxy", "NO_PROXY"]
            .iter()
            .find_map(|name| env.get(name))
            .map(parse_no_proxy)
            .unwrap_or_default();
        Ok(Self {
            proxy: Some(Proxy {
                authority,
                no_proxy,
            }),
        })
    }

    /// `GET url` with `headers`, all of connect, request and response body
    /// bounded by `timeout`.
    pub async fn get(
        &self,
        url: &str,
        headers: HeaderMap,
        timeout: Duration,
    ) -> Result<Reply, ClientError> {
        tokio::time::timeout(timeout, self.send(Method::GET, url, headers))
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
    ) -> Result<Reply, ClientError> {
        let bad = |reason| ClientError::Url {
            url: url.to_owned(),
            reason,
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URI"))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("only http:// is supported; TLS is the mesh's job"));
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?.to_owned();
        let port = uri.port_u16().unwrap_or(80);
        let host_header = if port == 80 {
            host.clone()
        } else {
            format!("{host}:{port}")
        };
        let via = self
            .proxy
            .as_ref()
            .filter(|p| !p.bypass(&host, port))
            .map(|p| p.authority.clone());
        let (addr, target) = match via {
            // A proxy gets the absolute form so it can route by it.
            Some(proxy) => (proxy, uri.to_string()),
            None => (
                format!(
                    "{}:{port}",
                    host.trim_start_matches('[').trim_end_matches(']')
                ),
                uri.path_and_query()
                    .map(|pq| pq.as_str().to_owned())
                    .unwrap_or_else(|| "/".to_owned()),
            ),
        };
        debug!(%addr, %target, "sending");
        // Names resolve through the system resolver, so `/etc/hosts` entries
        // work as they do for the upstream apps.
        let stream =
            TcpStream::connect(addr.as_str())
                .await
                .map_err(|source| ClientError::Connect {
                    addr: addr.clone(),
                    source,
                })?;
        let _ = stream.set_nodelay(true);
        let http_err = |source| ClientError::Http {
            addr: addr.clone(),
            source,
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http_err)?;
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                debug!(%error, "outbound connection ended with an error");
            }
        });
        let mut req = http::Request::new(Full::new(Bytes::new()));
        *req.method_mut() = method;
        *req.uri_mut() = target.parse().map_err(|_| bad("not a request target"))?;
        *req.headers_mut() = headers;
        if let Ok(value) = HeaderValue::from_str(&host_header) {
            req.headers_mut().insert(header::HOST, value);
        }
        req.headers_mut()
            .entry(header::USER_AGENT)
            .or_insert(HeaderValue::from_static("kite-bookinfo"));
        let rsp = sender.send_request(req).await.map_err(http_err)?;
        let status = rsp.status();
        let body = rsp
            .into_body()
            .collect()
            .await
            .map_err(http_err)?
            .to_bytes();
        Ok(Reply { status, body })
    }
}

pub(crate) fn parse_proxy(value: &str) -> Option<String> {
    let rest = value.strip_prefix("http://").unwrap_or(value);
    let authority = rest.split('/').next()?.rsplit('@').next()?;
    if authority.is_empty() {
        return None;
    }
    let uri: Uri = format!("http://{authority}/").parse().ok()?;
    let host = uri.host()?;
    Some(format!("{host}:{}", uri.port_u16().unwrap_or(80)))
}

fn parse_no_proxy(value: &str) -> Vec<NoProxy> {
    value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .filter_map(|entry| {
            if entry == "*" {
                return Some(NoProxy::All);
            }
            if let Some((net, prefix)) = entry.split_once('/') {
                let net = net.parse().ok()?;
                let prefix = prefix.parse().ok()?;
                return Some(NoProxy::Cidr { net, prefix });
            }
            let entry = entry.trim_start_matches("*.").trim_start_matches('.');
            let (name, port) = match entry.rsplit_once(':') {
                Some((name, port)) if !name.contains(':') => (name, port.parse().ok()),
                _ => (entry, None),
            };
            Some(NoProxy::Host {
                name: name.trim_matches(['[', ']']).to_ascii_lowercase(),
                port,
            })
        })
        .collect()
}

// === impl Proxy ===

impl Proxy {
    fn bypass(&self, host: &str, port: u16) -> bool {
        let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
        let ip: Option<IpAddr> = host.parse().ok();
        self.no_proxy.iter().any(|rule| match rule {
            NoProxy::All => true,
            NoProxy::Host { name, port: p } => {
                p.is_none_or(|p| p == port)
                    && (host == *name || host.ends_with(&format!(".{name}")))
            }
            NoProxy::Cidr { net, prefix } => ip.is_some_and(|ip| in_cidr(ip, *net, *prefix)),
        })
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if prefix <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if prefix <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(vars: &[(&str, &str)]) -> Client {
        Client::from_env(&vars.iter().copied().collect()).unwrap()
    }

    #[test]
    fn proxy_from_env() {
        assert!(client(&[]).proxy.is_none());
        let c = client(&[("HTTP_PROXY", "http://127.0.0.1:15001")]);
        assert_eq!(c.proxy.unwrap().authority, "127.0.0.1:15001");
        let c = client(&[("HTTP_PROXY", "http://a:1"), ("http_proxy", "b:2/")]);
        assert_eq!(c.proxy.unwrap().authority, "b:2");
        let c = client(&[("http_proxy", "http://user:pw@proxy")]);
        assert_eq!(c.proxy.unwrap().authority, "proxy:80");
        assert!(Client::from_env(&[("HTTP_PROXY", "http://")].into_iter().collect()).is_err());
    }

    #[test]
    fn no_proxy_rules() {
        let c = client(&[
            ("HTTP_PROXY", "http://127.0.0.1:15001"),
            (
                "NO_PROXY",
                "localhost, .example.com,details:9080,10.0.0.0/8,::1",
            ),
        ]);
        let p = c.proxy.unwrap();
        assert!(p.bypass("localhost", 80));
        assert!(p.bypass("www.example.com", 80));
        assert!(p.bypass("example.com", 80));
        assert!(!p.bypass("badexample.com", 80));
        assert!(p.bypass("details", 9080));
        assert!(!p.bypass("details", 9081));
        assert!(p.bypass("10.2.3.4", 9080));
        assert!(!p.bypass("11.2.3.4", 9080));
        assert!(p.bypass("[::1]", 9080));
        assert!(!p.bypass("reviews", 9080));
        let all = client(&[("http_proxy", "p:1"), ("no_proxy", "*")]);
        assert!(all.proxy.unwrap().bypass("anything", 1));
    }
}
