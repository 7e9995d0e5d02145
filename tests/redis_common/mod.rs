//! What the Redis tests (`redis_store`, `redis_tls`, `redis_cluster`) share:
//! a counting token source and the caches built on it. The servers are
//! `examples/support/redis_server.rs`.

// Each test file uses part of it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tower_bearer::store::{RedisStore, StoreIdentity};
use tower_bearer::{Token, TokenCache};

/// A token endpoint stand-in: counts fetches, hands out `token-<n>` for a
/// minute, after `delay`.
#[derive(Clone, Default)]
pub struct Idp {
    fetches: Arc<AtomicUsize>,
    pub delay: Duration,
}

impl Idp {
    /// Tokens served after `delay`.
    pub fn slow(delay: Duration) -> Self {
        Self {
            delay,
            ..Self::default()
        }
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// A replica's cache: its own `TokenCache` with `store`, under one
    /// identity shared by every cache of this `Idp`.
    pub fn cache(&self, store: RedisStore) -> TokenCache {
        let idp = self.clone();
        TokenCache::new(move || {
            let n = idp.fetches.fetch_add(1, Ordering::SeqCst) + 1;
            let delay = idp.delay;
            async move {
                tokio::time::sleep(delay).await;
                Ok::<_, std::io::Error>(
                    Token::new(format!("token-{n}")).expires_in(Duration::from_secs(60)),
                )
            }
        })
        .fetch_timeout(Duration::from_secs(2))
        .store(store)
        .store_identity(StoreIdentity::new("redis-tests").with("client_id", "fleet"))
    }
}

/// `ACL SETUSER <user> on ><password>` and the rights `docs/store.md` lists
/// for a store under `prefix`, with `more` (a cluster's) after them.
pub fn acl_setuser(user: &str, password: &str, prefix: &str, more: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["ACL", "SETUSER", user, "on"].map(str::to_owned).to_vec();
    args.push(format!(">{password}"));
    args.extend(["resetkeys".to_owned(), format!("~{prefix}*")]);
    let rights = [
        "resetchannels",
        "-@all",
        "+get",
        "+set",
        "+del",
        "+pttl",
        "+type",
    ];
    args.extend(rights.map(str::to_owned));
    args.extend(["+evalsha", "+script|load"].map(str::to_owned));
    args.extend(more.iter().map(|right| (*right).to_owned()));
    args
}
