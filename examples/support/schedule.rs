//! How long the cache serves a token, for the examples and tests that count
//! token requests (the fleet, the soak). Not part of the crate's API.

use std::time::Duration;

/// How long the cache, with its default margins, serves a token whose
/// lifetime `secs` was counted in whole seconds before it refreshes it:
/// the lifetime less its expiry margin (10 s, at most a tenth of it) and
/// less the second the issuer's rounding may have taken, but not beyond
/// half the lifetime (the earliest due point). A soak's token requests are
/// one per such interval.
pub fn refresh_interval(secs: u64) -> Duration {
    let lifetime = Duration::from_secs(secs);
    let served = lifetime
        .saturating_sub((lifetime / 10).min(Duration::from_secs(10)))
        .saturating_sub(Duration::from_secs(1));
    served.min(lifetime / 2)
}
