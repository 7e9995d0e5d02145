//! The settings the other grants share with [`ClientCredentials`]: how the
//! client authenticates, what it asks for, and how it reaches the token
//! endpoint (its client, proxy and roots).
//!
//! [`RefreshToken`](super::RefreshToken) and
//! [`TokenExchange`](super::TokenExchange) each hold a `ClientCredentials`
//! (`inner`) that makes their requests, and forward these setters to it
//! unchanged. They are written once, here, so that a setting added to
//! `ClientCredentials` reaches every grant at once: the refresh-token grant
//! once lacked the proxy, the roots and the application's `reqwest` client
//! that the other two had.
//!
//! [`ClientCredentials`]: super::ClientCredentials

/// Expands, inside `impl` of a grant with a field `inner: ClientCredentials`,
/// to the setters that forward to it.
macro_rules! forward_client_settings {
    () => {
        /// Replaces the client secret given to `new`; see
        /// [`ClientCredentials::client_secret`](crate::oauth2::ClientCredentials::client_secret).
        #[cfg(feature = "secrecy")]
        #[cfg_attr(docsrs, doc(cfg(feature = "secrecy")))]
        pub fn client_secret(mut self, secret: &secrecy::SecretString) -> Self {
            self.inner = self.inner.client_secret(secret);
            self
        }

        /// Asks for one more scope; scopes are sent space-joined as
        /// `scope`.
        pub fn scope(mut self, scope: impl Into<String>) -> Self {
            self.inner = self.inner.scope(scope);
            self
        }

        /// Asks for these scopes as well.
        pub fn scopes<I>(mut self, scopes: I) -> Self
        where
            I: IntoIterator,
            I::Item: Into<String>,
        {
            self.inner = self.inner.scopes(scopes);
            self
        }

        /// Sends `audience`, the logical name of the target service.
        pub fn audience(mut self, audience: impl Into<String>) -> Self {
            self.inner = self.inner.audience(audience);
            self
        }

        /// Sends one more `resource`, the URI of the target service
        /// (RFC 8707).
        pub fn resource(mut self, resource: impl Into<String>) -> Self {
            self.inner = self.inner.resource(resource);
            self
        }

        /// Sends any other form field, after ours.
        pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
            self.inner = self.inner.param(name, value);
            self
        }

        /// How the client authenticates; see
        /// [`ClientCredentials::auth_method`](crate::oauth2::ClientCredentials::auth_method)
        /// and [`ClientAuth::None`](crate::oauth2::ClientAuth::None).
        pub fn auth_method(mut self, auth: $crate::oauth2::ClientAuth) -> Self {
            self.inner = self.inner.auth_method(auth);
            self
        }

        /// Authenticates with `private_key_jwt`; see
        /// [`ClientCredentials::private_key_jwt`](crate::oauth2::ClientCredentials::private_key_jwt).
        #[cfg(feature = "private-key-jwt")]
        #[cfg_attr(docsrs, doc(cfg(feature = "private-key-jwt")))]
        pub fn private_key_jwt(mut self, key: $crate::oauth2::PrivateKey) -> Self {
            self.inner = self.inner.private_key_jwt(key);
            self
        }

        /// The `aud` of signed assertions; see
        /// [`ClientCredentials::assertion_audience`](crate::oauth2::ClientCredentials::assertion_audience).
        pub fn assertion_audience(mut self, audience: impl Into<String>) -> Self {
            self.inner = self.inner.assertion_audience(audience);
            self
        }

        /// How long a signed assertion is valid; see
        /// [`ClientCredentials::assertion_lifetime`](crate::oauth2::ClientCredentials::assertion_lifetime).
        pub fn assertion_lifetime(mut self, lifetime: std::time::Duration) -> Self {
            self.inner = self.inner.assertion_lifetime(lifetime);
            self
        }

        /// Authenticates with a client assertion from `source`; see
        /// [`ClientCredentials::client_assertion`](crate::oauth2::ClientCredentials::client_assertion).
        pub fn client_assertion(mut self, source: impl $crate::TokenSource) -> Self {
            self.inner = self.inner.client_assertion(source);
            self
        }

        /// The lifetime of an access token whose answer has neither
        /// `expires_in` nor a JWT `exp`; see
        /// [`ClientCredentials::default_lifetime`](crate::oauth2::ClientCredentials::default_lifetime).
        pub fn default_lifetime(mut self, lifetime: std::time::Duration) -> Self {
            self.inner = self.inner.default_lifetime(lifetime);
            self
        }

        /// Allows a plain `http` token URL to a host that is not loopback;
        /// see [`ClientCredentials::allow_insecure_http`](crate::oauth2::ClientCredentials::allow_insecure_http).
        pub fn allow_insecure_http(mut self, allow: bool) -> Self {
            self.inner = self.inner.allow_insecure_http(allow);
            self
        }

        /// Sends token requests through `client`; see
        /// [`ClientCredentials::http_client`](crate::oauth2::ClientCredentials::http_client).
        pub fn http_client<S, B>(mut self, client: S) -> Self
        where
            S: tower_service::Service<
                    http::Request<http_body_util::Full<bytes::Bytes>>,
                    Response = http::Response<B>,
                > + Clone
                + Send
                + 'static,
            S::Future: Send + 'static,
            S::Error: Into<$crate::BoxError>,
            B: http_body::Body + Send + 'static,
            B::Data: Send,
            B::Error: Into<$crate::BoxError>,
        {
            self.inner = self.inner.http_client(client);
            self
        }

        /// Sends token requests through the application's `reqwest::Client`;
        /// see [`ClientCredentials::reqwest_client`](crate::oauth2::ClientCredentials::reqwest_client).
        #[cfg(feature = "reqwest")]
        #[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
        pub fn reqwest_client(mut self, client: ::reqwest::Client) -> Self {
            self.inner = self.inner.reqwest_client(client);
            self
        }

        /// How the built-in client reaches the token endpoint; see
        /// [`ClientCredentials::proxy`](crate::oauth2::ClientCredentials::proxy).
        pub fn proxy(mut self, proxy: $crate::oauth2::Proxy) -> Self {
            self.inner = self.inner.proxy(proxy);
            self
        }

        /// Makes the built-in client trust the certificates of `pem` as
        /// roots; see
        /// [`ClientCredentials::add_root_certificate_pem`](crate::oauth2::ClientCredentials::add_root_certificate_pem).
        pub fn add_root_certificate_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
            self.inner = self.inner.add_root_certificate_pem(pem);
            self
        }
    };
}

pub(super) use forward_client_settings;
