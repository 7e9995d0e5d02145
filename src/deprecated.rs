//! The names before 0.2's naming convention, kept for one release as
//! deprecated aliases (see CHANGELOG.md).

/// Renamed [`RetryOnUnauthorized`](crate::retry::RetryOnUnauthorized), to
/// pair with `grpc::RetryOnUnauthenticated`.
#[cfg(feature = "retry")]
#[deprecated(since = "0.2.0", note = "renamed `RetryOnUnauthorized`")]
pub type RetryOn401<B> = crate::retry::RetryOnUnauthorized<B>;

/// Renamed [`store::Error`](crate::store::Error).
#[cfg(feature = "store")]
#[deprecated(since = "0.2.0", note = "renamed `store::Error`")]
pub type StoreError = crate::store::Error;

/// Renamed [`grpc::Error`](crate::grpc::Error).
#[cfg(feature = "grpc")]
#[deprecated(since = "0.2.0", note = "renamed `grpc::Error`")]
pub type ReplayError = crate::grpc::Error;

#[cfg(feature = "oauth2")]
mod oauth2 {
    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::Full;
    use tower_service::Service;

    use crate::oauth2::{ClientCredentials, TokenExchange};
    use crate::BoxError;

    impl ClientCredentials {
        /// Renamed [`http_client`](Self::http_client).
        #[deprecated(since = "0.2.0", note = "renamed `http_client`")]
        pub fn with_client<S, B>(self, client: S) -> Self
        where
            S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
            S::Future: Send + 'static,
            S::Error: Into<BoxError>,
            B: http_body::Body + Send + 'static,
            B::Data: Send,
            B::Error: Into<BoxError>,
        {
            self.http_client(client)
        }
    }

    impl TokenExchange {
        /// Renamed [`http_client`](Self::http_client).
        #[deprecated(since = "0.2.0", note = "renamed `http_client`")]
        pub fn with_client<S, B>(self, client: S) -> Self
        where
            S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
            S::Future: Send + 'static,
            S::Error: Into<BoxError>,
            B: http_body::Body + Send + 'static,
            B::Data: Send,
            B::Error: Into<BoxError>,
        {
            self.http_client(client)
        }
    }
}
