//! Which requests get a token: the [`Scope`] of a middleware.
//!
//! By default every request that passes through the middleware gets the
//! token. That is right when the client only ever talks to the service the
//! token is for. It is not when the same client can reach other hosts:
//!
//! - a misconfigured base URL (`http://` instead of `https://`, a staging
//!   host, a typo) sends the token in clear text or to the wrong party;
//! - a redirect handled below the middleware, or a URL taken from a response
//!   (a pagination `next` link, a webhook target), can point anywhere;
//! - one client stack shared by several integrations sends one vendor's
//!   token to another.
//!
//! A [`Scope`] narrows the middleware to the requests that should carry the
//! token. A request outside the scope passes through untouched: no header is
//! set, no token is fetched or waited for, and a `401` it gets evicts
//! nothing.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{header::AUTHORIZATION, Request, Response};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_bearer::{BearerAuthLayer, Scope, Token};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_bearer::BoxError> {
//! let client = ServiceBuilder::new()
//!     .layer(
//!         BearerAuthLayer::new(|| async { Ok::<_, std::io::Error>(Token::new("abcd1234")) })
//!             .scope(Scope::new().require_https().hosts(["api.example.com"])),
//!     )
//!     .service(service_fn(|request: Request<()>| async move {
//!         Ok::<_, Infallible>(Response::new(request.headers().contains_key(AUTHORIZATION)))
//!     }));
//!
//! let sent = |uri: &str| client.clone().oneshot(Request::get(uri).body(()).unwrap());
//! assert!(*sent("https://api.example.com/v1/items").await?.body());
//! assert!(!*sent("http://api.example.com/v1/items").await?.body()); // not https
//! assert!(!*sent("https://cdn.example.net/image.png").await?.body()); // another host
//! # Ok(())
//! # }
//! ```
//!
//! The conditions of a scope all have to hold. Without any, a scope covers
//! every request, as the default does. Hosts compare without regard to case
//! or port. [`only_if`](Scope::only_if) takes a closure over a
//! [`RequestHead`] (method, URI and headers, borrowed), so one scope works
//! for any body type, and the same [`Scope`] serves the tower layer and the
//! reqwest middleware.
//!
//! A request whose URI has no scheme or host (a path alone) matches neither
//! [`require_https`](Scope::require_https) nor [`hosts`](Scope::hosts). Note
//! that tonic's generated clients send requests with a path only (the
//! `Channel` adds its origin below this middleware) unless they are built
//! with `with_origin`; over a tonic `Channel`, narrow with
//! [`only_if`](Scope::only_if) or not at all.

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, Method, Uri};

type Predicate = dyn Fn(&RequestHead<'_>) -> bool + Send + Sync;

/// Which requests a middleware sets the token on. See the
/// [module docs](crate::scope).
///
/// Cloning is cheap.
#[derive(Clone, Default)]
pub struct Scope {
    https: bool,
    hosts: Option<Arc<[Box<str>]>>,
    predicate: Option<Arc<Predicate>>,
}

/// What a [`Scope::only_if`] predicate sees of a request: its method, URI
/// and headers, borrowed, whatever the request's body type.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
}

impl<'a> RequestHead<'a> {
    pub(crate) fn new(method: &'a Method, uri: &'a Uri, headers: &'a HeaderMap) -> Self {
        Self {
            method,
            uri,
            headers,
        }
    }

    /// The request's method.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The request's URI.
    pub fn uri(&self) -> &'a Uri {
        self.uri
    }

    /// The request's headers, before the token is set.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }
}

impl Scope {
    /// A scope that covers every request, until conditions are added.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only requests whose URI has the `https` scheme.
    pub fn require_https(mut self) -> Self {
        self.https = true;
        self
    }

    /// Only requests to one of `hosts`, compared without regard to ASCII
    /// case, and whatever the port. Calling it again replaces the list.
    ///
    /// Each host is normalized when the scope is built: a trailing dot is
    /// dropped (`api.example.com.` is `api.example.com`, on either side),
    /// and an IPv6 literal may be given with or without brackets (`::1` or
    /// `[::1]`; it is compared as an address, so `[0:0::1]` matches too).
    ///
    /// ```
    /// use tower_bearer::Scope;
    ///
    /// let scope = Scope::new().hosts(["api.example.com", "auth.example.com", "::1"]);
    /// ```
    ///
    /// # Panics
    ///
    /// If an entry is not a host: empty, or with a port (`host:8443`), a
    /// scheme, a path, user info or whitespace. Such an entry could never
    /// match, and a scope that silently covers nothing is a bug to catch
    /// where the scope is written. For hosts that come from configuration,
    /// use [`try_hosts`](Self::try_hosts), which returns the error instead.
    pub fn hosts<I>(self, hosts: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        match self.try_hosts(hosts) {
            Ok(scope) => scope,
            Err(error) => panic!("Scope::hosts: {error}"),
        }
    }

    /// [`hosts`](Self::hosts), for hosts that come from configuration: an
    /// entry that is not a host is an [`InvalidHost`] error.
    ///
    /// ```
    /// use tower_bearer::Scope;
    ///
    /// let error = Scope::new().try_hosts(["api.example.com:8443"]).unwrap_err();
    /// assert_eq!(error.entry(), "api.example.com:8443");
    /// ```
    pub fn try_hosts<I>(mut self, hosts: I) -> Result<Self, InvalidHost>
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let hosts = hosts
            .into_iter()
            .map(|host| normalize_host(host.into()))
            .collect::<Result<Vec<Box<str>>, _>>()?;
        self.hosts = Some(hosts.into());
        Ok(self)
    }

    /// Only requests for which `predicate` returns `true`. Calling it again
    /// replaces the predicate.
    ///
    /// ```
    /// use http::Method;
    /// use tower_bearer::Scope;
    ///
    /// // Reads are public; only writes carry the token.
    /// let scope = Scope::new().only_if(|request| request.method() != Method::GET);
    /// ```
    pub fn only_if<F>(mut self, predicate: F) -> Self
    where
        F: Fn(&RequestHead<'_>) -> bool + Send + Sync + 'static,
    {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    /// Whether this scope covers every request: no condition was added.
    pub fn is_everything(&self) -> bool {
        !self.https && self.hosts.is_none() && self.predicate.is_none()
    }

    #[cfg(feature = "reqwest-middleware")]
    pub(crate) fn has_predicate(&self) -> bool {
        self.predicate.is_some()
    }

    /// Whether `request` gets the token.
    ///
    /// ```
    /// use http::Request;
    /// use tower_bearer::Scope;
    ///
    /// let scope = Scope::new().require_https();
    /// assert!(scope.matches(&Request::get("https://api.example.com/").body(())?));
    /// assert!(!scope.matches(&Request::get("http://api.example.com/").body(())?));
    /// # Ok::<_, http::Error>(())
    /// ```
    pub fn matches<B>(&self, request: &http::Request<B>) -> bool {
        let uri = request.uri();
        self.matches_target(uri.scheme_str(), uri.host(), || {
            Some(RequestHead::new(request.method(), uri, request.headers()))
        })
    }

    /// The same as [`matches`](Self::matches), for a request whose URI is
    /// not an `http::Uri` (reqwest's `Url`): the head is only built when a
    /// predicate needs it, and `None` (a URL that is no `Uri`) never matches.
    pub(crate) fn matches_target<'a>(
        &self,
        scheme: Option<&str>,
        host: Option<&str>,
        head: impl FnOnce() -> Option<RequestHead<'a>>,
    ) -> bool {
        if self.https && scheme != Some("https") {
            return false;
        }
        if let Some(hosts) = &self.hosts {
            let Some(host) = host else { return false };
            if !hosts.iter().any(|h| host_matches(h, host)) {
                return false;
            }
        }
        match &self.predicate {
            Some(predicate) => head().is_some_and(|head| predicate(&head)),
            None => true,
        }
    }
}

/// A `hosts` entry, lowercase, without a trailing dot, an IPv6 literal in
/// brackets; or why it is not a host (see [`Scope::hosts`]).
fn normalize_host(entry: String) -> Result<Box<str>, InvalidHost> {
    let host = entry.strip_suffix('.').unwrap_or(&entry);
    let bare = host
        .strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<std::net::Ipv6Addr>() {
        return Ok(format!("[{ip}]").into_boxed_str());
    }
    let is_host = !host.is_empty()
        && !host.starts_with('.')
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !is_host {
        return Err(InvalidHost { entry });
    }
    Ok(host.to_ascii_lowercase().into_boxed_str())
}

/// A [`Scope::try_hosts`] entry that is not a host name or IP address: empty,
/// or with a port, a scheme, a path, user info or whitespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidHost {
    entry: String,
}

impl InvalidHost {
    /// The entry as it was given.
    pub fn entry(&self) -> &str {
        &self.entry
    }
}

impl fmt::Display for InvalidHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a host name or IP address (give it without scheme, port or path)",
            self.entry
        )
    }
}

impl std::error::Error for InvalidHost {}

/// Whether a request's host is the normalized `entry`.
fn host_matches(entry: &str, host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    if entry.eq_ignore_ascii_case(host) {
        return true;
    }
    let ipv6 = |host: &str| {
        host.strip_prefix('[')?
            .strip_suffix(']')?
            .parse::<std::net::Ipv6Addr>()
            .ok()
    };
    matches!((ipv6(entry), ipv6(host)), (Some(a), Some(b)) if a == b)
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("https", &self.https)
            .field("hosts", &self.hosts)
            .field(
                "predicate",
                &self.predicate.as_ref().map(|_| "Fn(&RequestHead) -> bool"),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(scope: &Scope, uri: &str) -> bool {
        scope.matches(&http::Request::get(uri).body(()).unwrap())
    }

    #[test]
    fn an_empty_scope_covers_everything() {
        let scope = Scope::new();
        assert!(scope.is_everything());
        assert!(matches(&scope, "http://anywhere.example/"));
        assert!(matches(&scope, "/just/a/path"));
    }

    #[test]
    fn https_and_hosts_must_both_hold() {
        let scope = Scope::new().require_https().hosts(["API.example.com"]);
        assert!(!scope.is_everything());
        assert!(matches(&scope, "https://api.example.com/x"));
        assert!(matches(&scope, "https://Api.Example.COM:8443/x"));
        assert!(!matches(&scope, "http://api.example.com/x"));
        assert!(!matches(&scope, "https://api.example.com.evil.net/x"));
        assert!(!matches(&scope, "https://example.com/x"));
        assert!(!matches(&scope, "/x"));
    }

    #[test]
    fn hosts_are_normalized_when_the_scope_is_built() {
        let scope = Scope::new().hosts(["API.example.com.", "::1", "[fe80:0::2]", "10.0.0.1"]);
        assert!(matches(&scope, "https://api.example.com/x"));
        assert!(matches(&scope, "https://api.example.com./x"));
        assert!(matches(&scope, "http://[::1]:8080/x"));
        assert!(matches(&scope, "http://[0:0::1]/x"));
        assert!(matches(&scope, "http://[fe80::2]/x"));
        assert!(matches(&scope, "http://10.0.0.1:80/x"));
        assert!(!matches(&scope, "http://[::2]/x"));
        assert!(!matches(&scope, "https://example.com./x"));
    }

    #[test]
    fn an_entry_that_is_not_a_host_is_refused() {
        for bad in [
            "api.example.com:8443",
            "https://api.example.com",
            "api.example.com/v1",
            "user@api.example.com",
            "",
            ".",
            "api example",
            "[::1]:443",
        ] {
            let error = Scope::new().try_hosts([bad]).unwrap_err();
            assert_eq!(error.entry(), bad);
            assert!(error.to_string().contains("not a host name"));
            let refused = std::panic::catch_unwind(|| Scope::new().hosts([bad]));
            assert!(refused.is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_predicate_sees_method_uri_and_headers() {
        let scope = Scope::new().only_if(|request| {
            request.method() == Method::POST
                && request.uri().path().starts_with("/api")
                && !request.headers().contains_key("x-public")
        });
        let post = |uri: &str, public: bool| {
            let mut request = http::Request::post(uri).body(()).unwrap();
            if public {
                request
                    .headers_mut()
                    .insert("x-public", http::HeaderValue::from_static("1"));
            }
            scope.matches(&request)
        };
        assert!(post("/api/items", false));
        assert!(!post("/api/items", true));
        assert!(!post("/static/app.js", false));
        assert!(!matches(&scope, "/api/items"), "a GET");
    }

    #[test]
    fn a_target_that_is_no_uri_never_matches_a_predicate() {
        let scope = Scope::new().only_if(|_| true);
        assert!(!scope.matches_target(Some("https"), Some("h"), || None));
        assert!(Scope::new().matches_target(None, None, || None));
    }

    #[test]
    fn debug_names_the_conditions() {
        let scope = Scope::new().require_https().only_if(|_| true);
        let debug = format!("{scope:?}");
        assert!(debug.contains("https: true"), "{debug}");
        assert!(debug.contains("Fn(&RequestHead) -> bool"), "{debug}");
    }
}
