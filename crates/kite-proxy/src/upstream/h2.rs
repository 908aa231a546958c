//! HTTP/2 upstream connections, one per endpoint.

use std::{collections::HashMap, net::SocketAddr};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioExecutor;

use super::{MeshConnector, SendError};

/// One multiplexed HTTP/2 connection per endpoint. A request keeps the
/// authority the app used (`:authority`) while its connection goes to the
/// endpoint chosen, which a pool keyed by the request's URI cannot do.
pub(crate) struct H2Pool {
    connector: MeshConnector,
    conns: tokio::sync::Mutex<HashMap<(SocketAddr, bool), H2Sender>>,
}

type H2Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

impl H2Pool {
    pub(crate) fn new(connector: MeshConnector) -> Self {
        Self {
            connector,
            conns: tokio::sync::Mutex::default(),
        }
    }

    /// Sends `req` (absolute URI with the app's authority) to `addr`.
    pub(crate) async fn send(
        &self,
        addr: SocketAddr,
        secure: bool,
        req: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, SendError> {
        let mut sender = self.sender(addr, secure).await?;
        sender
            .send_request(req)
            .await
            .map_err(|e| SendError::Exchange(e.into()))
    }

    async fn sender(&self, addr: SocketAddr, secure: bool) -> Result<H2Sender, SendError> {
        let mut conns = self.conns.lock().await;
        if let Some(s) = conns.get(&(addr, secure))
            && !s.is_closed()
        {
            return Ok(s.clone());
        }
        // Boxed: the handshake's state is large, and inline it would
        // enlarge every request's future, which hyper moves on each HTTP/2
        // stream it spawns.
        let sender = Box::pin(self.connect(addr, secure)).await?;
        conns.insert((addr, secure), sender.clone());
        Ok(sender)
    }

    async fn connect(&self, addr: SocketAddr, secure: bool) -> Result<H2Sender, SendError> {
        let io = self
            .connector
            .open(addr, secure)
            .await
            .map_err(SendError::Connect)?;
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| SendError::Connect(e.into()))?;
        tokio::spawn(conn);
        Ok(sender)
    }
}
