//! [`TokenExchange`]: a token source for the OAuth2 token exchange grant
//! (RFC 8693).

use std::fmt;
use std::sync::Arc;

use super::grant::{Exchange, Grant};
use super::{ClientCredentials, Error};
use crate::{RetryHint, TokenSource};

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

    /// As [`ClientCredentials::transport_identity`].
    #[cfg(feature = "store")]
    #[cfg_attr(docsrs, doc(cfg(feature = "store")))]
    pub fn transport_identity(mut self, name: impl Into<String>) -> Self {
        self.inner = self.inner.transport_identity(name);
        self
    }

    super::forward::forward_client_settings!();
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
