//! [`Error`]: why a DPoP key could not be used, or a proof made.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

/// Why a key could not be used, or a proof made.
#[derive(Clone)]
pub struct Error {
    kind: ErrorKind,
    message: &'static str,
    source: Option<Arc<crate::jws::Error>>,
}

/// What kind of failure an [`Error`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The key could not be read or generated: the
    /// [`source`](StdError::source) says why, never quoting the key.
    Key,
    /// The request cannot carry a proof: its URI is not absolute. No request
    /// was sent.
    Target,
    /// Signing failed (no randomness, or a clock before 1970). No request
    /// was sent.
    Sign,
}

impl Error {
    pub(super) fn key(source: crate::jws::Error) -> Self {
        Self {
            kind: ErrorKind::Key,
            message: "cannot use the DPoP key",
            source: Some(Arc::new(source)),
        }
    }

    pub(super) fn key_message(message: &'static str) -> Self {
        Self {
            kind: ErrorKind::Key,
            message,
            source: None,
        }
    }

    pub(crate) fn invalid_uri() -> Self {
        Self::target("the request URL is not a valid URI")
    }

    pub(super) fn target(message: &'static str) -> Self {
        Self {
            kind: ErrorKind::Target,
            message,
            source: None,
        }
    }

    pub(super) fn sign() -> Self {
        Self {
            kind: ErrorKind::Sign,
            message: "cannot sign the DPoP proof",
            source: None,
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}
