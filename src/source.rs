//! Where tokens come from: the [`TokenSource`] trait.

use std::future::Future;
use std::pin::Pin;

use crate::{BoxError, RetryHint, Token};

/// Anything that can fetch a [`Token`] asynchronously.
///
/// The cache calls [`fetch`](Self::fetch) at most once at a time, on a task of
/// its own, bounded by its fetch timeout; a source needs no locking or caching
/// of its own.
///
/// It is implemented for every closure that returns a future of
/// `Result<Token, E>`, where `E` is any error (anything that converts into
/// [`BoxError`], which every `std::error::Error + Send + Sync + 'static` does):
///
/// ```
/// use std::time::Duration;
/// use tower_bearer::{Token, TokenCache};
///
/// let cache = TokenCache::new(|| async {
///     // log on to the backend here
///     Ok::<_, std::io::Error>(Token::new("abcd1234").expires_in(Duration::from_secs(3600)))
/// });
/// ```
///
/// Implement it by hand for a type that carries its own configuration:
///
/// ```
/// use std::future::Future;
/// use std::pin::Pin;
/// use tower_bearer::{BoxError, Token, TokenSource};
///
/// struct FromEnv(&'static str);
///
/// impl TokenSource for FromEnv {
///     type Error = BoxError;
///     type Future = Pin<Box<dyn Future<Output = Result<Token, BoxError>> + Send>>;
///
///     fn fetch(&self) -> Self::Future {
///         let name = self.0;
///         Box::pin(async move { Ok(Token::new(std::env::var(name)?)) })
///     }
/// }
/// ```
pub trait TokenSource: Send + Sync + 'static {
    /// The error a failed fetch returns.
    type Error: Into<BoxError>;

    /// The future of one fetch.
    type Future: Future<Output = Result<Token, Self::Error>> + Send + 'static;

    /// Starts one fetch.
    fn fetch(&self) -> Self::Future;

    /// What a failed fetch's `error` tells the cache about trying again.
    ///
    /// The default, [`RetryHint::Backoff`], leaves it to the cache's backoff.
    /// A source that knows better says so: an OAuth2 token endpoint that
    /// answered `429` with `Retry-After: 60` is
    /// [`NotBefore(60 s)`](RetryHint::NotBefore), one that rejected the
    /// client's credentials is [`Permanent`](RetryHint::Permanent).
    ///
    /// ```
    /// use std::future::Future;
    /// use std::pin::Pin;
    /// use std::time::Duration;
    /// use tower_bearer::{RetryHint, Token, TokenSource};
    ///
    /// #[derive(Debug)]
    /// enum LogOnError {
    ///     BadPassword,
    ///     Busy { retry_after: Duration },
    /// }
    /// # impl std::fmt::Display for LogOnError {
    /// #     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "{self:?}") }
    /// # }
    /// # impl std::error::Error for LogOnError {}
    ///
    /// struct LogOn;
    ///
    /// impl TokenSource for LogOn {
    ///     type Error = LogOnError;
    ///     type Future = Pin<Box<dyn Future<Output = Result<Token, LogOnError>> + Send>>;
    ///
    ///     fn fetch(&self) -> Self::Future {
    ///         Box::pin(async { Err(LogOnError::BadPassword) })
    ///     }
    ///
    ///     fn retry_hint(error: &LogOnError) -> RetryHint {
    ///         match error {
    ///             LogOnError::BadPassword => RetryHint::Permanent,
    ///             LogOnError::Busy { retry_after } => RetryHint::NotBefore(*retry_after),
    ///         }
    ///     }
    /// }
    /// ```
    fn retry_hint(error: &Self::Error) -> RetryHint
    where
        Self: Sized,
    {
        let _ = error;
        RetryHint::Backoff
    }

    /// What names this source's tokens across a fleet's processes, without
    /// any secret, for a cache with a [store](crate::store). `None` (the
    /// default) keeps its tokens out of the store unless the cache names
    /// them ([`TokenCache::store_identity`](crate::TokenCache::store_identity)),
    /// so that unrelated sources never share a token.
    ///
    /// An identity must be derived from everything that decides whom a
    /// token is for and what it grants (where it comes from, who asks, how
    /// the asker proves it, what is asked for), so that two sources with the
    /// same identity make interchangeable tokens in every process. A source
    /// that cannot derive all of it returns `None`: a shared token under an
    /// incomplete identity can cross tenants. Never put a secret in it.
    #[cfg(feature = "store")]
    #[cfg_attr(docsrs, doc(cfg(feature = "store")))]
    fn store_identity(&self) -> Option<crate::identity::StoreIdentity> {
        None
    }
}

impl<F, Fut, E> TokenSource for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Token, E>> + Send + 'static,
    E: Into<BoxError>,
{
    type Error = E;
    type Future = Fut;

    fn fetch(&self) -> Fut {
        self()
    }
}

/// A failed fetch's error, with what it says about trying again.
pub(crate) type FetchError = (BoxError, RetryHint);

pub(crate) type BoxFetch = Pin<Box<dyn Future<Output = Result<Token, FetchError>> + Send>>;

/// A [`TokenSource`] with its types erased, so that the cache is not generic.
pub(crate) trait DynSource: Send + Sync + 'static {
    fn fetch_boxed(&self) -> BoxFetch;
    fn type_name(&self) -> &'static str;
    #[cfg(feature = "store")]
    fn store_identity(&self) -> Option<crate::identity::StoreIdentity>;
}

impl<T: TokenSource> DynSource for T {
    fn fetch_boxed(&self) -> BoxFetch {
        let fetch = self.fetch();
        // The hint is read here, while the error still has its own type.
        Box::pin(async move {
            fetch.await.map_err(|error| {
                let hint = T::retry_hint(&error);
                (error.into(), hint)
            })
        })
    }

    fn type_name(&self) -> &'static str {
        std::any::type_name::<T>()
    }

    #[cfg(feature = "store")]
    fn store_identity(&self) -> Option<crate::identity::StoreIdentity> {
        TokenSource::store_identity(self)
    }
}
