//! Istio's tcp-echo sample (`tcp-echo-server`, the workload of the TCP
//! traffic-shifting task): listens on each port of a comma-separated list
//! and answers every line with `<prefix> <line>`, so a reply names the
//! version that served it.

use std::net::{IpAddr, SocketAddr};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};
use tracing::{debug, info};

use crate::{Error, server};

/// The image's arguments: `<port,port,…> <prefix>`.
pub struct TcpEcho {
    ports: Vec<u16>,
    prefix: String,
}

impl TcpEcho {
    pub fn from_args(args: &[String]) -> Result<Self, Error> {
        let [ports, prefix] = args else {
            return Err(Error::BadArgs {
                service: "tcp-echo",
                reason: "usage: tcp-echo <port,port,...> <prefix>".to_owned(),
            });
        };
        let ports = ports
            .split(',')
            .map(|p| {
                p.trim().parse::<u16>().map_err(|_| Error::BadArgs {
                    service: "tcp-echo",
                    reason: format!("{p:?} is not a port number"),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            ports,
            prefix: prefix.clone(),
        })
    }

    /// Listens on every port of `host` until `shutdown` resolves.
    pub async fn run(
        self,
        host: IpAddr,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let mut listeners = Vec::new();
        for port in &self.ports {
            let listener = server::bind(SocketAddr::new(host, *port)).await?;
            info!(addr = %SocketAddr::new(host, *port), prefix = %self.prefix, "listening");
            listeners.push(listener);
        }
        let prefix: std::sync::Arc<str> = self.prefix.into();
        let mut tasks = tokio::task::JoinSet::new();
        for listener in listeners {
            let prefix = prefix.clone();
            tasks.spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => {
                            tokio::spawn(echo(stream, prefix.clone()));
                        }
                        Err(e) => debug!(error = %e, "accept failed"),
                    }
                }
            });
        }
        shutdown.await;
        tasks.abort_all();
        Ok(())
    }
}

async fn echo(stream: TcpStream, prefix: std::sync::Arc<str>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            // The upstream server answers complete lines only.
            Ok(_) if line.last() != Some(&b'\n') => return,
            Ok(_) => {}
            Err(e) => {
                debug!(error = %e, "read failed");
                return;
            }
        }
        info!(request = %String::from_utf8_lossy(&line).trim_end(), "echo");
        let mut reply = Vec::with_capacity(prefix.len() + 1 + line.len());
        reply.extend_from_slice(prefix.as_bytes());
        reply.push(b' ');
        reply.extend_from_slice(&line);
        if write.write_all(&reply).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn answers_each_line_with_its_prefix() {
        let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let echo = TcpEcho::from_args(&[port.to_string(), "one".to_owned()]).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(echo.run("127.0.0.1".parse().unwrap(), async {
            let _ = stopped.await;
        }));
        let mut conn = loop {
            if let Ok(c) = TcpStream::connect(("127.0.0.1", port)).await {
                break c;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        conn.write_all(b"hello\nworld\n").await.unwrap();
        let mut got = vec![0; "one hello\none world\n".len()];
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..], b"one hello\none world\n");
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        assert!(TcpEcho::from_args(&["x".to_owned(), "one".to_owned()]).is_err());
    }
}
