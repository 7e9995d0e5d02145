//! [`ClientCredentials`]: a token source for the OAuth2 client-credentials
//! grant (RFC 6749 §4.4).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{Request, Response, Uri};
use http_body_util::Full;
use tower_service::Service;
use zeroize::Zeroizing;

#[cfg(feature = "private-key-jwt")]
use super::client_auth::PrivateKey;
use super::client_auth::{ClientAuth, Credentials};
use super::error::Error;
use super::form::Form;
use super::grant::Grant;
use super::response;
#[cfg(feature = "dpop")]
use super::send::token_request_proof;
use super::send::{send, Prepared};
use super::transport::{self, Builtin, HttpClient, Proxy, Tower};
use crate::{BoxError, RetryHint, Token, TokenSource};

/// A [`TokenSource`] that asks an OAuth2 token endpoint for a token with the
/// client-credentials grant (RFC 6749 §4.4), for machine-to-machine calls.
///
/// See the [module docs](super) for the request it sends, how it reads the
/// answer and which failures are permanent.
///
/// ```
/// use std::time::Duration;
/// use tower_bearer::oauth2::{ClientAuth, ClientCredentials};
///
/// let source = ClientCredentials::try_new("https://idp.example.com/oauth/token", "my-client", "s3cret")?
///     .scopes(["orders:read", "orders:write"])
///     .audience("https://api.example.com")
///     .auth_method(ClientAuth::Post)
///     .default_lifetime(Duration::from_secs(600));
/// // Never shows the secret.
/// assert!(!format!("{source:?}").contains("s3cret"));
/// # Ok::<_, tower_bearer::oauth2::Error>(())
/// ```
#[derive(Clone)]
pub struct ClientCredentials {
    token_url: String,
    uri: Result<Uri, Error>,
    client_id: String,
    credentials: Credentials,
    scopes: Vec<String>,
    audience: Option<String>,
    resources: Vec<String>,
    params: Vec<(String, String)>,
    auth: ClientAuth,
    pub(super) grant: Grant,
    default_lifetime: Duration,
    allow_insecure_http: bool,
    client: Client,
    /// What the application says a custom client changes about the tokens
    /// (see `transport_identity`): without it, a source with a custom
    /// client has no store identity.
    #[cfg(feature = "store")]
    transport_identity: Option<String>,
    /// The DPoP key and the token endpoint's nonce.
    #[cfg(feature = "dpop")]
    dpop: Option<crate::dpop::Binding>,
}

#[derive(Clone)]
enum Client {
    /// The built-in hyper-util client with its settings, built on the
    /// first fetch.
    Default(Builtin, Arc<OnceLock<Result<Arc<dyn HttpClient>, Error>>>),
    /// The user's own service.
    Custom(Arc<dyn HttpClient>),
}

type FetchFuture = Pin<Box<dyn Future<Output = Result<Token, Error>> + Send>>;

impl ClientCredentials {
    /// The lifetime of a token whose response has neither `expires_in` nor
    /// a JWT `exp` claim, unless set with
    /// [`default_lifetime`](Self::default_lifetime): one hour.
    pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(60 * 60);

    /// The longest lifetime a fetched token is given: 365 days. An
    /// `expires_in` (number or string of digits, however large) or a JWT
    /// `exp` further off than this counts as this, so that no server's
    /// number can overflow the clock or switch refreshing off.
    pub const MAX_LIFETIME: Duration = response::MAX_LIFETIME;

    /// A source that asks `token_url` for tokens as `client_id`, using the
    /// built-in client and `client_secret_basic`.
    ///
    /// It never fails: a token URL that is not valid or not allowed (see
    /// [`allow_insecure_http`](Self::allow_insecure_http)) makes every fetch
    /// fail with a permanent [`Config`](super::ErrorKind::Config) error.
    /// [`try_new`](Self::try_new) checks it up front.
    pub fn new(
        token_url: impl AsRef<str>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        let token_url = token_url.as_ref().to_owned();
        Self {
            uri: transport::check_url(&token_url, false),
            token_url,
            client_id: client_id.into(),
            credentials: Credentials::new(client_secret.into()),
            scopes: Vec::new(),
            audience: None,
            resources: Vec::new(),
            params: Vec::new(),
            auth: ClientAuth::Basic,
            grant: Grant::ClientCredentials,
            default_lifetime: Self::DEFAULT_LIFETIME,
            allow_insecure_http: false,
            client: Client::Default(Builtin::default(), Arc::default()),
            #[cfg(feature = "store")]
            transport_identity: None,
            #[cfg(feature = "dpop")]
            dpop: None,
        }
    }

    /// Like [`new`](Self::new), but fails at once if the token URL is not a
    /// valid `https` URL (or plain `http` to a loopback host). The URL is
    /// anything that is `AsRef<str>`: a `&str`, a `String`, or a
    /// `&url::Url`.
    ///
    /// ```
    /// use tower_bearer::oauth2::{ClientCredentials, ErrorKind};
    ///
    /// let error = ClientCredentials::try_new("http://idp.example.com/token", "id", "secret")
    ///     .unwrap_err();
    /// assert_eq!(error.kind(), ErrorKind::Config);
    /// assert!(ClientCredentials::try_new("http://127.0.0.1:8080/token", "id", "secret").is_ok());
    /// ```
    pub fn try_new(
        token_url: impl AsRef<str>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Result<Self, Error> {
        let source = Self::new(token_url, client_id, client_secret);
        match &source.uri {
            Ok(_) => Ok(source),
            Err(error) => Err(error.clone()),
        }
    }

    /// Sets the client secret from a `secrecy::SecretString` (the `secrecy`
    /// feature), replacing the one given to [`new`](Self::new) (pass `""`
    /// there). It is copied once, into the source's own buffer, wiped when
    /// the source is dropped; no plain `String` copy is made on the way.
    ///
    /// ```
    /// use secrecy::SecretString;
    /// use tower_bearer::oauth2::ClientCredentials;
    ///
    /// let secret = SecretString::from("s3cret");
    /// let source = ClientCredentials::try_new("https://idp.example.com/token", "id", "")?
    ///     .client_secret(&secret);
    /// assert!(!format!("{source:?}").contains("s3cret"));
    /// # Ok::<_, tower_bearer::oauth2::Error>(())
    /// ```
    #[cfg(feature = "secrecy")]
    #[cfg_attr(docsrs, doc(cfg(feature = "secrecy")))]
    pub fn client_secret(mut self, secret: &secrecy::SecretString) -> Self {
        use secrecy::ExposeSecret as _;
        let secret = secret.expose_secret();
        let mut copy = Zeroizing::new(String::with_capacity(secret.len()));
        copy.push_str(secret);
        self.credentials.secret = copy;
        self
    }

    /// Asks for one more scope. Scopes are sent space-joined as `scope`.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scopes.push(scope.into());
        self
    }

    /// Asks for these scopes as well.
    pub fn scopes<I>(mut self, scopes: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.scopes.extend(scopes.into_iter().map(Into::into));
        self
    }

    /// Sends `audience` (Auth0, Okta and others name the API the token is
    /// for with it).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Sends one more `resource` (RFC 8707 resource indicators).
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resources.push(resource.into());
        self
    }

    /// Sends any other form parameter, after the crate's own. Do not repeat
    /// `grant_type` or the client's credentials with it.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push((name.into(), value.into()));
        self
    }

    /// How the client authenticates. Default: [`ClientAuth::Basic`].
    pub fn auth_method(mut self, auth: ClientAuth) -> Self {
        self.auth = auth;
        self
    }

    /// Authenticates with `private_key_jwt` (RFC 7523 §2.2): each token
    /// request carries a new JWT signed with `key`, with `iss` = `sub` = the
    /// client id, `aud` = the token URL (or
    /// [`assertion_audience`](Self::assertion_audience)), a random `jti`,
    /// `iat`, and `exp` [`assertion_lifetime`](Self::assertion_lifetime)
    /// later. Selects [`ClientAuth::PrivateKeyJwt`]; the client secret given
    /// to [`new`](Self::new) is not sent (pass `""`).
    #[cfg(feature = "private-key-jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "private-key-jwt")))]
    pub fn private_key_jwt(mut self, key: PrivateKey) -> Self {
        self.credentials.key = Some(key);
        self.auth = ClientAuth::PrivateKeyJwt;
        self
    }

    /// Asks for DPoP-bound tokens (RFC 9449), proving possession of `key`.
    ///
    /// Each token request carries a `DPoP` proof: `htm` `POST`, `htu` the
    /// token URL without query or fragment, `iat`, a random `jti`, and the
    /// token endpoint's last nonce. A response with `token_type` `DPoP` (in
    /// any case) gives a token bound to `key`, which the layer and the
    /// reqwest middleware then send as `Authorization: DPoP` with a proof
    /// per request; a server that answers `Bearer` instead (it does not do
    /// DPoP) gives a plain bearer token.
    ///
    /// The token endpoint's nonce challenge (a `400` whose `error` is
    /// `use_dpop_nonce`, with a `DPoP-Nonce` header) is answered at once,
    /// within the same fetch, by one more request with the nonce; a nonce on
    /// any response of the token endpoint is remembered for its next
    /// request. That nonce is kept apart from the resources' nonces.
    ///
    /// The token URL must be spelled as the server names its token endpoint
    /// (its `token_endpoint` metadata): `htu` is compared with it, so that a
    /// URL a proxy rewrites, or `localhost` at a server that calls itself
    /// `127.0.0.1`, fails with an htu mismatch. See [`crate::dpop`].
    ///
    /// ```
    /// use tower_bearer::dpop::ProofKey;
    /// use tower_bearer::oauth2::ClientCredentials;
    ///
    /// # fn main() -> Result<(), String> {
    /// let source = ClientCredentials::try_new("https://idp.example.com/token", "my-client", "s3cret")
    ///     .map_err(|error| error.to_string())?
    ///     .dpop(ProofKey::generate().map_err(|error| error.to_string())?);
    /// # let _ = source;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "dpop")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dpop")))]
    pub fn dpop(mut self, key: crate::dpop::ProofKey) -> Self {
        self.dpop = Some(crate::dpop::Binding::new(key));
        self
    }

    /// The `aud` of signed assertions, when the server wants its issuer
    /// rather than the token URL (the default).
    pub fn assertion_audience(mut self, audience: impl Into<String>) -> Self {
        self.credentials.audience = Some(audience.into());
        self
    }

    /// How long a signed assertion is valid: one minute by default, at
    /// most five (longer counts as five, shorter than a second as one).
    /// Servers remember each `jti` until the assertion expires, so short is
    /// kind to them.
    pub fn assertion_lifetime(mut self, lifetime: Duration) -> Self {
        self.credentials.lifetime =
            lifetime.clamp(Duration::from_secs(1), Credentials::MAX_ASSERTION_LIFETIME);
        self
    }

    /// Authenticates with a client assertion from `source`, asked for on
    /// each token request and sent as `client_assertion` with
    /// `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`:
    /// a federated token file ([`FileAssertion`](super::FileAssertion)), or
    /// any [`TokenSource`] (a closure, say) whose token is the assertion.
    /// Selects [`ClientAuth::Assertion`].
    ///
    /// The source is not cached: a file is read again for each token
    /// request. Its failure is an [`Assertion`](super::ErrorKind::Assertion)
    /// error, permanent when the source says so.
    pub fn client_assertion(mut self, source: impl TokenSource) -> Self {
        self.credentials.assertion = Some(Arc::new(source));
        self.auth = ClientAuth::Assertion;
        self
    }

    /// The lifetime of a token whose response has neither `expires_in` nor
    /// a JWT `exp` claim. Default: [`DEFAULT_LIFETIME`](Self::DEFAULT_LIFETIME),
    /// one hour. A server that revokes it earlier answers 401, which evicts
    /// it.
    pub fn default_lifetime(mut self, lifetime: Duration) -> Self {
        self.default_lifetime = lifetime;
        self
    }

    /// Allows a plain `http` token URL to a host that is not loopback.
    /// Default: `false`: the secret and the tokens would cross the network in
    /// clear text. `http://localhost`, `127.0.0.0/8` and `[::1]` are always
    /// allowed.
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self.uri = transport::check_url(&self.token_url, allow);
        self
    }

    /// Sends token requests through `client` instead of the built-in
    /// hyper-util client: any tower service of `http::Request<Full<Bytes>>`
    /// whose response body is an [`http_body::Body`], so that proxies, TLS
    /// and timeouts can be your own.
    ///
    /// The service is cloned for each fetch, and made ready before it is
    /// called.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use bytes::Bytes;
    /// use http::{Request, Response};
    /// use http_body_util::Full;
    /// use tower::service_fn;
    /// use tower_bearer::oauth2::ClientCredentials;
    /// use tower_bearer::TokenCache;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_bearer::BoxError> {
    /// // Stands in for your own HTTP client.
    /// let idp = service_fn(|_request: Request<Full<Bytes>>| async {
    ///     let body = r#"{"access_token":"abcd1234","token_type":"Bearer","expires_in":3600}"#;
    ///     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
    /// });
    /// let cache = TokenCache::new(
    ///     ClientCredentials::try_new("https://idp.example.com/token", "id", "secret")?.http_client(idp),
    /// );
    /// assert_eq!(cache.token().await?.secret(), "abcd1234");
    /// # Ok(())
    /// # }
    /// ```
    pub fn http_client<S, B>(mut self, client: S) -> Self
    where
        S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        self.client = Client::Custom(Arc::new(Tower::new(client)));
        self
    }

    /// Names what the custom client of [`http_client`](Self::http_client)
    /// (or `reqwest_client`, feature `reqwest`) does to token requests, for
    /// the [store](crate::store) identity.
    ///
    /// A client of your own may change who a token is for: a client
    /// certificate (RFC 8705 binds tokens to it), headers it adds, a
    /// gateway it routes through. The crate cannot see any of it, so a
    /// source with a custom client is not shared through a store until you
    /// name its client here: processes whose clients have the same name
    /// promise that their clients make interchangeable tokens (the same
    /// certificate, say). Never put a secret in it. The built-in client
    /// needs no name.
    #[cfg(feature = "store")]
    #[cfg_attr(docsrs, doc(cfg(feature = "store")))]
    pub fn transport_identity(mut self, name: impl Into<String>) -> Self {
        self.transport_identity = Some(name.into());
        self
    }

    /// Sends token requests through the application's own
    /// `reqwest::Client` (reqwest 0.13), with its proxy, roots, TLS provider
    /// and timeouts, instead of the built-in client.
    ///
    /// ```
    /// use tower_bearer::oauth2::ClientCredentials;
    ///
    /// let http = reqwest::Client::new();
    /// let source = ClientCredentials::try_new("https://idp.example.com/token", "id", "secret")?
    ///     .reqwest_client(http);
    /// # Ok::<_, tower_bearer::oauth2::Error>(())
    /// ```
    #[cfg(feature = "reqwest")]
    #[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
    pub fn reqwest_client(mut self, client: ::reqwest::Client) -> Self {
        self.client = Client::Custom(Arc::new(transport::Reqwest(client)));
        self
    }

    /// How the built-in client reaches the token endpoint: through the
    /// proxy the environment names (the default), directly, or through a
    /// proxy of your own. See [`Proxy`]. A client of your own
    /// ([`http_client`](Self::http_client),
    /// [`reqwest_client`](Self::reqwest_client)) uses its own proxy
    /// settings instead.
    ///
    /// ```
    /// use tower_bearer::oauth2::{ClientCredentials, Proxy};
    ///
    /// let source = ClientCredentials::try_new("https://idp.example.com/token", "id", "secret")?
    ///     .proxy(Proxy::Url("http://proxy.internal:3128".into()));
    /// # Ok::<_, tower_bearer::oauth2::Error>(())
    /// ```
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.builtin(|settings| settings.proxy = proxy);
        self
    }

    /// Makes the built-in client trust the certificates of `pem` (one or
    /// more `CERTIFICATE` blocks) as roots, beside the platform's roots
    /// (`native-roots`) and Mozilla's (`webpki-roots`): for an identity
    /// provider behind a private CA or a TLS-inspecting proxy. A PEM that
    /// holds no valid certificate makes every fetch fail with a permanent
    /// [`Config`](super::ErrorKind::Config) error.
    ///
    /// ```
    /// use tower_bearer::oauth2::ClientCredentials;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let path = std::env::temp_dir().join("tower-bearer-doc-ca.pem");
    /// # std::fs::write(&path, "")?;
    /// let ca = std::fs::read(&path)?;
    /// let source = ClientCredentials::try_new("https://idp.corp.internal/token", "id", "secret")?
    ///     .add_root_certificate_pem(ca);
    /// # Ok(())
    /// # }
    /// ```
    pub fn add_root_certificate_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        let pem: Arc<[u8]> = Arc::from(pem.as_ref());
        self.builtin(|settings| settings.roots_pem.push(pem));
        self
    }

    /// Changes the built-in client's settings; it is built again on the
    /// next fetch. Ignored with a client of your own.
    fn builtin(&mut self, change: impl FnOnce(&mut Builtin)) {
        if let Client::Default(settings, client) = &mut self.client {
            change(settings);
            *client = Arc::default();
        }
    }

    /// The token request, and the client to send it with.
    fn prepare(&self, assertion: Option<&str>, subject: Option<&str>) -> Result<Prepared, Error> {
        let uri = self.uri.clone()?;
        let client = match &self.client {
            Client::Custom(client) => Arc::clone(client),
            Client::Default(settings, client) => {
                if uri.scheme_str() == Some("https") && !transport::DEFAULT_CLIENT_HAS_TLS {
                    return Err(Error::config(
                        "an https token URL needs the `rustls` feature, or a client of your own \
                         (http_client)",
                    ));
                }
                client
                    .get_or_init(|| transport::default_client(settings))
                    .clone()?
            }
        };
        let mut masked = Vec::new();
        let request = self.request(uri, assertion, subject, &mut masked)?;
        Ok(Prepared {
            client,
            request,
            masked,
            #[cfg(feature = "dpop")]
            dpop: self.dpop.clone(),
        })
    }

    fn request(
        &self,
        uri: Uri,
        assertion: Option<&str>,
        subject: Option<&str>,
        masked: &mut Vec<Zeroizing<String>>,
    ) -> Result<Request<Full<Bytes>>, Error> {
        let mut form = Form::default();
        match &self.grant {
            Grant::ClientCredentials => form.pair("grant_type", "client_credentials"),
            Grant::TokenExchange(exchange) => {
                let subject = subject
                    .ok_or_else(|| Error::config("a token exchange without a subject token"))?;
                masked.push(Zeroizing::new(subject.to_owned()));
                exchange.pairs(subject, &mut form);
            }
            Grant::RefreshToken => {
                let refresh =
                    subject.ok_or_else(|| Error::config("a refresh without a refresh token"))?;
                masked.push(Zeroizing::new(refresh.to_owned()));
                form.pair("grant_type", "refresh_token");
                form.pair("refresh_token", refresh);
            }
        }
        if !self.scopes.is_empty() {
            form.pair("scope", &self.scopes.join(" "));
        }
        if let Some(audience) = &self.audience {
            form.pair("audience", audience);
        }
        for resource in &self.resources {
            form.pair("resource", resource);
        }
        for (name, value) in &self.params {
            form.pair(name, value);
        }
        let mut request = Request::post(uri.clone())
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        #[cfg(feature = "dpop")]
        if let Some(binding) = &self.dpop {
            request = request.header(crate::dpop::DPOP, token_request_proof(binding, &uri)?);
        }
        if let Some(header) = self.credentials.authenticate(
            self.auth,
            &self.client_id,
            &self.token_url,
            assertion,
            &mut form,
            masked,
        )? {
            request = request.header(AUTHORIZATION, header);
        }
        // The body is copied into `Bytes` for the wire; that copy, like the
        // HTTP client's buffers, is not wiped.
        let body = Full::new(Bytes::copy_from_slice(form.as_bytes()));
        request
            .body(body)
            .map_err(|error| Error::config(format!("cannot build the token request: {error}")))
    }
}

impl TokenSource for ClientCredentials {
    type Error = Error;
    type Future = FetchFuture;

    fn fetch(&self) -> FetchFuture {
        let secret = self.credentials.secret.clone();
        let client_id = self.client_id.clone();
        let default_lifetime = self.default_lifetime;
        let assertion = match (&self.auth, &self.credentials.assertion) {
            (ClientAuth::Assertion, Some(assertion)) => Some(assertion.fetch_boxed()),
            _ => None,
        };
        let subject = match &self.grant {
            Grant::TokenExchange(exchange) => Some(exchange.subject.fetch_boxed()),
            Grant::ClientCredentials | Grant::RefreshToken => None,
        };
        if assertion.is_none() && subject.is_none() {
            let prepared = self.prepare(None, None);
            return Box::pin(send(
                prepared,
                client_id,
                secret,
                default_lifetime,
                response::token,
            ));
        }
        // The inputs come first, so the request is built inside the future,
        // from a clone (a few strings and `Arc`s).
        let this = self.clone();
        Box::pin(async move {
            let subject = match subject {
                Some(subject) => Some(subject.await.map_err(Error::subject_token)?),
                None => None,
            };
            let assertion = match assertion {
                Some(assertion) => Some(assertion.await.map_err(Error::assertion)?),
                None => None,
            };
            let prepared = this.prepare(
                assertion.as_ref().map(Token::secret),
                subject.as_ref().map(Token::secret),
            );
            send(
                prepared,
                client_id,
                secret,
                default_lifetime,
                response::token,
            )
            .await
        })
    }

    fn retry_hint(error: &Error) -> RetryHint {
        if error.is_permanent() {
            RetryHint::Permanent
        } else if let Some(retry_after) = error.retry_after() {
            RetryHint::NotBefore(retry_after)
        } else {
            RetryHint::Backoff
        }
    }

    /// Everything that decides who a token is for and what it grants,
    /// without a secret: the grant, the token URL, the client id, how the
    /// client authenticates and a public fingerprint of its credential (see
    /// [`ClientAuth`]), the scopes, audience, resources and extra
    /// parameters, the default lifetime, and for a custom client its
    /// [`transport_identity`](Self::transport_identity).
    ///
    /// `None` (not shared) when any of it cannot be derived: an assertion
    /// source without an identity of its own, secret-based authentication
    /// without a client id, a custom client without a name, a token
    /// exchange whose subject source has no identity. Nor has a DPoP
    /// source: its tokens are bound to this process's key.
    #[cfg(feature = "store")]
    fn store_identity(&self) -> Option<crate::store::StoreIdentity> {
        #[cfg(feature = "dpop")]
        if self.dpop.is_some() {
            return None;
        }
        let name = match &self.grant {
            Grant::ClientCredentials => "oauth2/client_credentials",
            Grant::TokenExchange(_) => "oauth2/token_exchange",
            // A user's grant: shared through `RefreshToken::fleet`'s own
            // record, never through the cache's.
            Grant::RefreshToken => return None,
        };
        let identity = crate::store::StoreIdentity::new(name)
            .with("token_url", &self.token_url)
            .with("client_id", &self.client_id);
        let mut identity = self
            .credentials
            .identify(self.auth, &self.client_id, identity)?
            .with("scope", self.scopes.join(" "));
        if let Some(audience) = &self.audience {
            identity = identity.with("audience", audience);
        }
        for resource in &self.resources {
            identity = identity.with("resource", resource);
        }
        for (name, value) in &self.params {
            identity = identity.with(name, value);
        }
        identity = identity.with(
            "default_lifetime_ms",
            self.default_lifetime.as_millis().to_string(),
        );
        if let Client::Custom(_) = &self.client {
            identity = identity.with("transport", self.transport_identity.as_deref()?);
        }
        match &self.grant {
            Grant::ClientCredentials | Grant::RefreshToken => Some(identity),
            Grant::TokenExchange(exchange) => exchange.identify(identity),
        }
    }
}

impl ClientCredentials {
    /// One `grant_type=refresh_token` request with `refresh_token`, for
    /// [`RefreshToken`](super::RefreshToken): the token, and the rotated
    /// refresh token if the answer carries one.
    pub(super) async fn refresh(
        &self,
        refresh_token: &str,
    ) -> Result<(Token, Option<Zeroizing<String>>), Error> {
        let assertion = match (&self.auth, &self.credentials.assertion) {
            (ClientAuth::Assertion, Some(assertion)) => {
                Some(assertion.fetch_boxed().await.map_err(Error::assertion)?)
            }
            _ => None,
        };
        let prepared = self.prepare(assertion.as_ref().map(Token::secret), Some(refresh_token));
        send(
            prepared,
            self.client_id.clone(),
            self.credentials.secret.clone(),
            self.default_lifetime,
            response::token_and_refresh_token,
        )
        .await
    }

    /// The token URL and client id, which name a refresh token's grant.
    #[cfg_attr(not(feature = "seal"), allow(dead_code))]
    pub(super) fn endpoint(&self) -> (&str, &str) {
        (&self.token_url, &self.client_id)
    }

    /// Whether tokens are bound to this process's DPoP key.
    #[cfg_attr(not(feature = "seal"), allow(dead_code))]
    pub(super) fn is_dpop(&self) -> bool {
        #[cfg(feature = "dpop")]
        return self.dpop.is_some();
        #[cfg(not(feature = "dpop"))]
        false
    }
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let params: Vec<&str> = self.params.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("ClientCredentials")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("credentials", &self.credentials)
            .field("scopes", &self.scopes)
            .field("audience", &self.audience)
            .field("resources", &self.resources)
            .field("params", &params)
            .field("auth", &self.auth)
            .field("grant", &self.grant)
            .field("default_lifetime", &self.default_lifetime)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field(
                "client",
                &match self.client {
                    Client::Default(..) => "built-in",
                    Client::Custom(_) => "custom",
                },
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use http_body_util::BodyExt;

    #[cfg(feature = "secrecy")]
    #[test]
    fn a_secret_string_is_the_secret_sent() {
        let secret = secrecy::SecretString::from("from-secrecy");
        let source = ClientCredentials::try_new("https://idp.example.com/token", "id", "")
            .unwrap()
            .auth_method(ClientAuth::Post)
            .client_secret(&secret);
        let prepared = source.prepare(None, None).unwrap();
        let body = body_of(prepared.request);
        assert!(body.contains("client_secret=from-secrecy"), "{body}");
    }

    #[test]
    fn a_url_by_reference_is_a_token_url() {
        let url = url::Url::parse("https://idp.example.com/token").unwrap();
        let source = ClientCredentials::try_new(&url, "id", "secret").unwrap();
        assert_eq!(source.token_url, "https://idp.example.com/token");
        let exchange = crate::oauth2::TokenExchange::try_new(&url, "id", "", || async {
            Ok::<_, std::io::Error>(Token::new("subject"))
        });
        assert!(exchange.is_ok());
        let bad = url::Url::parse("http://idp.example.com/token").unwrap();
        assert!(
            crate::oauth2::TokenExchange::try_new(&bad, "id", "", || async {
                Ok::<_, std::io::Error>(Token::new("subject"))
            })
            .is_err()
        );
    }

    fn body_of(request: Request<Full<Bytes>>) -> String {
        let body = futures_body(request.into_body());
        String::from_utf8(body).unwrap()
    }

    fn futures_body(body: Full<Bytes>) -> Vec<u8> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async { body.collect().await.unwrap().to_bytes().to_vec() })
    }

    fn source() -> ClientCredentials {
        ClientCredentials::new(
            "https://idp.example.com/token",
            "my client:1",
            "p@ss word/é",
        )
    }

    #[test]
    fn basic_auth_form_encodes_id_and_secret_before_base64() {
        let request = source()
            .request(
                "https://idp.example.com/token".parse().unwrap(),
                None,
                None,
                &mut Vec::new(),
            )
            .unwrap();
        let header = &request.headers()[AUTHORIZATION];
        assert!(header.is_sensitive());
        let encoded = header.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            "my+client%3A1:p%40ss+word%2F%C3%A9"
        );
        assert_eq!(
            request.headers()[CONTENT_TYPE],
            "application/x-www-form-urlencoded"
        );
        assert_eq!(request.headers()[ACCEPT], "application/json");
        assert_eq!(request.method(), http::Method::POST);
        // The secret is not in the body.
        assert_eq!(body_of(request), "grant_type=client_credentials");
    }

    #[test]
    fn the_form_carries_scopes_audience_resources_and_params() {
        let request = source()
            .scope("read")
            .scopes(["write", "admin:all"])
            .audience("https://api.example.com")
            .resource("urn:a")
            .resource("urn:b")
            .param("tenant", "t 1")
            .auth_method(ClientAuth::Post)
            .request(
                "https://idp.example.com/token".parse().unwrap(),
                None,
                None,
                &mut Vec::new(),
            )
            .unwrap();
        assert!(request.headers().get(AUTHORIZATION).is_none());
        assert_eq!(
            body_of(request),
            "grant_type=client_credentials&scope=read+write+admin%3Aall\
             &audience=https%3A%2F%2Fapi.example.com&resource=urn%3Aa&resource=urn%3Ab\
             &tenant=t+1&client_id=my+client%3A1&client_secret=p%40ss+word%2F%C3%A9"
        );
    }

    #[test]
    fn debug_never_shows_the_secret_nor_param_values() {
        let source = source().param("client_assertion", "eyJsecret-assertion");
        let debug = format!("{source:?} {source:#?}");
        assert!(!debug.contains("p@ss"), "{debug}");
        assert!(!debug.contains("eyJsecret"), "{debug}");
        assert!(debug.contains("<redacted>"));
        assert!(debug.contains("client_assertion"));
        assert!(debug.contains("my client:1"));
    }

    #[test]
    fn a_disallowed_url_fails_every_fetch_permanently() {
        let source = ClientCredentials::new("http://idp.example.com/token", "id", "secret");
        let error = source.prepare(None, None).err().unwrap();
        assert_eq!(error.kind(), super::super::ErrorKind::Config);
        assert_eq!(ClientCredentials::retry_hint(&error), RetryHint::Permanent);
        // The explicit opt-in allows it.
        assert!(source.allow_insecure_http(true).prepare(None, None).is_ok());
    }

    #[test]
    fn hints_follow_the_error() {
        let transient = Error::transport("refused".into());
        assert_eq!(
            ClientCredentials::retry_hint(&transient),
            RetryHint::Backoff
        );
        let throttled = Error::bad_status(http::StatusCode::TOO_MANY_REQUESTS, String::new())
            .with_retry_after(Some(Duration::from_secs(7)));
        assert_eq!(
            ClientCredentials::retry_hint(&throttled),
            RetryHint::NotBefore(Duration::from_secs(7))
        );
    }

    #[cfg(feature = "dpop")]
    #[test]
    fn a_dpop_token_request_carries_a_proof_for_the_token_url() {
        let dpop = source()
            .dpop(crate::dpop::ProofKey::generate().unwrap())
            .auth_method(ClientAuth::Post);
        let uri: Uri = "https://IdP.example.com:443/token?tenant=1"
            .parse()
            .unwrap();
        let request = dpop.request(uri, None, None, &mut Vec::new()).unwrap();
        let proof = request.headers()[crate::dpop::DPOP].to_str().unwrap();
        let payload = proof.split('.').nth(1).unwrap();
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(claims["htm"], "POST");
        assert_eq!(claims["htu"], "https://idp.example.com/token");
        assert!(claims.get("ath").is_none() && claims.get("nonce").is_none());
        // Without `dpop`, none.
        let plain = source()
            .request(
                "https://idp.example.com/token".parse().unwrap(),
                None,
                None,
                &mut Vec::new(),
            )
            .unwrap();
        assert!(plain.headers().get(crate::dpop::DPOP).is_none());
    }

    #[cfg(feature = "dpop")]
    #[tokio::test]
    async fn a_dpop_token_type_binds_the_token_in_any_case_and_bearer_does_not() {
        use crate::TokenSource as _;
        for (token_type, bound) in [("DPoP", true), ("dpop", true), ("Bearer", false)] {
            let body = format!(r#"{{"access_token":"abc","token_type":"{token_type}"}}"#);
            let idp = tower::service_fn(move |_: Request<Full<Bytes>>| {
                let body = body.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(body))))
                }
            });
            let source = source()
                .dpop(crate::dpop::ProofKey::generate().unwrap())
                .http_client(idp);
            let token = source.fetch().await.unwrap();
            assert_eq!(token.binding().is_some(), bound, "{token_type}");
        }
    }

    #[cfg(feature = "dpop")]
    #[tokio::test]
    async fn the_token_endpoints_nonce_challenge_is_answered_once_with_the_nonce() {
        use std::sync::Mutex;

        use crate::TokenSource as _;
        // Challenges every proof without the nonce `n-1`, twice at most.
        let nonces = Arc::new(Mutex::new(Vec::new()));
        let idp = {
            let nonces = nonces.clone();
            tower::service_fn(move |request: Request<Full<Bytes>>| {
                let proof = request.headers()[crate::dpop::DPOP]
                    .to_str()
                    .unwrap()
                    .to_owned();
                let payload = proof.split('.').nth(1).unwrap().to_owned();
                let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(payload)
                    .unwrap();
                let claims: serde_json::Value = serde_json::from_slice(&payload).unwrap();
                let nonce = claims["nonce"].as_str().map(str::to_owned);
                nonces.lock().unwrap().push(nonce.clone());
                let response = if nonce.as_deref() == Some("n-1") {
                    Response::new(Full::new(Bytes::from(
                        r#"{"access_token":"abc","token_type":"DPoP"}"#,
                    )))
                } else {
                    let mut response =
                        Response::new(Full::new(Bytes::from(r#"{"error":"use_dpop_nonce"}"#)));
                    *response.status_mut() = http::StatusCode::BAD_REQUEST;
                    response
                        .headers_mut()
                        .insert("dpop-nonce", HeaderValue::from_static("n-1"));
                    response
                };
                async move { Ok::<_, std::convert::Infallible>(response) }
            })
        };
        let source = source()
            .dpop(crate::dpop::ProofKey::generate().unwrap())
            .http_client(idp);
        assert!(source.fetch().await.unwrap().binding().is_some());
        assert_eq!(*nonces.lock().unwrap(), [None, Some("n-1".to_owned())]);
        // Remembered: the next fetch sends it at once.
        source.fetch().await.unwrap();
        assert_eq!(nonces.lock().unwrap().len(), 3);
    }

    #[cfg(feature = "dpop")]
    #[tokio::test]
    async fn a_second_nonce_challenge_is_an_error_not_a_loop() {
        use crate::TokenSource as _;
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let idp = {
            let calls = calls.clone();
            tower::service_fn(move |_: Request<Full<Bytes>>| {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut response =
                    Response::new(Full::new(Bytes::from(r#"{"error":"use_dpop_nonce"}"#)));
                *response.status_mut() = http::StatusCode::BAD_REQUEST;
                let nonce = HeaderValue::from_str(&format!("n-{n}")).unwrap();
                response.headers_mut().insert("dpop-nonce", nonce);
                async move { Ok::<_, std::convert::Infallible>(response) }
            })
        };
        let source = source()
            .dpop(crate::dpop::ProofKey::generate().unwrap())
            .http_client(idp);
        let error = source.fetch().await.unwrap_err();
        assert_eq!(error.response().unwrap().error(), "use_dpop_nonce");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
