//! [`FileToken`]: a bearer token read from a file that something else keeps
//! fresh, such as a Kubernetes projected service-account token or a Vault
//! agent sink.
//!
//! Behind the `file` feature (on by default).
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use http::{header::AUTHORIZATION, Request, Response};
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//! use tower_bearer::{BearerAuthLayer, FileToken};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_bearer::BoxError> {
//! # let dir = std::env::temp_dir().join(format!("tower-bearer-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! # let path = dir.join("token");
//! # std::fs::write(&path, "abcd1234\n")?;
//! // "/var/run/secrets/tokens/api-token", say
//! let mut client = ServiceBuilder::new()
//!     .layer(BearerAuthLayer::new(FileToken::new(&path)))
//!     .service(service_fn(|request: Request<()>| async move {
//!         Ok::<_, Infallible>(Response::new(request.headers()[AUTHORIZATION].clone()))
//!     }));
//!
//! let response = client.ready().await?.call(Request::new(())).await?;
//! assert_eq!(response.body(), "Bearer abcd1234");
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```
//!
//! # When the file is read
//!
//! On every fetch, and never otherwise: the cache fetches when the token
//! comes due (in the background, while the old one is still served), when
//! it has expired, and after a `401` evicted it. Each read opens the file by
//! its path, so both ways of replacing a file that writers use are seen at
//! the next read:
//!
//! - an atomic `rename` of a new file over the old one (Vault agent, most
//!   tools);
//! - the kubelet's symlink swap: `token -> ..data/token`, where `..data` is
//!   a symlink that is switched to a new timestamped directory.
//!
//! A read never sees half a file written that way. The read runs on tokio's
//! blocking pool, so a slow disk does not stall the runtime.
//!
//! # Expiry
//!
//! - A token that is a JWT expires at its `exp` claim (read, not verified),
//!   but no later than [`max_lifetime`](FileToken::max_lifetime) (one hour):
//!   a Kubernetes API server run with `--service-account-extend-token-expiration`
//!   writes tokens valid for a year while the kubelet still rewrites them
//!   hourly, and they should be picked up.
//! - Any other token expires [`default_lifetime`](FileToken::default_lifetime)
//!   (five minutes) after it was read.
//!
//! With the cache's defaults the file is read again halfway through either
//! lifetime, and a failed read leaves the old token in service until it
//! expires.
//!
//! # Errors
//!
//! The content is trimmed of leading and trailing whitespace. A missing,
//! unreadable, empty (after trimming), oversized (over
//! [`MAX_SIZE`](FileToken::MAX_SIZE), 64 KiB) or non-UTF-8 file is an
//! [`Error`] with an [`ErrorKind`], never a panic, and so is anything that
//! is not a regular file ([`NotAFile`](ErrorKind::NotAFile): a directory, a
//! FIFO, a device). The file is opened without blocking (`O_NONBLOCK` on
//! unix: a FIFO with no writer would otherwise hold a thread of tokio's
//! blocking pool for ever, one per fetch), checked to be a regular file
//! before anything is read, and read up to the size limit only. All
//! are transient to the cache (a writer may be about to put the file back),
//! so its backoff paces the next reads. An error names the path, never the
//! content. A token that is not a valid header value (a newline inside it)
//! is the cache's [`InvalidToken`](crate::TokenErrorKind::InvalidToken)
//! error.

use std::fmt;
use std::future::Future;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::{Token, TokenSource};

/// A [`TokenSource`] that reads a bearer token from a file, again on each
/// fetch.
///
/// See the [module docs](self) for when it reads, how the expiry is chosen,
/// and its errors.
///
/// ```
/// use std::time::Duration;
/// use tower_bearer::{FileToken, TokenCache};
///
/// let cache = TokenCache::new(
///     FileToken::new("/var/run/secrets/tokens/api-token")
///         .default_lifetime(Duration::from_secs(60))
///         .max_lifetime(Duration::from_secs(600)),
/// );
/// # drop(cache);
/// ```
#[derive(Clone, Debug)]
pub struct FileToken {
    path: Arc<Path>,
    default_lifetime: Duration,
    max_lifetime: Duration,
}

type ReadFuture = Pin<Box<dyn Future<Output = Result<Token, Error>> + Send>>;

impl FileToken {
    /// The largest file read: 64 KiB. A bigger one is a
    /// [`TooLarge`](ErrorKind::TooLarge) error.
    pub const MAX_SIZE: usize = 64 * 1024;

    /// The lifetime of a token that is not a JWT with an `exp`, unless set
    /// with [`default_lifetime`](Self::default_lifetime): five minutes.
    pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(5 * 60);

    /// The longest a JWT is kept before the file is read again, unless set
    /// with [`max_lifetime`](Self::max_lifetime): one hour.
    pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(60 * 60);

    /// A source that reads the token at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: Arc::from(path.into()),
            default_lifetime: Self::DEFAULT_LIFETIME,
            max_lifetime: Self::DEFAULT_MAX_LIFETIME,
        }
    }

    /// The lifetime of a token that is not a JWT with an `exp` claim.
    pub fn default_lifetime(mut self, lifetime: Duration) -> Self {
        self.default_lifetime = lifetime;
        self
    }

    /// The longest a token is kept, whatever its `exp` says, before the file
    /// is read again.
    pub fn max_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_lifetime = lifetime;
        self
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl TokenSource for FileToken {
    type Error = Error;
    type Future = ReadFuture;

    fn fetch(&self) -> ReadFuture {
        let source = self.clone();
        Box::pin(async move {
            let now = SystemTime::now();
            let path = Arc::clone(&source.path);
            let value = tokio::task::spawn_blocking(move || read(&path))
                .await
                .map_err(|_| Error::new(ErrorKind::Io, &source.path, None))??;
            let lifetime = crate::jwt::lifetime(&value, now)
                .map_or(source.default_lifetime, |left| {
                    left.min(source.max_lifetime)
                });
            Ok(Token::new(value).expires_in(lifetime))
        })
    }
}

/// The trimmed content of the file at `path`.
fn read(path: &Path) -> Result<String, Error> {
    let fail = |kind, source| Error::new(kind, path, source);
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // A FIFO opened for reading waits for a writer: never wait. It
        // changes nothing for a regular file.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(|error| {
        let kind = match error.kind() {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            _ => ErrorKind::Io,
        };
        fail(kind, Some(error))
    })?;
    // What was opened, not what the path named a moment before.
    let metadata = file
        .metadata()
        .map_err(|error| fail(ErrorKind::Io, Some(error)))?;
    if !metadata.is_file() {
        return Err(fail(ErrorKind::NotAFile, None));
    }
    let mut bytes = Vec::new();
    // One byte over the limit tells a file of exactly the limit from a
    // bigger one, without reading the rest.
    file.take(FileToken::MAX_SIZE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| fail(ErrorKind::Io, Some(error)))?;
    if bytes.len() > FileToken::MAX_SIZE {
        return Err(fail(ErrorKind::TooLarge, None));
    }
    let text = String::from_utf8(bytes).map_err(|_| fail(ErrorKind::NotUtf8, None))?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(fail(ErrorKind::Empty, None));
    }
    Ok(if trimmed.len() == text.len() {
        text
    } else {
        trimmed.to_owned()
    })
}

/// Why a [`FileToken`] could not read a token.
///
/// Its `Display` names the path and the reason, never the file's content.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    path: PathBuf,
    source: Option<io::Error>,
}

/// What kind of failure an [`Error`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// There is no file at the path (or a symlink on the way is dangling).
    NotFound,
    /// The file could not be opened or read: permissions, an I/O error. The [`source`](std::error::Error::source) says which.
    Io,
    /// The file is empty, or holds only whitespace.
    Empty,
    /// The file is larger than [`FileToken::MAX_SIZE`].
    TooLarge,
    /// The file is not UTF-8 text.
    NotUtf8,
    /// The path names something other than a regular file (after
    /// symlinks): a directory, a FIFO, a socket, a device.
    NotAFile,
}

impl Error {
    fn new(kind: ErrorKind, path: &Path, source: Option<io::Error>) -> Self {
        Self {
            kind,
            path: path.to_owned(),
            source,
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The path that was read.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match self.kind {
            ErrorKind::NotFound => write!(f, "token file {path} not found"),
            ErrorKind::Io => write!(f, "cannot read token file {path}"),
            ErrorKind::Empty => write!(f, "token file {path} is empty"),
            ErrorKind::TooLarge => write!(
                f,
                "token file {path} is larger than {} KiB",
                FileToken::MAX_SIZE / 1024
            ),
            ErrorKind::NotUtf8 => write!(f, "token file {path} is not UTF-8 text"),
            ErrorKind::NotAFile => write!(f, "token file {path} is not a regular file"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|error| error as &(dyn std::error::Error + 'static))
    }
}
