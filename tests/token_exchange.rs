//! `TokenExchange` (RFC 8693) against an in-process token endpoint that
//! answers what each test scripts.
//!
//! Not against a real server: the npm registry has no conformant RFC 8693
//! server to run (oidc-provider leaves the grant to a handler you write
//! yourself, which would test our own server code, not a third party's);
//! Keycloak and the cloud STSs are not on the registries.
#![cfg(all(feature = "oauth2", feature = "file"))]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::error::Error as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::service_fn;
use tower_bearer::oauth2::{self, ClientAuth, ErrorKind, TokenExchange};
use tower_bearer::{FileToken, TokenCache, TokenError, TokenErrorKind};

const SUBJECT: &str = "eyJhbGciOiJSUzI1NiJ9.k8s-sa-token-1.c2ln";
const TOKEN: &str = r#"{"access_token":"exchanged-1","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":3600}"#;

/// What the endpoint received: the Authorization header and the form.
type Seen = Arc<Mutex<Vec<(Option<String>, String)>>>;

/// A scripted answer: status, headers, body.
type Reply = (u16, Vec<(&'static str, &'static str)>, String);

/// A token endpoint that answers `replies` in turn (then a token) and
/// records each request.
fn endpoint(
    replies: Vec<Reply>,
) -> (
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
    let replies = Arc::new(Mutex::new(VecDeque::from(replies)));
    let service = service_fn({
        let seen = seen.clone();
        move |request: Request<Full<Bytes>>| {
            let (seen, replies) = (seen.clone(), replies.clone());
            async move {
                let auth = request
                    .headers()
                    .get(AUTHORIZATION)
                    .map(|v| v.to_str().unwrap().to_owned());
                let body = request.into_body().collect().await.unwrap().to_bytes();
                seen.lock()
                    .unwrap()
                    .push((auth, String::from_utf8(body.to_vec()).unwrap()));
                let (status, headers, body) =
                    replies
                        .lock()
                        .unwrap()
                        .pop_front()
                        .unwrap_or((200, vec![], TOKEN.to_owned()));
                let mut response = Response::builder()
                    .status(status)
                    .header("content-type", "application/json");
                for (name, value) in headers {
                    response = response.header(name, value);
                }
                Ok::<_, Infallible>(response.body(Full::new(Bytes::from(body))).unwrap())
            }
        }
    });
    (service, seen)
}

struct Subject(std::path::PathBuf);

impl Subject {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tower-bearer-exchange-{name}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, format!("{SUBJECT}\n")).unwrap();
        Self(path)
    }

    fn source(&self) -> FileToken {
        FileToken::new(&self.0)
    }
}

impl Drop for Subject {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
    }
}

fn cause(error: &TokenError) -> &oauth2::Error {
    error
        .source()
        .and_then(|s| s.downcast_ref::<oauth2::Error>())
        .unwrap_or_else(|| panic!("not an oauth2 error: {error:?}"))
}

#[tokio::test]
async fn the_request_on_the_wire_with_a_subject_read_per_exchange() {
    let subject = Subject::new("wire");
    let (service, seen) = endpoint(vec![]);
    let source = TokenExchange::new(
        "https://sts.example.com/token",
        "workload",
        "s3cret",
        subject.source(),
    )
    .requested_token_type(TokenExchange::ACCESS_TOKEN)
    .scope("orders:read")
    .audience("orders-api")
    .resource("https://orders.example.com/")
    .http_client(service);
    let debug = format!("{source:?}");
    assert!(
        debug.contains("urn:ietf:params:oauth:token-type:jwt"),
        "{debug}"
    );
    assert!(
        !debug.contains("s3cret") && !debug.contains("k8s-sa"),
        "{debug}"
    );

    let cache = TokenCache::new(source);
    let token = cache.token().await.unwrap();
    assert_eq!(token.secret(), "exchanged-1");
    // The kubelet writes a new subject token; the next exchange sends it.
    std::fs::write(&subject.0, SUBJECT.replace("-1.", "-2.")).unwrap();
    cache.invalidate(&token);
    cache.token().await.unwrap();

    let seen = seen.lock().unwrap();
    for (n, (auth, body)) in seen.iter().enumerate() {
        assert!(auth.as_deref().unwrap().starts_with("Basic "));
        assert_eq!(
            body,
            &format!(
                "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange\
                 &subject_token=eyJhbGciOiJSUzI1NiJ9.k8s-sa-token-{}.c2ln\
                 &subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt\
                 &requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token\
                 &scope=orders%3Aread&audience=orders-api\
                 &resource=https%3A%2F%2Forders.example.com%2F",
                n + 1
            )
        );
    }
}

#[tokio::test(start_paused = true)]
async fn errors_are_typed_as_for_client_credentials_and_never_quote_the_subject() {
    let subject = Subject::new("errors");
    let echo = format!(
        r#"{{"error":"invalid_grant","error_description":"subject_token {SUBJECT} has expired"}}"#
    );
    let cases: Vec<(Reply, ErrorKind, bool)> = vec![
        ((400, vec![], echo), ErrorKind::Rejected, true),
        (
            (400, vec![], r#"{"error":"invalid_target"}"#.into()),
            ErrorKind::Rejected,
            true,
        ),
        (
            (
                503,
                vec![("retry-after", "30")],
                r#"{"error":"temporarily_unavailable"}"#.into(),
            ),
            ErrorKind::Rejected,
            false,
        ),
        (
            (
                200,
                vec![],
                r#"{"access_token":"abc","issued_token_type":"urn:ietf:params:oauth:token-type:jwt","token_type":"N_A"}"#.into(),
            ),
            ErrorKind::UnsupportedTokenType,
            true,
        ),
    ];
    for ((status, headers, body), kind, permanent) in cases {
        let (service, _) = endpoint(vec![(status, headers.clone(), body.clone())]);
        let source =
            TokenExchange::new("https://sts.example.com/token", "w", "s", subject.source())
                .http_client(service);
        let error = TokenCache::new(source).token().await.unwrap_err();
        assert_eq!(error.kind(), TokenErrorKind::Fetch, "{body}");
        assert_eq!(error.is_permanent(), permanent, "{body}");
        let cause = cause(&error);
        assert_eq!(cause.kind(), kind, "{body}");
        let shown = format!("{error} {error:?} {cause} {cause:?}");
        assert!(!shown.contains("k8s-sa-token"), "{shown}");
        if status == 503 {
            assert_eq!(cause.retry_after(), Some(Duration::from_secs(30)));
        }
    }
}

#[tokio::test]
async fn a_failing_subject_source_is_a_typed_error_and_nothing_is_sent() {
    let (service, seen) = endpoint(vec![]);
    let missing = std::env::temp_dir().join("tower-bearer-no-such-subject-token");
    let source = TokenExchange::new(
        "https://sts.example.com/token",
        "w",
        "s",
        FileToken::new(missing),
    )
    .http_client(service);
    let error = TokenCache::new(source).token().await.unwrap_err();
    assert!(!error.is_permanent());
    let cause = cause(&error);
    assert_eq!(cause.kind(), ErrorKind::SubjectToken);
    let file = cause
        .source()
        .and_then(|s| s.downcast_ref::<tower_bearer::file::Error>())
        .unwrap();
    assert_eq!(file.kind(), tower_bearer::file::ErrorKind::NotFound);
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn client_authentication_is_shared_with_client_credentials() {
    let subject = Subject::new("auth");
    // A client assertion (a second federated file, say), echoed back by the
    // server in an error: masked like the subject token.
    let assertion = "eyJhbGciOiJSUzI1NiJ9.client-assertion.c2ln";
    let (service, seen) = endpoint(vec![(
        401,
        vec![],
        format!(r#"{{"error":"invalid_client","error_description":"bad {assertion}"}}"#),
    )]);
    let source = TokenExchange::new("https://sts.example.com/token", "w", "", subject.source())
        .client_assertion(move || async move {
            Ok::<_, Infallible>(tower_bearer::Token::new(assertion))
        })
        .http_client(service);
    let error = TokenCache::new(source).token().await.unwrap_err();
    assert!(error.is_permanent());
    assert_eq!(
        cause(&error).response().unwrap().description(),
        Some("bad <redacted>")
    );
    let (auth, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(auth, None);
    assert!(body.ends_with(
        "&client_id=w&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer\
         &client_assertion=eyJhbGciOiJSUzI1NiJ9.client-assertion.c2ln"
    ), "{body}");

    // And Post, like any other method.
    let (service, seen) = endpoint(vec![]);
    let source = TokenExchange::new("https://sts.example.com/token", "w", "pw", subject.source())
        .auth_method(ClientAuth::Post)
        .http_client(service);
    TokenCache::new(source).token().await.unwrap();
    assert!(seen.lock().unwrap()[0]
        .1
        .ends_with("&client_id=w&client_secret=pw"));
}
