//! `ClientAuth::Assertion`: a client assertion from a source of your own,
//! asked for on every token request. `FileAssertion` reads a federated
//! token file again each time; a failing source is a typed error and no
//! request is sent.
#![cfg(all(feature = "oauth2", feature = "file"))]

use std::convert::Infallible;
use std::error::Error as _;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::service_fn;
use tower_bearer::oauth2::{self, ClientAuth, ClientCredentials, ErrorKind, FileAssertion};
use tower_bearer::{file, Token, TokenCache, TokenErrorKind};

const TOKEN: &str = r#"{"access_token":"tok-1","token_type":"Bearer","expires_in":3600}"#;

/// Each request's Authorization header and form body.
type Seen = Arc<Mutex<Vec<(Option<String>, String)>>>;

/// A token endpoint that records each request's form and Authorization.
fn recording() -> (
    impl tower::Service<
            Request<Full<Bytes>>,
            Response = Response<Full<Bytes>>,
            Error = Infallible,
            Future = impl Send,
        > + Clone
        + Send
        + 'static,
    Seen,
) {
    let seen: Seen = Arc::default();
    let service = service_fn({
        let seen = seen.clone();
        move |request: Request<Full<Bytes>>| {
            let seen = seen.clone();
            async move {
                let auth = request
                    .headers()
                    .get(AUTHORIZATION)
                    .map(|v| v.to_str().unwrap().to_owned());
                let body = request.into_body().collect().await.unwrap().to_bytes();
                let body = String::from_utf8(body.to_vec()).unwrap();
                seen.lock().unwrap().push((auth, body));
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                    TOKEN.as_bytes(),
                ))))
            }
        }
    });
    (service, seen)
}

fn temp_file(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tower-bearer-assertion-{name}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("azure-identity-token")
}

#[tokio::test]
async fn the_file_is_read_again_for_every_token_request() {
    let path = temp_file("reread");
    std::fs::write(&path, "eyJ.federated-1.sig\n").unwrap();
    let (endpoint, seen) = recording();
    let cache = TokenCache::new(
        ClientCredentials::new("https://idp.example.com/token", "my-app", "")
            .client_assertion(FileAssertion::new(&path))
            .http_client(endpoint),
    );

    let token = cache.token().await.unwrap();
    std::fs::write(&path, "eyJ.federated-2.sig\n").unwrap();
    cache.invalidate(&token);
    cache.token().await.unwrap();

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    for (n, (auth, body)) in seen.iter().enumerate() {
        assert_eq!(auth, &None, "no secret is sent");
        assert_eq!(
            body,
            &format!(
                "grant_type=client_credentials&client_id=my-app\
                 &client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer\
                 &client_assertion=eyJ.federated-{}.sig",
                n + 1
            )
        );
    }
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[tokio::test]
async fn any_token_source_can_supply_the_assertion() {
    let (endpoint, seen) = recording();
    let source = ClientCredentials::new("https://idp.example.com/token", "my-app", "")
        .client_assertion(|| async { Ok::<_, Infallible>(Token::new("signed-elsewhere")) })
        .http_client(endpoint);
    assert!(format!("{source:?}").contains("assertion_source"));
    TokenCache::new(source).token().await.unwrap();
    assert!(seen.lock().unwrap()[0]
        .1
        .ends_with("&client_assertion=signed-elsewhere"));
}

#[tokio::test]
async fn a_failing_assertion_source_is_a_typed_error_and_nothing_is_sent() {
    let path = temp_file("missing").with_file_name("not-there");
    let (endpoint, seen) = recording();
    let error = TokenCache::new(
        ClientCredentials::new("https://idp.example.com/token", "my-app", "")
            .client_assertion(FileAssertion::new(&path))
            .http_client(endpoint),
    )
    .token()
    .await
    .unwrap_err();
    assert_eq!(error.kind(), TokenErrorKind::Fetch);
    assert!(!error.is_permanent(), "a file may appear");
    let cause = error
        .source()
        .and_then(|s| s.downcast_ref::<oauth2::Error>())
        .unwrap();
    assert_eq!(cause.kind(), ErrorKind::Assertion);
    let file_error = cause
        .source()
        .and_then(|s| s.downcast_ref::<file::Error>())
        .unwrap();
    assert_eq!(file_error.kind(), file::ErrorKind::NotFound);
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_assertion_method_without_its_source_or_key_is_a_permanent_config_error() {
    let mut methods = vec![ClientAuth::Assertion];
    #[cfg(feature = "private-key-jwt")]
    methods.push(ClientAuth::PrivateKeyJwt);
    for method in methods {
        let (endpoint, seen) = recording();
        let error = TokenCache::new(
            ClientCredentials::new("https://idp.example.com/token", "my-app", "secret")
                .auth_method(method)
                .http_client(endpoint),
        )
        .token()
        .await
        .unwrap_err();
        assert!(error.is_permanent(), "{method:?}");
        let cause = error
            .source()
            .and_then(|s| s.downcast_ref::<oauth2::Error>())
            .unwrap();
        assert_eq!(cause.kind(), ErrorKind::Config, "{method:?}");
        assert!(seen.lock().unwrap().is_empty());
    }
}
