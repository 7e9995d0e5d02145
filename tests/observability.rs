//! The `tracing` feature: a span per fetch and events for the turns worth
//! knowing about, seen by a recording subscriber, and never the token.

mod common;

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{client, client_over, echo_after, send, token_of, Next, Rejected, Script};
use http::StatusCode;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// One span or event, with every field as text.
#[derive(Clone, Debug)]
struct Seen {
    /// The span's id, or the id of the event's parent span.
    span: Option<u64>,
    is_span: bool,
    name: String,
    fields: Vec<(String, String)>,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn message(&self) -> &str {
        self.field("message").unwrap_or("")
    }
}

/// A subscriber that keeps everything, spans and their later `record`s
/// merged into one entry.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
    next_id: Arc<AtomicU64>,
}

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fields = Vec::new();
        span.record(&mut Fields(&mut fields));
        self.seen.lock().unwrap().push(Seen {
            span: Some(id),
            is_span: true,
            name: span.metadata().name().to_owned(),
            fields,
        });
        Id::from_u64(id)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut seen = self.seen.lock().unwrap();
        let entry = seen
            .iter_mut()
            .find(|s| s.is_span && s.span == Some(span.into_u64()));
        if let Some(entry) = entry {
            values.record(&mut Fields(&mut entry.fields));
        }
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Vec::new();
        event.record(&mut Fields(&mut fields));
        self.seen.lock().unwrap().push(Seen {
            span: event.parent().map(Id::into_u64),
            is_span: false,
            name: event.metadata().name().to_owned(),
            fields,
        });
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

impl Recorder {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn fetch_spans(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.is_span && s.name == "token_fetch")
            .collect()
    }

    fn events(&self, message: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| !s.is_span && s.message().contains(message))
            .collect()
    }

    /// No name or field of anything recorded contains `secret`.
    fn assert_never_shows(&self, secret: &str) {
        for seen in self.seen() {
            assert!(!seen.name.contains(secret), "{seen:?}");
            for (name, value) in &seen.fields {
                assert!(
                    !name.contains(secret) && !value.contains(secret),
                    "{seen:?}"
                );
            }
        }
    }
}

/// Records everything on this thread (the tests' runtimes are
/// current-thread, so the cache's tasks run here too).
fn record() -> (Recorder, tracing::subscriber::DefaultGuard) {
    let recorder = Recorder::default();
    let guard = tracing::subscriber::set_default(recorder.clone());
    (recorder, guard)
}

#[tokio::test(start_paused = true)]
async fn a_fetch_has_a_span_with_attempt_outcome_latency_and_lifetime() {
    let (recorder, _guard) = record();
    let script = Script::new(Some(Duration::from_secs(3600)), Duration::from_millis(250));
    let client = client(script.cache(), Rejected::default());
    assert_eq!(token_of(&client).await, "token-1");

    let spans = recorder.fetch_spans();
    assert_eq!(spans.len(), 1, "{spans:?}");
    let span = &spans[0];
    assert_eq!(span.field("attempt"), Some("1"));
    assert_eq!(span.field("outcome"), Some("ok"));
    assert_eq!(span.field("latency"), Some("250ms"));
    assert_eq!(span.field("lifetime"), Some("3600s"));
    let fetched = recorder.events("token fetched");
    assert_eq!(fetched.len(), 1);
    assert_eq!(fetched[0].span, span.span, "the event is inside the span");
    recorder.assert_never_shows("token-1");
}

#[tokio::test(start_paused = true)]
async fn failures_are_reported_with_their_attempt_and_the_backoff() {
    let (recorder, _guard) = record();
    let script = Script::new(None, Duration::ZERO);
    script.set(Next::Fail);
    let cache = script.cache();

    assert!(cache.token().await.is_err());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(cache.token().await.is_err());

    let spans = recorder.fetch_spans();
    let attempts: Vec<_> = spans.iter().map(|s| s.field("attempt").unwrap()).collect();
    assert_eq!(attempts, ["1", "2"]);
    assert!(spans.iter().all(|s| s.field("outcome") == Some("Fetch")));

    let failed = recorder.events("token fetch failed");
    assert_eq!(failed.len(), 2);
    assert_eq!(
        failed[0].field("error"),
        Some("token fetch failed: fetch 1 failed")
    );
    let backing_off = recorder.events("backing off");
    assert_eq!(backing_off.len(), 2);
    // The second failure in a row waits 1 s to 2 s.
    let retry_in = backing_off[1].field("retry_in").unwrap();
    let seconds: f64 = retry_in.strip_suffix('s').unwrap().parse().unwrap();
    assert!((1.0..=2.0).contains(&seconds), "{retry_in}");
    assert_eq!(backing_off[1].span, spans[1].span);

    // A success starts counting attempts from 1 again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    script.set(Next::Token(None));
    cache.token().await.unwrap();
    let spans = recorder.fetch_spans();
    assert_eq!(spans[2].field("attempt"), Some("3"));
    assert_eq!(spans[2].field("lifetime"), Some("never expires"));
    cache.invalidate(&cache.token().await.unwrap());
    cache.token().await.unwrap();
    assert_eq!(recorder.fetch_spans()[3].field("attempt"), Some("1"));
}

#[tokio::test(start_paused = true)]
async fn a_failed_background_refresh_reports_the_token_still_served() {
    let (recorder, _guard) = record();
    // Due after 30 s, expired at 54 s.
    let script = Script::new(Some(Duration::from_secs(60)), Duration::ZERO);
    let client = client(script.cache(), Rejected::default());
    assert_eq!(token_of(&client).await, "token-1");

    script.set(Next::Fail);
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(token_of(&client).await, "token-1");
    tokio::task::yield_now().await;

    let stale = recorder.events("serving the current token until it expires");
    assert_eq!(stale.len(), 1, "{:?}", recorder.seen());
    assert_eq!(stale[0].field("expires_in"), Some("20s"));
    // The due token is still served.
    assert_eq!(token_of(&client).await, "token-1");
    recorder.assert_never_shows("token-1");
}

#[tokio::test(start_paused = true)]
async fn an_invalidation_after_a_401_is_an_event() {
    let (recorder, _guard) = record();
    let script = Script::new(None, Duration::ZERO);
    let cache = script.cache();
    let rejected = Rejected::default();
    let client = client_over(cache.clone(), echo_after(rejected.clone(), Duration::ZERO));
    assert_eq!(token_of(&client).await, "token-1");

    rejected.lock().unwrap().push("Bearer token-1".to_owned());
    assert_eq!(send(&client).await.unwrap().0, StatusCode::UNAUTHORIZED);
    assert_eq!(send(&client).await.unwrap().0, StatusCode::OK);

    let invalidated = recorder.events("token invalidated after a 401");
    assert_eq!(invalidated.len(), 1);
    let generation = invalidated[0].field("generation").unwrap();
    assert!(generation.parse::<u64>().is_ok(), "{generation}");

    let token = cache.token().await.unwrap();
    assert!(cache.invalidate(&token));
    assert_eq!(recorder.events("token invalidated by the caller").len(), 1);
    recorder.assert_never_shows("token-1");
    recorder.assert_never_shows("token-2");
}

#[tokio::test(start_paused = true)]
async fn an_invalid_token_is_reported_without_its_value() {
    let (recorder, _guard) = record();
    let cache = tower_bearer::TokenCache::new(|| async {
        Ok::<_, std::io::Error>(tower_bearer::Token::new("s3cr3t\nwith a newline"))
    });
    assert!(cache.token().await.is_err());
    assert_eq!(recorder.events("token fetch failed").len(), 1);
    assert_eq!(
        recorder.fetch_spans()[0].field("outcome"),
        Some("InvalidToken")
    );
    recorder.assert_never_shows("s3cr3t");
}

/// OAuth2 failures reach the "token fetch failed" event with their error
/// chain: neither the secret nor a token is in any field, however the
/// token endpoint echoes them.
#[cfg(feature = "oauth2")]
#[tokio::test(start_paused = true)]
async fn oauth2_errors_in_events_never_show_the_secret_or_a_token() {
    use base64::Engine as _;
    use bytes::Bytes;
    use http_body_util::Full;
    use tower_bearer::oauth2::ClientCredentials;

    const SECRET: &str = "s3cret/v+lue";
    const TOKEN: &str = "eyJhbGciOi.tok-4f1c9e.sig";
    let basic = base64::engine::general_purpose::STANDARD.encode("id:s3cret%2Fv%2Blue");
    let bodies = [
        (
            400,
            format!(
                r#"{{"error":"invalid_client","error_description":"secret {SECRET} or Basic {basic}"}}"#
            ),
        ),
        (
            400,
            format!(
                r#"{{"error":"invalid_request","error_description":"s3cret\/v+lue for {TOKEN}","access_token":"{TOKEN}"}}"#
            ),
        ),
        (200, format!("access_token={TOKEN}&token_type=bearer")),
        (500, format!("token {TOKEN} secret {SECRET}")),
        (
            200,
            format!(r#"{{"accessToken":"{TOKEN}","access\u005ftoken":"ab\"{TOKEN}"#),
        ),
        (
            200,
            format!(r#"{{"access_token":"{TOKEN}","token_type":"{TOKEN}"}}"#),
        ),
    ];
    for (status, body) in bodies {
        let (recorder, _guard) = record();
        let client = tower::service_fn(move |_request: http::Request<Full<Bytes>>| {
            let mut response = http::Response::new(Full::<Bytes>::from(body.clone()));
            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
            std::future::ready(Ok::<_, std::convert::Infallible>(response))
        });
        let cache = tower_bearer::TokenCache::new(
            ClientCredentials::new("https://idp.example.com/token", "id", SECRET)
                .http_client(client),
        );
        let error = cache.token().await.unwrap_err();
        assert_eq!(recorder.events("token fetch failed").len(), 1);
        recorder.assert_never_shows(SECRET);
        recorder.assert_never_shows(TOKEN);
        recorder.assert_never_shows(&basic);
        recorder.assert_never_shows("s3cret%2F");
        let chain = format!("{error} {error:?}");
        assert!(!chain.contains(SECRET) && !chain.contains(TOKEN), "{chain}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_keyed_cache_labels_its_spans_and_events_with_the_key_never_the_token() {
    use http::{Request, Response};
    use tower::{service_fn, ServiceBuilder, ServiceExt};
    use tower_bearer::{BearerAuthLayer, KeyedTokenCache, Token};

    let (recorder, _guard) = record();
    // The key holds a secret part that the label leaves out.
    let cache = KeyedTokenCache::new(|key: &(String, String)| {
        let token = format!("secret-token-of-{}", key.0);
        move || {
            let token = token.clone();
            async move { Ok::<_, std::io::Error>(Token::new(token)) }
        }
    })
    .label(|key: &(String, String)| format!("tenant {}", key.0));
    let unauthorized = service_fn(|_: Request<()>| async {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        Ok::<_, std::convert::Infallible>(response)
    });
    let client = ServiceBuilder::new()
        .layer(BearerAuthLayer::keyed(cache.clone(), |head| {
            let tenant = head.headers().get("x-tenant")?.to_str().ok()?;
            Some((tenant.to_owned(), "client-secret".to_owned()))
        }))
        .service(unauthorized);
    for tenant in ["acme", "globex"] {
        let request = Request::get("/")
            .header("x-tenant", tenant)
            .body(())
            .unwrap();
        let response = client.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    let keys: Vec<_> = recorder
        .fetch_spans()
        .iter()
        .map(|span| span.field("key").unwrap().to_owned())
        .collect();
    assert_eq!(keys, ["tenant acme", "tenant globex"]);
    let invalidated = recorder.events("token invalidated after a 401");
    let keys: Vec<_> = invalidated
        .iter()
        .map(|e| e.field("key").unwrap())
        .collect();
    assert_eq!(keys, ["tenant acme", "tenant globex"]);

    // A third tenant with room for one key: the other two go, each said.
    let cache = cache.max_keys(1);
    let request = Request::get("/")
        .header("x-tenant", "initech")
        .body(())
        .unwrap();
    client.clone().oneshot(request).await.unwrap();
    assert_eq!(cache.len(), 1);
    let dropped = recorder.events("keyed token cache dropped a key");
    let mut keys: Vec<_> = dropped.iter().map(|e| e.field("key").unwrap()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["tenant acme", "tenant globex"]);
    assert!(dropped
        .iter()
        .all(|e| e.field("reason") == Some("max_keys")));
    recorder.assert_never_shows("secret-token");
    recorder.assert_never_shows("client-secret");
}

/// Fresh tokens rejected twice in a row: the second rejection pauses
/// fetches, and says so once, with the pause.
#[tokio::test(start_paused = true)]
async fn fresh_tokens_rejected_again_pause_fetches_with_a_warning() {
    let (recorder, _guard) = record();
    let script = Script::new(None, Duration::ZERO);
    let cache = script.cache();
    let rejected = Rejected::default();
    let client = client_over(cache.clone(), echo_after(rejected.clone(), Duration::ZERO));
    for token in ["token-1", "token-2"] {
        rejected.lock().unwrap().push(format!("Bearer {token}"));
        assert_eq!(send(&client).await.unwrap().0, StatusCode::UNAUTHORIZED);
    }
    let paced = recorder.events("the resource keeps rejecting fresh tokens");
    assert_eq!(paced.len(), 1);
    assert!(paced[0].field("retry_in").is_some(), "{paced:?}");
    recorder.assert_never_shows("token-2");
}

/// `RetryOnUnauthorized` inside the bearer layer (the wrong order) is said once, as
/// a `warn` event; the right order says nothing.
#[cfg(feature = "retry")]
#[tokio::test(start_paused = true)]
async fn a_retry_inside_the_bearer_layer_is_warned_about_once() {
    use tower::{Service, ServiceBuilder, ServiceExt};
    use tower_bearer::{BearerAuthLayer, RetryOnUnauthorized, Token};

    let (recorder, _guard) = record();
    let server = tower::service_fn(|_request: http::Request<()>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(()))
    });
    let source = || async { Ok::<_, std::convert::Infallible>(Token::new("token-1")) };
    let mut right = ServiceBuilder::new()
        .retry(RetryOnUnauthorized::new())
        .layer(BearerAuthLayer::new(source))
        .service(server);
    let mut wrong = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(source))
        .retry(RetryOnUnauthorized::new())
        .service(server);
    const WARNING: &str = "already carries Authorization";

    right
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap();
    assert!(recorder.events(WARNING).is_empty());
    for _ in 0..2 {
        wrong
            .ready()
            .await
            .unwrap()
            .call(http::Request::new(()))
            .await
            .unwrap();
    }
    assert_eq!(recorder.events(WARNING).len(), 1);
}

/// A fetch dropped with its runtime is nobody's failure: its span says
/// `Abandoned`, and it reports no backoff, not even one in force that a
/// rejection set while it ran.
#[test]
fn an_abandoned_fetch_reports_no_backoff_it_did_not_cause() {
    let (recorder, _guard) = record();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    // Each fetch takes 35 s of a 60 s lifetime: a token arrives due (at
    // 30 s), and a rejection when it arrives is one soon after its fetch.
    let script = Script::new(Some(Duration::from_secs(60)), Duration::from_secs(35));
    let rejected = Rejected::default();
    let cache = script.cache().fetch_timeout(Duration::from_secs(60));
    let client = client_over(cache, echo_after(rejected.clone(), Duration::ZERO));
    runtime.block_on(async {
        rejected.lock().unwrap().push("Bearer token-1".to_owned());
        assert_eq!(send(&client).await.unwrap().0, StatusCode::UNAUTHORIZED);
        assert_eq!(send(&client).await.unwrap().0, StatusCode::OK);
        // token-2 is due: this request starts a background refresh, which
        // hangs, and its rejection, the second soon after a fetch, pauses
        // fetches.
        script.set(Next::Hang);
        rejected.lock().unwrap().push("Bearer token-2".to_owned());
        assert_eq!(send(&client).await.unwrap().0, StatusCode::UNAUTHORIZED);
        tokio::task::yield_now().await;
    });
    assert_eq!(script.fetches(), 3);
    assert_eq!(
        recorder
            .events("the resource keeps rejecting fresh tokens")
            .len(),
        1
    );
    assert_eq!(recorder.fetch_spans()[2].field("outcome"), None);

    drop(runtime);
    let spans = recorder.fetch_spans();
    assert_eq!(spans[2].field("outcome"), Some("Abandoned"), "{spans:?}");
    let backing_off = recorder.events("backing off");
    assert!(backing_off.is_empty(), "{backing_off:?}");
}
