//! Istio's certificate protocol (`istio.v1.auth.IstioCertificateService`):
//! a proxy sends a CSR and a credential, the CA answers with a chain. The
//! messages are small enough to declare here rather than generate.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tonic::{
    Status,
    codegen::{Body, StdError},
};

pub const SERVICE: &str = "istio.v1.auth.IstioCertificateService";
pub const CREATE_CERTIFICATE: &str = "/istio.v1.auth.IstioCertificateService/CreateCertificate";

#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateRequest {
    /// PEM-encoded CSR.
    #[prost(string, tag = "1")]
    pub csr: String,
    /// Requested lifetime in seconds.
    #[prost(int64, tag = "3")]
    pub validity_duration: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateResponse {
    /// PEM certificates: the leaf first, the root last.
    #[prost(string, repeated, tag = "1")]
    pub cert_chain: Vec<String>,
}

/// What the CA does with a request; `token` is the bearer credential the
/// caller presented, if any.
pub trait Authority: Send + Sync + 'static {
    fn create_certificate(
        &self,
        token: Option<&str>,
        request: IstioCertificateRequest,
    ) -> Result<IstioCertificateResponse, Status>;
}

/// The gRPC service, as tonic's generated servers are built.
pub struct CertificateServer<A> {
    inner: Arc<A>,
}

impl<A> Clone for CertificateServer<A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<A: Authority> CertificateServer<A> {
    pub fn new(inner: Arc<A>) -> Self {
        Self { inner }
    }
}

type BoxFuture<T, E> = Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send + 'static>>;

struct CreateSvc<A>(Arc<A>);

impl<A: Authority> tonic::server::UnaryService<IstioCertificateRequest> for CreateSvc<A> {
    type Response = IstioCertificateResponse;
    type Future = BoxFuture<tonic::Response<IstioCertificateResponse>, Status>;

    fn call(&mut self, request: tonic::Request<IstioCertificateRequest>) -> Self::Future {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let result = self
            .0
            .create_certificate(token.as_deref(), request.into_inner())
            .map(tonic::Response::new);
        Box::pin(async move { result })
    }
}

impl<A, B> tower_service::Service<http::Request<B>> for CertificateServer<A>
where
    A: Authority,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != CREATE_CERTIFICATE {
            return Box::pin(async move {
                let mut response = http::Response::new(tonic::body::Body::default());
                response.headers_mut().insert(
                    Status::GRPC_STATUS,
                    (tonic::Code::Unimplemented as i32).into(),
                );
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    tonic::metadata::GRPC_CONTENT_TYPE,
                );
                Ok(response)
            });
        }
        let inner = self.inner.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(CreateSvc(inner), req).await)
        })
    }
}

/// Asks the CA at `channel` to sign `csr` for `ttl`, presenting `token`.
pub async fn create_certificate(
    channel: tonic::transport::Channel,
    token: &str,
    csr: String,
    ttl: std::time::Duration,
) -> Result<Vec<String>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("the CA is not reachable: {e}")))?;
    let mut request = tonic::Request::new(IstioCertificateRequest {
        csr,
        validity_duration: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
    });
    let bearer = format!("Bearer {token}")
        .parse()
        .map_err(|_| Status::invalid_argument("the token is not a valid header value"))?;
    request.metadata_mut().insert("authorization", bearer);
    let path = http::uri::PathAndQuery::from_static(CREATE_CERTIFICATE);
    let response: tonic::Response<IstioCertificateResponse> = grpc
        .unary(request, path, tonic_prost::ProstCodec::default())
        .await?;
    Ok(response.into_inner().cert_chain)
}
