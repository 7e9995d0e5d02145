//! OAuth2 client credentials: [`ClientCredentials`], a token source for
//! machine-to-machine calls (RFC 6749 §4.4), authenticated by a secret, a
//! signed `private_key_jwt` assertion, or a client assertion from a file;
//! and [`TokenExchange`] (RFC 8693).
//!
//! Behind the `oauth2` feature (on by default); https for the built-in client
//! comes with the `rustls` feature (on by default).
//!
//! # Example
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use tower_bearer::oauth2::ClientCredentials;
//! use tower_bearer::BearerAuthLayer;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), tower_bearer::BoxError> {
//! let source = ClientCredentials::try_new("https://idp.example.com/oauth/token", "my-client", "s3cret")?
//!     .scope("orders:read");
//! let mut client = ServiceBuilder::new()
//!     .layer(BearerAuthLayer::new(source))
//!     .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
//!
//! let request = http::Request::get("http://127.0.0.1:8080/orders").body(Full::default())?;
//! let response = client.ready().await?.call(request).await?;
//! # Ok(())
//! # }
//! ```
//!
//! `cargo run --example client_credentials` runs this against the examples'
//! local backend, or against a real identity provider with `TOKEN_URL`,
//! `CLIENT_ID` and `CLIENT_SECRET` (and optionally `SCOPE`, `AUDIENCE`,
//! `API_URL`) in the environment.
//!
//! # Options
//!
//! [`ClientCredentials::try_new`] checks the token URL up front;
//! [`new`](ClientCredentials::new) never fails, and a bad URL fails every
//! fetch with a permanent error.
//!
//! | setter | sends / does | default |
//! |---|---|---|
//! | [`scope`](ClientCredentials::scope), [`scopes`](ClientCredentials::scopes) | `scope`, space-joined | none |
//! | [`audience`](ClientCredentials::audience) | `audience` (Auth0, Okta) | none |
//! | [`resource`](ClientCredentials::resource) | `resource`, repeatable (RFC 8707) | none |
//! | [`param`](ClientCredentials::param) | any other form field, after ours | none |
//! | [`auth_method`](ClientCredentials::auth_method) | [`ClientAuth::Basic`] or [`ClientAuth::Post`] | `Basic` |
//! | [`private_key_jwt`](ClientCredentials::private_key_jwt) | a signed `client_assertion` per request ([`ClientAuth::PrivateKeyJwt`]) | none |
//! | [`client_assertion`](ClientCredentials::client_assertion) | a `client_assertion` from your source per request ([`ClientAuth::Assertion`]) | none |
//! | [`assertion_audience`](ClientCredentials::assertion_audience) | the signed assertion's `aud` | the token URL |
//! | [`assertion_lifetime`](ClientCredentials::assertion_lifetime) | the signed assertion's `exp - iat`, at most 5 min | 60 s |
//! | [`default_lifetime`](ClientCredentials::default_lifetime) | lifetime of a token with neither `expires_in` nor a JWT `exp` | 1 hour |
//! | [`allow_insecure_http`](ClientCredentials::allow_insecure_http) | allow plain `http` to a host that is not loopback | off |
//! | [`http_client`](ClientCredentials::http_client) | send through any tower HTTP service instead of the built-in client | hyper-util + rustls |
//! | `reqwest_client` (`reqwest` feature) | send through the application's `reqwest::Client` | hyper-util + rustls |
//! | [`proxy`](ClientCredentials::proxy) | the built-in client's proxy ([`Proxy`]) | from the environment |
//! | [`add_root_certificate_pem`](ClientCredentials::add_root_certificate_pem) | one more trusted CA for the built-in client | platform + Mozilla roots |
//!
//! [`RefreshToken`] and [`TokenExchange`] take every setter of this table,
//! and `client_secret` (`secrecy` feature), with the same meaning: each
//! holds a `ClientCredentials` that makes its requests, and forwards them
//! to it.
//!
//! # The request
//!
//! `POST` to the token URL, `application/x-www-form-urlencoded`, with
//! `Accept: application/json` and the form `grant_type=client_credentials`,
//! then `scope` (space-joined), `audience`, each `resource` and each
//! [`param`](ClientCredentials::param), in that order. The client
//! authenticates with [`ClientAuth::Basic`] (`client_secret_basic`, the
//! default: the id and secret form-encoded, then joined by `:` and
//! base64-encoded, as RFC 6749 §2.3.1 requires) or [`ClientAuth::Post`]
//! (`client_secret_post`: both in the form). A server that forgets to decode
//! the Basic credentials chokes on a secret with spaces or `:` in it: use
//! `Post` there.
//!
//! The token URL must be `https`. Plain `http` is allowed to `localhost`,
//! `127.0.0.0/8` and `[::1]`, and to other hosts only with
//! [`allow_insecure_http(true)`](ClientCredentials::allow_insecure_http).
//!
//! # Without a shared secret
//!
//! **`private_key_jwt`** (RFC 7523 §2.2, OpenID Connect Core §9), behind
//! the `private-key-jwt` feature (on by default): each token request carries
//! `client_id`,
//! `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`
//! and a new JWT signed with the client's [`PrivateKey`] (RS256, PS256,
//! ES256 or EdDSA, from PKCS#8), with `iss` = `sub` = the client id, `aud`
//! = the token URL (or [`assertion_audience`](ClientCredentials::assertion_audience),
//! the issuer say), a random `jti`, `iat`, and `exp` a minute later. The
//! header carries `alg`, and `kid` and `x5t#S256` when set. Tested against
//! oidc-provider, a certified OpenID Provider: each algorithm is accepted; a
//! wrong key, an expired assertion and a replayed one are a permanent
//! `invalid_client`.
//!
//! ```
//! use tower_bearer::oauth2::{Algorithm, ClientCredentials, PrivateKey};
//! use tower_bearer::TokenCache;
//!
//! # fn main() -> Result<(), tower_bearer::oauth2::Error> {
//! # let pem = include_str!("../../tests/fixtures/oidc-provider/keys/rsa.pem");
//! // let pem = std::fs::read_to_string("/etc/my-app/client-key.pem")?;
//! let key = PrivateKey::from_pkcs8_pem(Algorithm::PS256, &pem)?.key_id("2026-11");
//! let cache = TokenCache::new(
//!     ClientCredentials::try_new("https://idp.example.com/oauth/token", "my-client", "")?
//!         .private_key_jwt(key),
//! );
//! # drop(cache);
//! # Ok(())
//! # }
//! ```
//!
//! **A client assertion of your own** ([`client_assertion`](ClientCredentials::client_assertion)):
//! any [`TokenSource`](crate::TokenSource) whose token is the assertion,
//! asked for on each token request. [`FileAssertion`] reads a federated
//! token file (workload identity federation: `AZURE_FEDERATED_TOKEN_FILE`,
//! a Kubernetes projected token for the identity provider's audience).
//!
//! ```
//! use tower_bearer::oauth2::{ClientCredentials, FileAssertion};
//!
//! let source = ClientCredentials::try_new("https://login.example.com/tenant/oauth2/v2.0/token", "app-id", "")?
//!     .client_assertion(FileAssertion::new("/var/run/secrets/azure/tokens/azure-identity-token"))
//!     .scope("https://api.example.com/.default");
//! # drop(source);
//! # Ok::<_, tower_bearer::oauth2::Error>(())
//! ```
//!
//! [`ClientAuth`] is a `Copy + Eq` tag: the key and the source
//! are held beside it (see [`ClientAuth`] for why).
//!
//! # Token exchange
//!
//! [`TokenExchange`] (RFC 8693) exchanges a subject token from any
//! [`TokenSource`](crate::TokenSource) (a [`FileToken`](crate::FileToken)
//! holding a Kubernetes service-account token, say) for an access token,
//! with `subject_token_type`, `requested_token_type`, `audience`,
//! `resource` and `scope`. It shares `ClientCredentials`'s client
//! authentication, request and response code and errors; the subject token
//! is read on every exchange and never quoted in an error. Tested against an
//! in-process endpoint: no conformant RFC 8693 server is on the package
//! registries.
//!
//! # Refresh tokens
//!
//! [`RefreshToken`] (RFC 6749 §6) keeps an access token fresh with a
//! refresh token the application obtained, with the same client
//! authentication (and [`ClientAuth::None`] for public clients). A rotated
//! refresh token is never sent again and reaches the application's
//! [`on_rotate`](RefreshToken::on_rotate) hook before its access token is
//! used; `invalid_grant` is a permanent [`GrantGone`](ErrorKind::GrantGone)
//! after which nothing is sent; with the `seal` feature,
//! [`fleet`](RefreshToken::fleet) refreshes under a sealed store's lease so
//! that no replica presents a rotated token. See `docs/refresh-tokens.md`.
//!
//! # The response
//!
//! - `access_token` is required, and so is `token_type`, which must be
//!   `Bearer` in any case; anything else is an
//!   [`UnsupportedTokenType`](ErrorKind::UnsupportedTokenType) error.
//! - The token expires `expires_in` seconds (a number, or a string of
//!   digits) after the request **started**. Without `expires_in`, a token
//!   that is a JWT expires at its `exp` claim (read, not verified: the token
//!   is for the resource server to verify), and any other after
//!   [`default_lifetime`](ClientCredentials::default_lifetime) (one hour).
//! - **One rule for absurd expiry values:** any lifetime longer than
//!   [`MAX_LIFETIME`](ClientCredentials::MAX_LIFETIME) (365 days) counts as
//!   365 days, whether it came as a number (`1e300`), a string of digits of
//!   any length, or a JWT `exp` far in the future. A negative `expires_in`
//!   is an error; `0`, or a JWT `exp` that has passed, is a token that
//!   arrives already expired, which the cache counts as a failure.
//! - A key that appears twice in the top-level JSON object is an
//!   [`InvalidResponse`](ErrorKind::InvalidResponse) error, not a guess.
//! - The body is read up to 64 KiB; a bigger one is a
//!   [`BodyTooLarge`](ErrorKind::BodyTooLarge) error.
//!
//! # Errors
//!
//! Failures are an [`Error`] with an [`ErrorKind`]. Errors quote less rather
//! than mask more: neither an error's `Display` nor its `Debug` quotes a
//! response body. An OAuth2 error response (§5.2) is kept as an
//! [`ErrorResponse`] with its `error`, `error_description` and `error_uri`,
//! each sanitized: control characters replaced by spaces, format characters
//! (Unicode Cf, among them the bidi overrides) and line and paragraph
//! separators (Zl, Zp) removed, cut to a bounded length, and with these
//! masked as `<redacted>`:
//!
//! - the client secret, raw, form-encoded (upper- or lowercase hex), or
//!   inside the base64 of the Basic `id:secret` pair (form-encoded or not);
//! - every other string value of 8 characters or more in the same JSON
//!   answer, at any depth: a token, whatever its field's name.
//!
//! JSON escapes (`\/`, `\u005f`, `\"`) are decoded before the masking. A
//! `token_type` that is not `Bearer` is quoted only when it is at most 20
//! letters, digits, `-`, `_` or `.`. Any other body (an HTML error page,
//! truncated JSON, a form-encoded or plain-text answer) is described, not
//! quoted: its content type and its length in bytes. An error from an HTTP
//! client of your own ([`http_client`](ClientCredentials::http_client)) is
//! the [`source`](std::error::Error::source) of a
//! [`Transport`](ErrorKind::Transport) error, as that client wrote it.
//!
//! The cache is told what each failure means
//! ([`TokenSource::retry_hint`](crate::TokenSource::retry_hint)):
//!
//! - **permanent** ([`Error::is_permanent`]): wrong credentials or
//!   configuration (`invalid_client`, `unauthorized_client`, `invalid_scope`,
//!   `unsupported_grant_type`, `invalid_grant`, `invalid_request`,
//!   `invalid_target`, other `4xx` statuses, a disallowed URL, a token that
//!   is not a bearer token). The cache waits its maximum backoff before the
//!   next try, and its error says
//!   [`is_permanent`](crate::TokenError::is_permanent);
//! - **transient**: connection failures, `5xx`, `408`, `429`, malformed
//!   success responses. The cache's usual backoff applies;
//! - **`Retry-After`** on a `429` or `503`, in seconds or as an HTTP date,
//!   holds the next fetch back at least that long (at most an hour).
//!
//! # Security
//!
//! The client secret never appears in `Debug` output nor in errors. It is
//! kept in a buffer wiped from memory when the source is dropped (with
//! `zeroize`), and so is every buffer the crate builds from it: the
//! form-encoded secret, the `id:secret` pair and its base64 for Basic
//! authentication, the form body, and the encodings of the secret an error
//! is masked against. Each is sized exactly up front or moved (and the old
//! one wiped) when it grows, so that no reallocation leaves an unwiped copy
//! behind. Copies that remain unwiped: the ones made for the wire (the
//! `Authorization` header value, the request body's `Bytes`, and the HTTP
//! client's buffers), any copy you made before handing the secret to
//! [`ClientCredentials::new`], and any copy the server echoes back in its
//! response body.
//!
//! # The HTTP client
//!
//! By default, hyper-util's client, HTTP/1.1, with:
//!
//! - **TLS** from rustls, on the application's crypto provider when it has
//!   installed one, else on the provider of this crate's `aws-lc-rs`
//!   feature (on by default, as for rustls and reqwest 0.13) or `ring`
//!   feature. The crate never installs a process-wide provider, so an
//!   application's own `rustls::ClientConfig::builder()` is unaffected.
//!   With neither feature and no installed provider, an https fetch fails
//!   with a permanent [`Config`](ErrorKind::Config) error.
//! - **Roots**: the platform's store (`native-roots`, read with
//!   rustls-native-certs, as reqwest trusts it), Mozilla's compiled in
//!   (`webpki-roots`, so a bare container still works), and any CA you add
//!   with [`add_root_certificate_pem`](ClientCredentials::add_root_certificate_pem).
//! - **Proxy**: `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` from
//!   the environment, read when the client is built, with a `CONNECT`
//!   tunnel to an `http://` proxy. Opt out or set one explicitly with
//!   [`proxy`](ClientCredentials::proxy) ([`Proxy`]).
//!
//! Or bring your own: the application's `reqwest::Client` (reqwest 0.13,
//! the `reqwest` feature) with
//! [`reqwest_client`](ClientCredentials::reqwest_client), or any tower HTTP
//! service with [`http_client`](ClientCredentials::http_client), for client
//! certificates or anything else. Each fetch is bounded by the cache's
//! [`fetch_timeout`](crate::TokenCache::fetch_timeout). See `docs/tls.md`
//! for the reasons behind each choice.
//!
//! # Out of scope
//!
//! Interactive flows (authorization code, device code: the application
//! obtains the first refresh token, then [`RefreshToken`] keeps the access
//! token fresh), and client authentication by mutual TLS.

mod client_auth;
mod client_credentials;
mod error;
mod form;
mod forward;
mod grant;
mod redact;
mod refresh_token;
mod response;
mod retry_after;
mod send;
mod token_exchange;
mod transport;

pub use self::client_auth::ClientAuth;
#[cfg(feature = "private-key-jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "private-key-jwt")))]
pub use self::client_auth::{Algorithm, PrivateKey};
pub use self::client_credentials::ClientCredentials;
pub use self::refresh_token::{RefreshToken, Rotated};
pub use self::token_exchange::TokenExchange;
pub use self::transport::Proxy;

/// A client assertion read from a file on each token request: a federated
/// token (`AZURE_FEDERATED_TOKEN_FILE`, a Kubernetes projected token with
/// the identity provider as its audience), for
/// [`ClientCredentials::client_assertion`].
///
/// It is [`FileToken`](crate::FileToken): the assertion source is not
/// cached, so the file is read again for every token request, and its
/// errors are `FileToken`'s.
#[cfg(feature = "file")]
#[cfg_attr(docsrs, doc(cfg(feature = "file")))]
pub type FileAssertion = crate::FileToken;
pub use self::error::{Error, ErrorKind, ErrorResponse};
