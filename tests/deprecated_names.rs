//! The names before 0.2's convention still compile, for one release, as
//! deprecated aliases of the new ones.
#![allow(deprecated)]

#[cfg(feature = "retry")]
#[test]
fn retry_on_401_is_retry_on_unauthorized() {
    let old: tower_bearer::RetryOn401<()> = tower_bearer::retry::RetryOn401::new();
    let _new: tower_bearer::RetryOnUnauthorized<()> = old;
}

#[cfg(feature = "grpc")]
#[test]
fn replay_error_is_grpc_error() {
    fn same(error: tower_bearer::grpc::ReplayError) -> tower_bearer::grpc::Error {
        error
    }
    let _ = same;
}

#[cfg(feature = "store")]
#[test]
fn store_error_is_store_error() {
    fn same(error: tower_bearer::store::StoreError) -> tower_bearer::store::Error {
        error
    }
    let _ = same;
}

#[cfg(feature = "oauth2")]
#[test]
fn with_client_is_http_client() {
    use bytes::Bytes;
    use http_body_util::Full;
    let idp = tower::service_fn(|_request: http::Request<Full<Bytes>>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
    });
    let source =
        tower_bearer::oauth2::ClientCredentials::try_new("https://idp.example.com/t", "id", "s")
            .unwrap()
            .with_client(idp);
    assert!(format!("{source:?}").contains("custom"));
}
