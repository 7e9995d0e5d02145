//! Where tokens come from: the [`TokenSource`] trait.

use std::future::Future;
use std::pin::Pin;

use crate::{BoxError, Token};

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

pub(crate) type BoxFetch = Pin<Box<dyn Future<Output = Result<Token, BoxError>> + Send>>;

/// A [`TokenSource`] with its types erased, so that the cache is not generic.
pub(crate) trait DynSource: Send + Sync + 'static {
    fn fetch_boxed(&self) -> BoxFetch;
    fn type_name(&self) -> &'static str;
}

impl<T: TokenSource> DynSource for T {
    fn fetch_boxed(&self) -> BoxFetch {
        let fetch = self.fetch();
        Box::pin(async move { fetch.await.map_err(Into::into) })
    }

    fn type_name(&self) -> &'static str {
        std::any::type_name::<T>()
    }
}
