//! Behaviours 9 and 10: a token that is no header value is a clear error and
//! sends nothing; an existing header is overwritten or kept; header name and
//! scheme are configurable; the value sent is sensitive; and no `Debug`
//! output shows the token.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, InvalidHeaderValue, AUTHORIZATION};
use http::{HeaderMap, Request, Response};
use tower::{BoxError, Layer, Service, ServiceExt};
use tower_bearer::{
    BearerAuth, BearerAuthLayer, Token, TokenCache, TokenError, TokenErrorKind, TokenSource,
};

mod common;

use common::Echo;

const SECRET: &str = "s3cr3t-7f3a9c";
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// A token source that answers at once with `value` and counts its fetches.
fn source(value: &'static str, fetches: &Arc<AtomicUsize>) -> impl TokenSource {
    let fetches = Arc::clone(fetches);
    move || {
        fetches.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok::<_, Infallible>(
            Token::new(value).expires_in(Duration::from_secs(3600)),
        ))
    }
}

/// Sends `request` and returns the headers the inner service saw.
async fn send<S>(svc: &mut S, request: Request<()>) -> Result<HeaderMap, BoxError>
where
    S: Service<Request<()>, Response = Response<HeaderMap>, Error = BoxError>,
{
    Ok(svc.ready().await?.call(request).await?.into_body())
}

fn with_header(name: HeaderName, value: &'static str) -> Request<()> {
    Request::builder()
        .header(name, value)
        .body(())
        .expect("a valid request")
}

fn token_error(error: &BoxError) -> &TokenError {
    error
        .downcast_ref::<TokenError>()
        .unwrap_or_else(|| panic!("a TokenError, not {error:?}"))
}

// ===== behaviour 9: bad input =====

#[tokio::test(start_paused = true)]
async fn token_with_a_newline_fails_the_request_without_sending_it() {
    let echo = Echo::default();
    let fetches = Arc::default();
    let mut svc = BearerAuth::new(
        echo.clone(),
        TokenCache::new(source("line\nbreak", &fetches)),
    );

    let error = send(&mut svc, Request::new(())).await.unwrap_err();
    let error = token_error(&error);
    assert_eq!(error.kind(), TokenErrorKind::InvalidToken);
    let source = std::error::Error::source(error).expect("the header error");
    assert!(source.is::<InvalidHeaderValue>(), "{source:?}");

    // The failure is paced like any other: the next request fails fast.
    let error = send(&mut svc, Request::new(())).await.unwrap_err();
    let error = token_error(&error);
    assert_eq!(error.kind(), TokenErrorKind::BackingOff);
    assert_eq!(error.last_failure().kind(), TokenErrorKind::InvalidToken);

    assert_eq!(echo.calls(), 0, "no request is sent without a valid token");
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn token_that_is_no_header_value_fails_token_too() {
    for bad in [
        "line\nbreak",
        "carriage\rreturn",
        "nul\0byte",
        "del\x7fbyte",
    ] {
        let fetches = Arc::default();
        let cache = TokenCache::new(source(bad, &fetches));

        let error = cache.token().await.unwrap_err();
        assert_eq!(error.kind(), TokenErrorKind::InvalidToken, "{bad:?}");

        let error = cache.token().await.unwrap_err();
        assert_eq!(error.kind(), TokenErrorKind::BackingOff, "{bad:?}");
        assert_eq!(error.last_failure().kind(), TokenErrorKind::InvalidToken);
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn scheme_that_is_no_header_value_fails_without_a_fetch() {
    let echo = Echo::default();
    let fetches = Arc::default();
    let cache = TokenCache::new(source(SECRET, &fetches)).scheme("Bad\nScheme");
    let mut svc = BearerAuth::new(echo.clone(), cache.clone());

    let error = send(&mut svc, Request::new(())).await.unwrap_err();
    assert_eq!(token_error(&error).kind(), TokenErrorKind::InvalidScheme);
    let error = cache.token().await.unwrap_err();
    assert_eq!(error.kind(), TokenErrorKind::InvalidScheme);
    assert_eq!(echo.calls(), 0);
    assert_eq!(fetches.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn an_empty_token_is_an_invalid_token() {
    let echo = Echo::default();
    let fetches = Arc::default();
    let mut svc = BearerAuthLayer::new(source("", &fetches)).layer(echo.clone());

    let error = send(&mut svc, Request::new(())).await.unwrap_err();
    assert_eq!(token_error(&error).kind(), TokenErrorKind::InvalidToken);
    assert_eq!(echo.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn existing_authorization_is_overwritten_by_default() {
    let fetches = Arc::default();
    let mut svc = BearerAuthLayer::new(source(SECRET, &fetches)).layer(Echo::default());

    // Once while waiting for the token, once on the hot path.
    for _ in 0..2 {
        let request = with_header(AUTHORIZATION, "Basic dXNlcjpwYXNz");
        let headers = send(&mut svc, request).await.unwrap();
        let values: Vec<_> = headers.get_all(AUTHORIZATION).iter().collect();
        assert_eq!(values, [&format!("Bearer {SECRET}")]);
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn keep_existing_keeps_the_header_and_fetches_nothing() {
    let echo = Echo::default();
    let (from_layer, from_service) = (Arc::default(), Arc::default());
    let services = [
        (
            BearerAuthLayer::new(source(SECRET, &from_layer))
                .keep_existing(true)
                .layer(echo.clone()),
            &from_layer,
        ),
        (
            BearerAuth::new(echo.clone(), TokenCache::new(source(SECRET, &from_service)))
                .keep_existing(true),
            &from_service,
        ),
    ];

    for (mut svc, fetches) in services {
        for _ in 0..2 {
            let request = with_header(AUTHORIZATION, "Basic dXNlcjpwYXNz");
            let headers = send(&mut svc, request).await.unwrap();
            let values: Vec<_> = headers.get_all(AUTHORIZATION).iter().collect();
            assert_eq!(values, ["Basic dXNlcjpwYXNz"]);
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 0, "no token needed");

        // A request without the header still gets the token.
        let headers = send(&mut svc, Request::new(())).await.unwrap();
        assert_eq!(headers[AUTHORIZATION], format!("Bearer {SECRET}"));
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }
    assert_eq!(echo.calls(), 6);
}

#[tokio::test(start_paused = true)]
async fn scheme_is_configurable() {
    let fetches = Arc::default();
    let cache = TokenCache::new(source(SECRET, &fetches)).scheme("token");
    let mut svc = BearerAuthLayer::from_cache(cache.clone()).layer(Echo::default());

    for _ in 0..2 {
        let headers = send(&mut svc, Request::new(())).await.unwrap();
        assert_eq!(headers[AUTHORIZATION], format!("token {SECRET}"));
    }
    // The scheme is the header's business, not the token's.
    assert_eq!(cache.token().await.unwrap().secret(), SECRET);
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn header_name_and_no_scheme_give_a_bare_api_key() {
    let fetches = Arc::default();
    let cache = TokenCache::new(source(SECRET, &fetches)).no_scheme();
    let layer = BearerAuthLayer::from_cache(cache).header_name(X_API_KEY);
    let mut svc = layer.layer(Echo::default());

    for _ in 0..2 {
        // Another header of the same request is no business of the layer.
        let request = with_header(AUTHORIZATION, "Basic dXNlcjpwYXNz");
        let headers = send(&mut svc, request).await.unwrap();
        assert_eq!(headers[X_API_KEY], SECRET);
        assert_eq!(headers.get_all(X_API_KEY).iter().count(), 1);
        assert_eq!(headers[AUTHORIZATION], "Basic dXNlcjpwYXNz");
    }

    // `keep_existing` looks at the configured header.
    let mut keeping = layer.keep_existing(true).layer(Echo::default());
    let headers = send(&mut keeping, with_header(X_API_KEY, "mine"))
        .await
        .unwrap();
    assert_eq!(headers[X_API_KEY], "mine");
    let headers = send(
        &mut keeping,
        with_header(AUTHORIZATION, "Basic dXNlcjpwYXNz"),
    )
    .await
    .unwrap();
    assert_eq!(headers[X_API_KEY], SECRET);
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

// ===== behaviour 10: secrets =====

#[tokio::test(start_paused = true)]
async fn header_value_sent_is_sensitive() {
    let fetches = Arc::default();
    let bearer = BearerAuthLayer::new(source(SECRET, &fetches)).layer(Echo::default());
    let api_key =
        BearerAuthLayer::from_cache(TokenCache::new(source(SECRET, &fetches)).no_scheme())
            .header_name(X_API_KEY)
            .layer(Echo::default());

    for (mut svc, header) in [(bearer, AUTHORIZATION), (api_key, X_API_KEY)] {
        // Once while waiting for the token, once on the hot path.
        for _ in 0..2 {
            let headers = send(&mut svc, Request::new(())).await.unwrap();
            assert!(headers[&header].is_sensitive(), "{header}");
            // What a logging layer further in would print.
            let logged = format!("{headers:?}");
            assert!(!logged.contains(SECRET), "{logged}");
        }
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
}

/// Every way this value can be printed, so that a test can check none of
/// them shows the secret.
fn printed(value: &impl std::fmt::Debug) -> String {
    format!("{value:?}\n{value:#?}")
}

fn assert_hidden(what: &str, printed: String) {
    assert!(
        !printed.contains(SECRET) && !printed.contains("s3cr3t"),
        "{what} shows the token: {printed}"
    );
}

#[tokio::test(start_paused = true)]
async fn debug_never_shows_the_token() {
    let token = Token::new(SECRET).expires_in(Duration::from_secs(60));
    assert_hidden("Token", printed(&token));

    let fetches = Arc::default();
    let cache = TokenCache::new(source(SECRET, &fetches)).scheme("Bearer");
    let layer = BearerAuthLayer::from_cache(cache.clone());
    let mut svc = layer.layer(Echo::default());
    assert_hidden("TokenCache (cold)", printed(&cache));

    let cached = cache.token().await.unwrap();
    send(&mut svc, Request::new(())).await.unwrap();
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "the token is in the cache"
    );
    assert_hidden("cached Token", printed(&cached));
    assert_hidden("TokenCache", printed(&cache));
    assert_hidden("BearerAuthLayer", printed(&layer));
    assert_hidden("BearerAuth", printed(&svc));

    // A token that is no header value, rejected: the errors keep it out too.
    let bad = TokenCache::new(|| async { Ok::<_, Infallible>(Token::new("s3cr3t\nvalue")) });
    let invalid = bad.token().await.unwrap_err();
    assert_eq!(invalid.kind(), TokenErrorKind::InvalidToken);
    let backing_off = bad.token().await.unwrap_err();
    assert_eq!(backing_off.kind(), TokenErrorKind::BackingOff);
    for error in [invalid, backing_off] {
        assert_hidden("TokenError", printed(&error));
        assert_hidden("TokenError (Display)", error.to_string());
    }
    assert_hidden("TokenCache (failed)", printed(&bad));
}
