//! [`TokenExchange`]: a token source for the OAuth2 token exchange grant
//! (RFC 8693).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower_service::Service;

use super::grant::{Exchange, Grant};
#[cfg(feature = "private-key-jwt")]
use super::PrivateKey;
use super::{ClientAuth, ClientCredentials, Error};
use crate::{BoxError, RetryHint, TokenSource};

/// A [`TokenSource`] that exchanges a subject token, taken from any other
/// source, for an access token at an OAuth2 token endpoint (RFC 8693): a
/// Kubernetes service-account token read by a [`FileToken`](crate::FileToken)
/// exchanged at a security token service, say.
///
/// The subject token is asked of its source on every exchange, and is never
/// quoted in an error. Everything else is [`ClientCredentials`]'s: the
/// same client authentication (a secret, `private_key_jwt`, a client
/// assertion), the same response reading, and the same [`Error`]s, permanent
/// and transient told apart as the [module docs](super#errors) say. A subject
/// token the server refuses is `invalid_grant`, permanent; a failure of the
/// subject's source is a [`SubjectToken`](super::ErrorKind::SubjectToken)
/// error, and no request is sent.
///
/// The request: `grant_type=urn:ietf:params:oauth:grant-type:token-exchange`,
/// `subject_token`, `subject_token_type`, then `requested_token_type`,
/// `scope`, `audience`, each `resource` and each `param`, and the client's
/// authentication. The issued token must be a `Bearer` token.
///
/// ```
/// use tower_bearer::oauth2::{ClientAuth, TokenExchange};
/// use tower_bearer::{FileToken, TokenCache};
///
/// let subject = FileToken::new("/var/run/secrets/tokens/sts-token");
/// let cache = TokenCache::new(
///     TokenExchange::try_new("https://sts.example.com/token", "my-workload", "", subject)?
///         .auth_method(ClientAuth::Post)
///         .audience("https://api.example.com")
///         .requested_token_type(TokenExchange::ACCESS_TOKEN),
/// );
/// # drop(cache);
/// # Ok::<_, tower_bearer::oauth2::Error>(())
/// ```
#[derive(Clone)]
pub struct TokenExchange {
    inner: ClientCredentials,
}

impl TokenExchange {
    /// `urn:ietf:params:oauth:token-type:access_token`.
    pub const ACCESS_TOKEN: &'static str = "urn:ietf:params:oauth:token-type:access_token";
    /// `urn:ietf:params:oauth:token-type:jwt`: the default subject token type.
    pub const JWT: &'static str = "urn:ietf:params:oauth:token-type:jwt";
    /// `urn:ietf:params:oauth:token-type:id_token`.
    pub const ID_TOKEN: &'static str = "urn:ietf:params:oauth:token-type:id_token";

    /// A source that exchanges the token of `subject` at `token_url`, as
    /// `client_id` with `client_secret_basic` (pass an empty secret and
    /// choose another [`auth_method`](Self::auth_method) for a client
    /// without one). The subject token type is [`JWT`](Self::JWT).
    pub fn new(
        token_url: impl AsRef<str>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        subject: impl TokenSource,
    ) -> Self {
        let mut inner = ClientCredentials::new(token_url, client_id, client_secret);
        inner.grant = Grant::TokenExchange(Arc::new(Exchange {
            subject: Arc::new(subject),
            subject_token_type: Self::JWT.to_owned(),
            requested_token_type: None,
        }));
        Self { inner }
    }

    /// Like [`new`](Self::new), but fails at once if the token URL is not
    /// valid or not allowed, as [`ClientCredentials::try_new`] does.
    pub fn try_new(
        token_url: impl AsRef<str>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        subject: impl TokenSource,
    ) -> Result<Self, Error> {
        ClientCredentials::try_new(token_url.as_ref(), "", "")?;
        Ok(Self::new(token_url, client_id, client_secret, subject))
    }

    fn exchange(&mut self) -> &mut Exchange {
        match &mut self.inner.grant {
            Grant::TokenExchange(exchange) => Arc::make_mut(exchange),
            // `new` sets it, and nothing else changes it.
            Grant::ClientCredentials | Grant::RefreshToken => {
                unreachable!("a TokenExchange without its grant")
            }
        }
    }

    /// The `subject_token_type`. Default: [`JWT`](Self::JWT).
    pub fn subject_token_type(mut self, token_type: impl Into<String>) -> Self {
        self.exchange().subject_token_type = token_type.into();
        self
    }

    /// Sends `requested_token_type`. Default: none, the server decides.
    pub fn requested_token_type(mut self, token_type: impl Into<String>) -> Self {
        self.exchange().requested_token_type = Some(token_type.into());
        self
    }

    /// Sends `audience`, the logical name of the target service.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.inner = self.inner.audience(audience);
        self
    }

    /// Sends one more `resource`, the URI of the target service.
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.inner = self.inner.resource(resource);
        self
    }

    /// Asks for one more scope; scopes are sent space-joined as `scope`.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.inner = self.inner.scope(scope);
        self
    }

    /// Sends any other form field, after ours.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.inner = self.inner.param(name, value);
        self
    }

    /// How the client authenticates; see [`ClientCredentials::auth_method`].
    pub fn auth_method(mut self, auth: ClientAuth) -> Self {
        self.inner = self.inner.auth_method(auth);
        self
    }

    /// Authenticates with `private_key_jwt`; see
    /// [`ClientCredentials::private_key_jwt`].
    #[cfg(feature = "private-key-jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "private-key-jwt")))]
    pub fn private_key_jwt(mut self, key: PrivateKey) -> Self {
        self.inner = self.inner.private_key_jwt(key);
        self
    }

    /// Authenticates with a client assertion from `source`; see
    /// [`ClientCredentials::client_assertion`].
    pub fn client_assertion(mut self, source: impl TokenSource) -> Self {
        self.inner = self.inner.client_assertion(source);
        self
    }

    /// See [`ClientCredentials::default_lifetime`].
    pub fn default_lifetime(mut self, lifetime: Duration) -> Self {
        self.inner = self.inner.default_lifetime(lifetime);
        self
    }

    /// See [`ClientCredentials::allow_insecure_http`].
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.inner = self.inner.allow_insecure_http(allow);
        self
    }

    /// Sends token requests through `client`; see
    /// [`ClientCredentials::http_client`].
    pub fn http_client<S, B>(mut self, client: S) -> Self
    where
        S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        self.inner = self.inner.http_client(client);
        self
    }

    /// As [`ClientCredentials::transport_identity`].
    #[cfg(feature = "store")]
    #[cfg_attr(docsrs, doc(cfg(feature = "store")))]
    pub fn transport_identity(mut self, name: impl Into<String>) -> Self {
        self.inner = self.inner.transport_identity(name);
        self
    }

    /// Sends token requests through the application's `reqwest::Client`;
    /// see [`ClientCredentials::reqwest_client`].
    #[cfg(feature = "reqwest")]
    #[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
    pub fn reqwest_client(mut self, client: ::reqwest::Client) -> Self {
        self.inner = self.inner.reqwest_client(client);
        self
    }

    /// See [`ClientCredentials::client_secret`].
    #[cfg(feature = "secrecy")]
    #[cfg_attr(docsrs, doc(cfg(feature = "secrecy")))]
    pub fn client_secret(mut self, secret: &secrecy::SecretString) -> Self {
        self.inner = self.inner.client_secret(secret);
        self
    }

    /// See [`ClientCredentials::proxy`].
    pub fn proxy(mut self, proxy: super::Proxy) -> Self {
        self.inner = self.inner.proxy(proxy);
        self
    }

    /// See [`ClientCredentials::add_root_certificate_pem`].
    pub fn add_root_certificate_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.inner = self.inner.add_root_certificate_pem(pem);
        self
    }
}

impl TokenSource for TokenExchange {
    type Error = Error;
    type Future = <ClientCredentials as TokenSource>::Future;

    fn fetch(&self) -> Self::Future {
        self.inner.fetch()
    }

    fn retry_hint(error: &Error) -> RetryHint {
        ClientCredentials::retry_hint(error)
    }

    /// As [`ClientCredentials`]' identity, with the subject: its source's
    /// own identity and the token types. A subject source without an
    /// identity (a closure, a file: the subject differs from one process to
    /// the next) leaves the exchange without one, so it is not shared
    /// unless the cache is given one
    /// ([`TokenCache::store_identity`](crate::TokenCache::store_identity)),
    /// or the subject source is [named](crate::store::Named).
    #[cfg(feature = "store")]
    fn store_identity(&self) -> Option<crate::store::StoreIdentity> {
        TokenSource::store_identity(&self.inner)
    }
}

impl fmt::Debug for TokenExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The grant's fields are in the inner source's `Debug`.
        fmt::Debug::fmt(&self.inner, f)
    }
}
