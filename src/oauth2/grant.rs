//! Which grant a token request asks for ([`Grant`]), and the fields of
//! each grant beyond client credentials: the token exchange's
//! ([`Exchange`], RFC 8693). The public builders are
//! [`ClientCredentials`](super::ClientCredentials) and
//! [`TokenExchange`](super::TokenExchange).

use std::fmt;
use std::sync::Arc;

use super::form::Form;
use crate::source::DynSource;

/// Which grant a request asks for.
#[derive(Clone, Debug)]
pub(super) enum Grant {
    ClientCredentials,
    TokenExchange(Arc<Exchange>),
    /// `grant_type=refresh_token`, for [`RefreshToken`](super::RefreshToken):
    /// the refresh token comes as the request's subject.
    RefreshToken,
}

/// The token exchange grant's own fields, held by the
/// [`ClientCredentials`](super::ClientCredentials) it configures.
#[derive(Clone)]
pub(super) struct Exchange {
    pub(super) subject: Arc<dyn DynSource>,
    pub(super) subject_token_type: String,
    pub(super) requested_token_type: Option<String>,
}

impl Exchange {
    pub(super) fn pairs(&self, subject: &str, form: &mut Form) {
        form.pair(
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        );
        form.pair("subject_token", subject);
        form.pair("subject_token_type", &self.subject_token_type);
        if let Some(requested) = &self.requested_token_type {
            form.pair("requested_token_type", requested);
        }
    }
}

impl Exchange {
    /// Adds the subject to `identity`: its source's own identity (the
    /// subject token decides whom the exchanged token is for), and the
    /// token types. `None` if the subject source has no identity.
    #[cfg(feature = "store")]
    pub(super) fn identify(
        &self,
        identity: crate::store::StoreIdentity,
    ) -> Option<crate::store::StoreIdentity> {
        let subject = self.subject.store_identity()?;
        let mut identity = identity
            .with_identity("subject_source", &subject)
            .with("subject_token_type", &self.subject_token_type);
        if let Some(requested) = &self.requested_token_type {
            identity = identity.with("requested_token_type", requested);
        }
        Some(identity)
    }
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenExchange")
            .field("subject", &self.subject.type_name())
            .field("subject_token_type", &self.subject_token_type)
            .field("requested_token_type", &self.requested_token_type)
            .finish()
    }
}
