//! What the crate reads of a JWT it does not verify: its `exp`, for the
//! lifetime of a token that says nothing else about it (an OAuth2 response
//! without `expires_in`, a token file).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::Value;

/// The longest lifetime a token is given: 365 days, so that no issuer's
/// number can overflow the clock or switch refreshing off.
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// A lifetime of `seconds` (not negative), at most [`MAX_LIFETIME`].
pub(crate) fn lifetime_from_secs_f64(seconds: f64) -> Duration {
    if seconds >= MAX_LIFETIME.as_secs_f64() {
        MAX_LIFETIME
    } else {
        // Below the cap and not negative: cannot fail.
        Duration::try_from_secs_f64(seconds).unwrap_or(Duration::ZERO)
    }
}

/// The time left until a JWT's `exp` claim (decoded, not verified), if the
/// token is a JWT with one: at most [`MAX_LIFETIME`], and zero for an `exp`
/// that has passed.
pub(crate) fn lifetime(token: &str, now: SystemTime) -> Option<Duration> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims = serde_json::from_slice::<Value>(&payload).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
    let left = exp - now;
    Some(if left > 0.0 {
        lifetime_from_secs_f64(left)
    } else {
        Duration::ZERO
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims);
        format!("eyJhbGciOiJSUzI1NiJ9.{payload}.c2ln")
    }

    #[test]
    fn the_exp_claim_gives_the_time_left() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            lifetime(&jwt(r#"{"exp":1000600}"#), now),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            lifetime(&jwt(r#"{"exp":999000}"#), now),
            Some(Duration::ZERO)
        );
        assert_eq!(lifetime(&jwt(r#"{"exp":1e300}"#), now), Some(MAX_LIFETIME));
        for not_one in [
            jwt(r#"{"sub":"x"}"#),
            jwt(r#"{"exp":"soon"}"#),
            "opaque-token".to_owned(),
            "a.b.c.d".to_owned(),
            "a.!!!.c".to_owned(),
        ] {
            assert_eq!(lifetime(&not_one, now), None, "{not_one}");
        }
    }
}
