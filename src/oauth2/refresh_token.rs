//! [`RefreshToken`]: a token source for the OAuth2 refresh-token grant
//! (RFC 6749 §6), with rotation, and one refresh at a time across a fleet.
//!
//! The design, its failure modes and how it compares with other libraries
//! are in the repository's `docs/refresh-tokens.md`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use zeroize::Zeroizing;

use super::{ClientAuth, ClientCredentials, Error, ErrorKind};
use crate::{BoxError, RetryHint, Token, TokenSource};

/// A [`TokenSource`] that keeps an access token fresh with a refresh token
/// the application obtained (through an authorization-code or device flow,
/// outside this crate): `grant_type=refresh_token` (RFC 6749 §6).
///
/// - **Client authentication** is [`ClientCredentials`]'s: a secret (Basic
///   or Post), `private_key_jwt`, a client assertion, or
///   [`ClientAuth::None`] for a public client (only `client_id` in the
///   form: [`public`](Self::public)). DPoP too (RFC 9449 binds a public
///   client's refresh tokens to its key).
/// - **Rotation.** When an answer carries a new `refresh_token`, the old one
///   is never sent again: the source holds the new one, and hands it to
///   [`on_rotate`](Self::on_rotate)'s hook before the new access token is
///   returned.
/// - **One refresh at a time.** Clones share one refresh token and refresh
///   one at a time, whatever the caches or runtimes they serve; across
///   processes, [`fleet`](Self::fleet) makes the refresh go through the
///   store's lease, the refresh token living in the store, sealed.
/// - **`invalid_grant` is final.** The grant is gone (revoked, expired, or a
///   refresh token reused): an [`ErrorKind::GrantGone`] error, permanent,
///   and no further request is ever sent with this grant by this source
///   (nor by the fleet, which reads the verdict from the store).
/// - **A refresh runs to its end.** It runs on a task of its own, so that a
///   request or a cache that gives up on it (its fetch timeout) never
///   leaves a refresh sent and its rotated token dropped; each token request
///   is bounded by [`request_timeout`](Self::request_timeout).
///
/// The refresh token is a secret: never in `Debug`, errors or events, and
/// wiped from memory (`zeroize`) when replaced or dropped.
///
/// ```
/// use tower_bearer::oauth2::RefreshToken;
/// use tower_bearer::TokenCache;
///
/// # fn load(_: &str) -> String { "rt-from-your-database".into() }
/// # async fn save(_: &str, _: &str) -> Result<(), std::io::Error> { Ok(()) }
/// let user = "user-42";
/// let source = RefreshToken::try_new(
///     "https://idp.example.com/oauth/token",
///     "my-app",
///     "s3cret",
///     load(user),
/// )?
/// .on_rotate(move |rotated| async move {
///     // Persist it before the new access token is used.
///     save(user, rotated.secret()).await
/// });
/// assert!(!format!("{source:?}").contains("rt-from"));
/// let cache = TokenCache::new(source);
/// # drop(cache);
/// # Ok::<_, tower_bearer::oauth2::Error>(())
/// ```
#[derive(Clone)]
pub struct RefreshToken {
    inner: ClientCredentials,
    state: Arc<Mutex<State>>,
    persist: Option<Persist>,
    request_timeout: Duration,
    #[cfg(feature = "seal")]
    fleet: Option<Arc<fleet::Fleet>>,
}

/// What the clones of one source share: the refresh token and its fate.
struct State {
    current: Zeroizing<String>,
    /// The generation of `current` in the fleet's record (0: the one the
    /// application gave).
    #[cfg_attr(not(feature = "seal"), allow(dead_code))]
    generation: u64,
    /// The token endpoint answered `invalid_grant`.
    gone: bool,
    /// The hook failed for `current`: it is offered again before the next
    /// refresh.
    unpersisted: bool,
}

type Persist = Arc<
    dyn Fn(Rotated) -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>> + Send + Sync,
>;

type FetchFuture = Pin<Box<dyn Future<Output = Result<Token, Error>> + Send>>;

/// A rotated refresh token, handed to the hook of
/// [`RefreshToken::on_rotate`]. Its `Debug` is redacted, and it is wiped
/// from memory when dropped.
pub struct Rotated(Zeroizing<String>);

impl Rotated {
    /// The new refresh token, to persist.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Rotated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Rotated(<redacted>)")
    }
}

impl RefreshToken {
    /// How long one token request may take by default: 30 s.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

    /// A source that refreshes `refresh_token` at `token_url` as
    /// `client_id`, with `client_secret_basic`. Never fails: a bad URL
    /// makes every fetch fail with a permanent
    /// [`Config`](ErrorKind::Config) error; [`try_new`](Self::try_new)
    /// checks it up front.
    pub fn new(
        token_url: impl AsRef<str>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        refresh_token: impl Into<String>,
    ) -> Self {
        let mut inner = ClientCredentials::new(token_url, client_id, client_secret);
        inner.grant = super::grant::Grant::RefreshToken;
        Self {
            inner,
            state: Arc::new(Mutex::new(State {
                current: Zeroizing::new(refresh_token.into()),
                generation: 0,
                gone: false,
                unpersisted: false,
            })),
            persist: None,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            #[cfg(feature = "seal")]
            fleet: None,
        }
    }

    /// Like [`new`](Self::new), but fails at once if the token URL is not
    /// valid or not allowed, as [`ClientCredentials::try_new`] does.
    pub fn try_new(
        token_url: impl AsRef<str>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        refresh_token: impl Into<String>,
    ) -> Result<Self, Error> {
        ClientCredentials::try_new(token_url.as_ref(), "", "")?;
        Ok(Self::new(
            token_url,
            client_id,
            client_secret,
            refresh_token,
        ))
    }

    /// A public client's source (RFC 6749 §2.1: a native or browser app,
    /// no secret): [`ClientAuth::None`], only `client_id` in the form.
    pub fn public(
        token_url: impl AsRef<str>,
        client_id: impl Into<String>,
        refresh_token: impl Into<String>,
    ) -> Self {
        Self::new(token_url, client_id, "", refresh_token).auth_method(ClientAuth::None)
    }

    /// Calls `hook` with each new refresh token the token endpoint rotates
    /// to, before the access token that came with it is returned: persist
    /// it there (a database, a secret manager).
    ///
    /// **When the hook fails**, the access token is still returned and the
    /// new refresh token is still used: the old one died at the token
    /// endpoint when it answered, so failing the fetch would undo nothing,
    /// and would lose an access token that works. The failure is reported
    /// in a `warn` event (without the token), and the hook is called again
    /// with the current refresh token before the next refresh, until it
    /// succeeds. Meanwhile, only this process (and with
    /// [`fleet`](Self::fleet), the store) holds the grant's live refresh
    /// token.
    pub fn on_rotate<F, Fut, E>(mut self, hook: F) -> Self
    where
        F: Fn(Rotated) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.persist = Some(Arc::new(move |rotated| {
            let future = hook(rotated);
            Box::pin(async move { future.await.map_err(Into::into) })
        }));
        self
    }

    /// Bounds each token request: [`DEFAULT_REQUEST_TIMEOUT`](Self::DEFAULT_REQUEST_TIMEOUT)
    /// by default. With a fleet, the lease lasts this long plus the store
    /// operations around the request, so that it never lapses while its
    /// holder may still rotate the token.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Asks for DPoP-bound tokens; see [`ClientCredentials::dpop`]. A
    /// public client's refresh token is bound to `key` too: every replica
    /// of a [`fleet`](Self::fleet) must use the same key, and access tokens
    /// are then never shared through the store (each replica refreshes for
    /// its own).
    #[cfg(feature = "dpop")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dpop")))]
    pub fn dpop(mut self, key: crate::dpop::ProofKey) -> Self {
        self.inner = self.inner.dpop(key);
        self
    }

    super::forward::forward_client_settings!();

    /// One refresh, to its end, on a task of its own.
    async fn refresh(self) -> Result<Token, Error> {
        let task = tokio::spawn(async move {
            // Clones refresh one at a time: the refresh token is theirs.
            let mut state = Arc::clone(&self.state).lock_owned().await;
            self.refresh_locked(&mut state).await
        });
        // Transient: a runtime shutting down cancels it, and the next
        // refresh starts from what the task recorded.
        task.await.map_err(|_| {
            Error::transport("the refresh task panicked or its runtime shut down".into())
        })?
    }

    async fn refresh_locked(&self, state: &mut State) -> Result<Token, Error> {
        if state.gone {
            return Err(gone_earlier());
        }
        if state.unpersisted {
            self.persist(state).await;
        }
        #[cfg(feature = "seal")]
        if let Some(fleet) = &self.fleet {
            return fleet.refresh(self, state).await;
        }
        let (token, rotated) = self.send(state).await?;
        if rotated {
            self.persist(state).await;
        }
        Ok(token)
    }

    /// Sends the current refresh token; on an answer, the rotated one
    /// replaces it (the old one is wiped), and whether it rotated. An
    /// `invalid_grant` marks the grant gone.
    async fn send(&self, state: &mut State) -> Result<(Token, bool), Error> {
        let answer = tokio::time::timeout(self.request_timeout, self.inner.refresh(&state.current))
            .await
            .map_err(|_| Error::transport("the token request timed out".into()))?;
        match answer {
            Ok((token, Some(rotated))) => {
                state.current = rotated;
                Ok((token, true))
            }
            Ok((token, None)) => Ok((token, false)),
            Err(error) if is_invalid_grant(&error) => {
                state.gone = true;
                Err(Error::grant_gone(
                    "the token endpoint answered invalid_grant",
                ))
            }
            Err(error) => Err(error),
        }
    }

    /// Hands the current refresh token to the hook, if there is one.
    async fn persist(&self, state: &mut State) {
        let Some(hook) = &self.persist else {
            return;
        };
        let rotated = Rotated(state.current.clone());
        match hook(rotated).await {
            Ok(()) => state.unpersisted = false,
            Err(_error) => {
                state.unpersisted = true;
                #[cfg(feature = "tracing")]
                tracing::warn!(
                    error = %_error,
                    "cannot persist the rotated refresh token: it is used all the same, and offered again before the next refresh"
                );
            }
        }
    }
}

fn is_invalid_grant(error: &Error) -> bool {
    error.kind() == ErrorKind::Rejected
        && error
            .response()
            .is_some_and(|response| response.error() == "invalid_grant")
}

fn gone_earlier() -> Error {
    Error::grant_gone("refused earlier: no request sent")
}

impl TokenSource for RefreshToken {
    type Error = Error;
    type Future = FetchFuture;

    fn fetch(&self) -> FetchFuture {
        Box::pin(self.clone().refresh())
    }

    fn retry_hint(error: &Error) -> RetryHint {
        ClientCredentials::retry_hint(error)
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("RefreshToken");
        debug
            .field("inner", &self.inner)
            .field("refresh_token", &"<redacted>")
            .field("persist", &self.persist.is_some())
            .field("request_timeout", &self.request_timeout);
        #[cfg(feature = "seal")]
        debug.field("fleet", &self.fleet.is_some());
        debug.finish()
    }
}

#[cfg(feature = "seal")]
mod fleet;

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Mutex as StdMutex;

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::{BodyExt, Full};

    use super::*;
    use http::{HeaderMap, StatusCode};

    /// What the fake token endpoint saw: each request's form and headers.
    type Seen = Arc<StdMutex<Vec<(String, HeaderMap)>>>;

    /// A token endpoint that rotates `rt-N` to `rt-N+1`, or answers
    /// `refusal` (a status and a body) to everything when given.
    fn idp(
        seen: Seen,
        refusal: Option<(u16, &'static str)>,
    ) -> impl tower_service::Service<
        Request<Full<Bytes>>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl std::future::Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send,
    > + Clone
           + Send
           + 'static {
        tower::service_fn(move |request: Request<Full<Bytes>>| {
            let seen = Arc::clone(&seen);
            async move {
                let headers = request.headers().clone();
                let body = request.into_body().collect().await.unwrap().to_bytes();
                let form = String::from_utf8(body.to_vec()).unwrap();
                let n = seen.lock().unwrap().len();
                seen.lock().unwrap().push((form, headers));
                let response = match refusal {
                    Some((status, body)) => {
                        let mut response = Response::new(Full::new(Bytes::from(body)));
                        *response.status_mut() = StatusCode::from_u16(status).unwrap();
                        response
                    }
                    None => Response::new(Full::new(Bytes::from(format!(
                        r#"{{"access_token":"at-{n}","token_type":"Bearer","expires_in":3600,"refresh_token":"rt-{}"}}"#,
                        n + 1
                    )))),
                };
                Ok::<_, Infallible>(response)
            }
        })
    }

    fn sent(seen: &Seen) -> Vec<String> {
        seen.lock()
            .unwrap()
            .iter()
            .map(|(form, _)| {
                form.split('&')
                    .find_map(|pair| pair.strip_prefix("refresh_token="))
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    fn source(seen: &Seen) -> RefreshToken {
        RefreshToken::new("https://idp.example.com/token", "app", "secret", "rt-0")
            .http_client(idp(Arc::clone(seen), None))
    }

    #[tokio::test]
    async fn each_rotation_is_persisted_before_its_access_token_is_returned() {
        let seen = Seen::default();
        let persisted = Arc::new(StdMutex::new(Vec::new()));
        let source = source(&seen).on_rotate({
            let persisted = Arc::clone(&persisted);
            move |rotated: Rotated| {
                persisted.lock().unwrap().push(rotated.secret().to_owned());
                async { Ok::<_, Infallible>(()) }
            }
        });
        let token = source.fetch().await.unwrap();
        assert_eq!(token.secret(), "at-0");
        assert_eq!(*persisted.lock().unwrap(), ["rt-1"]);
        source.fetch().await.unwrap();
        assert_eq!(
            sent(&seen),
            ["rt-0", "rt-1"],
            "the old one is never sent again"
        );
        assert_eq!(*persisted.lock().unwrap(), ["rt-1", "rt-2"]);
        let form = &seen.lock().unwrap()[0].0;
        assert!(
            form.starts_with("grant_type=refresh_token&refresh_token=rt-0"),
            "{form}"
        );
    }

    #[tokio::test]
    async fn a_failed_hook_still_serves_the_token_and_is_offered_the_token_again() {
        let seen = Seen::default();
        let calls = Arc::new(StdMutex::new(Vec::new()));
        let source = source(&seen).on_rotate({
            let calls = Arc::clone(&calls);
            move |rotated: Rotated| {
                let mut calls = calls.lock().unwrap();
                calls.push(rotated.secret().to_owned());
                let result = if calls.len() == 1 {
                    Err(std::io::Error::other("database down"))
                } else {
                    Ok(())
                };
                async move { result }
            }
        });
        assert_eq!(source.fetch().await.unwrap().secret(), "at-0");
        source.fetch().await.unwrap();
        assert_eq!(sent(&seen), ["rt-0", "rt-1"]);
        assert_eq!(*calls.lock().unwrap(), ["rt-1", "rt-1", "rt-2"]);
    }

    #[tokio::test]
    async fn concurrent_fetches_of_clones_send_each_refresh_token_once() {
        let seen = Seen::default();
        let source = source(&seen);
        let fetches = (0..64).map(|_| {
            let source = source.clone();
            tokio::spawn(async move { source.fetch().await })
        });
        for fetch in fetches {
            fetch.await.unwrap().unwrap();
        }
        let expected: Vec<String> = (0..64).map(|n| format!("rt-{n}")).collect();
        assert_eq!(sent(&seen), expected);
    }

    #[tokio::test]
    async fn invalid_grant_is_permanent_and_nothing_is_sent_after_it() {
        let seen = Seen::default();
        let source = RefreshToken::new("https://idp.example.com/token", "app", "s", "rt-0")
            .http_client(idp(
                Arc::clone(&seen),
                Some((400, r#"{"error":"invalid_grant"}"#)),
            ));
        let error = source.fetch().await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::GrantGone);
        assert!(error.is_permanent());
        assert_eq!(RefreshToken::retry_hint(&error), RetryHint::Permanent);
        assert!(
            error.to_string().contains("must authorize again"),
            "{error}"
        );
        let again = source.clone().fetch().await.unwrap_err();
        assert_eq!(again.kind(), ErrorKind::GrantGone);
        assert_eq!(seen.lock().unwrap().len(), 1, "no second request");
    }

    #[tokio::test]
    async fn other_refusals_are_not_the_grant_and_never_quote_the_refresh_token() {
        let seen = Seen::default();
        let source = RefreshToken::new("https://idp.example.com/token", "app", "s", "rt-0-long-secret")
            .http_client(idp(
                Arc::clone(&seen),
                Some((
                    503,
                    r#"{"error":"temporarily_unavailable","error_description":"busy with rt-0-long-secret"}"#,
                )),
            ));
        let error = source.fetch().await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Rejected);
        assert!(!error.is_permanent());
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("rt-0-long-secret"), "{shown}");
        source.fetch().await.unwrap_err();
        assert_eq!(
            seen.lock().unwrap().len(),
            2,
            "a transient failure is tried again"
        );
    }

    #[tokio::test]
    async fn a_public_client_sends_its_id_in_the_form_and_no_credential() {
        let seen = Seen::default();
        let source = RefreshToken::public("https://idp.example.com/token", "native app", "rt-0")
            .http_client(idp(Arc::clone(&seen), None));
        source.fetch().await.unwrap();
        let (form, headers) = seen.lock().unwrap()[0].clone();
        assert_eq!(
            form,
            "grant_type=refresh_token&refresh_token=rt-0&client_id=native+app"
        );
        assert!(headers.get(http::header::AUTHORIZATION).is_none());
    }

    #[cfg(feature = "dpop")]
    #[tokio::test]
    async fn a_dpop_refresh_carries_a_proof_for_the_token_endpoint() {
        let seen = Seen::default();
        let source = source(&seen).dpop(crate::dpop::ProofKey::generate().unwrap());
        source.fetch().await.unwrap();
        let headers = seen.lock().unwrap()[0].1.clone();
        assert!(headers.contains_key(crate::dpop::DPOP));
    }

    #[test]
    fn debug_never_shows_the_refresh_token() {
        let source = RefreshToken::new(
            "https://idp.example.com/token",
            "app",
            "s3cret",
            "rt-secret-value",
        );
        let debug = format!("{source:?} {source:#?}");
        assert!(
            !debug.contains("rt-secret-value") && !debug.contains("s3cret"),
            "{debug}"
        );
        assert!(debug.contains("<redacted>"));
        let rotated = Rotated(Zeroizing::new("rt-new".into()));
        assert_eq!(format!("{rotated:?}"), "Rotated(<redacted>)");
    }

    #[tokio::test]
    async fn a_refresh_abandoned_by_its_caller_still_records_its_rotation() {
        let seen = Seen::default();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let held = {
            let gate = Arc::clone(&gate);
            let inner = idp(Arc::clone(&seen), None);
            tower::service_fn(move |request: Request<Full<Bytes>>| {
                let (gate, mut inner) = (Arc::clone(&gate), inner.clone());
                async move {
                    let answer = tower_service::Service::call(&mut inner, request).await;
                    // The endpoint has rotated; its answer is held back.
                    let _ = gate.acquire().await;
                    answer
                }
            })
        };
        let persisted = Arc::new(StdMutex::new(Vec::new()));
        let source = RefreshToken::new("https://idp.example.com/token", "app", "s", "rt-0")
            .http_client(held)
            .on_rotate({
                let persisted = Arc::clone(&persisted);
                move |rotated: Rotated| {
                    persisted.lock().unwrap().push(rotated.secret().to_owned());
                    async { Ok::<_, Infallible>(()) }
                }
            });
        let abandoned = tokio::spawn(source.fetch());
        while seen.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        abandoned.abort();
        assert!(abandoned.await.unwrap_err().is_cancelled());
        gate.add_permits(100);
        // Bounded: without a task of its own, the refresh died with its
        // caller and nothing will come.
        for _ in 0..1000 {
            if !persisted.lock().unwrap().is_empty() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(*persisted.lock().unwrap(), ["rt-1"]);
        source.fetch().await.unwrap();
        assert_eq!(sent(&seen), ["rt-0", "rt-1"]);
    }

    /// The settings it shares with `ClientCredentials` (written once, in
    /// `forward.rs`) reach its token requests.
    #[tokio::test]
    async fn the_settings_shared_with_client_credentials_reach_the_request() {
        let seen = Seen::default();
        let source = source(&seen)
            .scopes(["read", "write"])
            .audience("api")
            .resource("https://api.example.com/")
            .param("tenant", "t1");
        #[cfg(feature = "secrecy")]
        let source = source.client_secret(&secrecy::SecretString::from("rotated-secret"));
        source.fetch().await.unwrap();

        let form = seen.lock().unwrap()[0].0.clone();
        let fields: Vec<&str> = form.split('&').collect();
        for field in [
            "scope=read+write",
            "audience=api",
            "resource=https%3A%2F%2Fapi.example.com%2F",
            "tenant=t1",
        ] {
            assert!(fields.contains(&field), "{field} in {form}");
        }
        #[cfg(feature = "secrecy")]
        {
            use base64::Engine as _;
            let basic = base64::engine::general_purpose::STANDARD.encode("app:rotated-secret");
            let headers = &seen.lock().unwrap()[0].1;
            assert_eq!(headers["authorization"], format!("Basic {basic}").as_str());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_timed_out_request_is_a_transient_error() {
        let hang = tower::service_fn(|_: Request<Full<Bytes>>| async {
            std::future::pending::<Result<Response<Full<Bytes>>, Infallible>>().await
        });
        let source = RefreshToken::new("https://idp.example.com/token", "app", "s", "rt-0")
            .request_timeout(Duration::from_secs(30))
            .http_client(hang);
        let error = source.fetch().await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Transport);
    }
}
