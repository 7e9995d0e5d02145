//! The servers' nonces (RFC 9449 §8, §9): one for the token endpoint, one
//! per resource origin, each the last one a server sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use http::{HeaderMap, HeaderName};

/// `DPoP-Nonce`.
pub(crate) const DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");

/// At most this many resource origins are remembered; past it, the map is
/// emptied (a forgotten nonce costs one challenge, nothing more).
const MAX_ORIGINS: usize = 256;

/// The nonces a binding has been given.
///
/// The token endpoint's is kept apart from the resources', even on one
/// origin: an authorization server and a resource server on one host issue
/// nonces of their own, and one's is a stale nonce for the other.
#[derive(Default)]
pub(crate) struct Nonces {
    token_endpoint: Mutex<Option<Arc<str>>>,
    resources: Mutex<HashMap<Box<str>, Arc<str>>>,
}

impl Nonces {
    /// The nonce to send to the token endpoint.
    pub(crate) fn token_endpoint(&self) -> Option<Arc<str>> {
        self.token_endpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The nonce to send to `origin`.
    pub(crate) fn resource(&self, origin: &str) -> Option<Arc<str>> {
        self.resources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(origin)
            .cloned()
    }

    /// Remembers the token endpoint's `DPoP-Nonce`, if `headers` have a
    /// valid one. Returns whether they had.
    pub(crate) fn remember_token_endpoint(&self, headers: &HeaderMap) -> bool {
        let Some(nonce) = nonce_in(headers) else {
            return false;
        };
        let mut slot = self
            .token_endpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.as_deref() != Some(nonce) {
            *slot = Some(nonce.into());
        }
        true
    }

    /// Remembers `origin`'s `DPoP-Nonce`, if `headers` have a valid one.
    /// Returns whether they had.
    pub(crate) fn remember_resource(&self, origin: &str, headers: &HeaderMap) -> bool {
        let Some(nonce) = nonce_in(headers) else {
            return false;
        };
        let mut map = self
            .resources
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match map.get_mut(origin) {
            Some(known) if &**known == nonce => {}
            Some(known) => *known = nonce.into(),
            None => {
                if map.len() >= MAX_ORIGINS {
                    map.clear();
                }
                map.insert(origin.into(), nonce.into());
            }
        }
        true
    }
}

/// The `DPoP-Nonce` of a response, if it is one: `1*NQCHAR` (RFC 9449
/// §8.1), visible ASCII but `"` and `\`. Anything else is ignored rather
/// than sent back in a proof.
fn nonce_in(headers: &HeaderMap) -> Option<&str> {
    let nonce = headers.get(DPOP_NONCE)?.to_str().ok()?;
    let valid = !nonce.is_empty()
        && nonce.len() <= 1024
        && nonce
            .bytes()
            .all(|byte| matches!(byte, 0x21 | 0x23..=0x5b | 0x5d..=0x7e));
    valid.then_some(nonce)
}

/// Whether a `401`'s `WWW-Authenticate` is a DPoP nonce challenge
/// (`DPoP error="use_dpop_nonce"`, RFC 9449 §9), as opposed to a rejected
/// token. The scheme is matched case-insensitively, the error code exactly.
pub(crate) fn is_nonce_challenge(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(dpop_challenge_asks_for_a_nonce)
}

/// Scans one `WWW-Authenticate` value, which may hold several challenges
/// (`Bearer realm="a", DPoP error="use_dpop_nonce"`), for an `error`
/// parameter of `use_dpop_nonce` that follows a `DPoP` scheme token.
fn dpop_challenge_asks_for_a_nonce(value: &str) -> bool {
    let mut in_dpop = false;
    for item in split_outside_quotes(value) {
        let item = item.trim();
        // A new challenge starts with a scheme token, followed by a space
        // or by nothing.
        let (first, rest) = match item.split_once(' ') {
            Some((first, rest)) if !first.contains('=') => (Some(first), rest.trim()),
            _ if !item.contains('=') && !item.is_empty() => (Some(item), ""),
            _ => (None, item),
        };
        if let Some(scheme) = first {
            in_dpop = scheme.eq_ignore_ascii_case("dpop");
        }
        if in_dpop {
            if let Some((name, param)) = rest.split_once('=') {
                let param = param.trim().trim_matches('"');
                if name.trim().eq_ignore_ascii_case("error") && param == "use_dpop_nonce" {
                    return true;
                }
            }
        }
    }
    false
}

/// Splits at commas that are not inside a quoted string.
fn split_outside_quotes(value: &str) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    let mut escaped = false;
    value.split(move |c: char| {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => return true,
            _ => {}
        }
        false
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(name: &str, values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn nonce_challenges_are_told_from_rejections() {
        let challenge = |values: &[&str]| is_nonce_challenge(&headers("www-authenticate", values));
        for yes in [
            &["DPoP error=\"use_dpop_nonce\", error_description=\"Resource server requires nonce\""][..],
            &["dpop algs=\"ES256\", error=use_dpop_nonce"],
            &["Bearer realm=\"api\", DPoP algs=\"ES256 EdDSA\", error=\"use_dpop_nonce\""],
            &["Bearer realm=\"a\"", "DPoP error=\"use_dpop_nonce\""],
        ] {
            assert!(challenge(yes), "{yes:?}");
        }
        for no in [
            &[][..],
            &["DPoP error=\"invalid_token\""],
            &["Bearer error=\"use_dpop_nonce\""],
            &["DPoP error=\"invalid_dpop_proof\", error_description=\"see error=use_dpop_nonce\""],
            &["DPoP error_description=\"a, error=use_dpop_nonce\""],
            &["DPoP error=\"invalid_token\", Bearer error=\"use_dpop_nonce\""],
        ] {
            assert!(!challenge(no), "{no:?}");
        }
    }

    #[test]
    fn nonces_are_kept_per_origin_and_apart_from_the_token_endpoint() {
        let nonces = Nonces::default();
        assert!(nonces.remember_resource("https://a", &headers("dpop-nonce", &["n-a"])));
        assert!(nonces.remember_resource("https://b", &headers("dpop-nonce", &["n-b"])));
        assert!(nonces.remember_token_endpoint(&headers("dpop-nonce", &["n-as"])));
        assert_eq!(nonces.resource("https://a").as_deref(), Some("n-a"));
        assert_eq!(nonces.resource("https://b").as_deref(), Some("n-b"));
        assert_eq!(nonces.token_endpoint().as_deref(), Some("n-as"));
        assert_eq!(nonces.resource("https://c"), None);
        // A newer one replaces it; a response without one keeps it.
        nonces.remember_resource("https://a", &headers("dpop-nonce", &["n-a2"]));
        assert!(!nonces.remember_resource("https://a", &HeaderMap::new()));
        assert_eq!(nonces.resource("https://a").as_deref(), Some("n-a2"));
        assert_eq!(nonces.token_endpoint().as_deref(), Some("n-as"));
    }

    #[test]
    fn a_nonce_that_is_no_nqchar_string_is_ignored() {
        let nonces = Nonces::default();
        for bad in ["", "a b", "a\"b", "a\\b"] {
            assert!(
                !nonces.remember_resource("https://a", &headers("dpop-nonce", &[bad])),
                "{bad}"
            );
        }
        assert!(!nonces.remember_token_endpoint(&headers("dpop-nonce", &[&"n".repeat(2000)])));
        assert_eq!(nonces.resource("https://a"), None);
    }

    #[test]
    fn the_origin_map_is_bounded() {
        let nonces = Nonces::default();
        for i in 0..=MAX_ORIGINS {
            nonces.remember_resource(&format!("https://{i}"), &headers("dpop-nonce", &["n"]));
        }
        assert!(nonces.resources.lock().unwrap().len() <= MAX_ORIGINS);
    }
}
