//! [`RefreshToken::fleet`]: the refresh token lives in a sealed store, and
//! every replica refreshes under the store's lease, with the latest one.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use zeroize::Zeroizing;

use super::{gone_earlier, RefreshToken, State};
use crate::oauth2::Error;
use crate::store::{Sealed, StoreFuture, StoreIdentity, TokenStore};
use crate::Token;

/// The first pause of a replica that waits for the lease; it doubles up to
/// [`LAST_POLL`].
const FIRST_POLL: Duration = Duration::from_millis(10);
const LAST_POLL: Duration = Duration::from_millis(200);
/// What a lease lasts beyond its holder's bound, for scheduling.
const LEASE_SLACK: Duration = Duration::from_millis(250);
/// Attempts at writing the record after a refresh: the one write that must
/// land, or the fleet holds a refresh token that is dead.
const WRITE_ATTEMPTS: u32 = 3;

/// The store, the record's key, and how long to wait for the lease.
pub(super) struct Fleet {
    store: Arc<dyn SealedStore>,
    key: String,
    lease_wait: Option<Duration>,
}

/// A [`Sealed`] store, whatever it seals.
trait SealedStore: TokenStore {
    /// What [`Sealed::read_strict`] reads.
    fn read_strict<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Zeroizing<Vec<u8>>>>;
}

impl<S: TokenStore> SealedStore for Sealed<S> {
    fn read_strict<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Zeroizing<Vec<u8>>>> {
        Sealed::read_strict(self, key)
    }
}

impl RefreshToken {
    /// Makes the fleet's replicas share this grant through `store`, sealed:
    /// the current refresh token (and the last access token) live in one
    /// record there, encrypted, and every refresh takes the store's lease
    /// first, then reads the record, then sends the latest refresh token.
    /// So a replica never sends a refresh token another one has rotated.
    ///
    /// `grant` names the grant in the fleet (a user id, an account id):
    /// with the token URL and the client id, it is the record's key (hashed;
    /// never a secret). Every replica refreshing this grant must give the
    /// same name, the same store prefix and the same [`SealKey`](crate::store::SealKey).
    ///
    /// The store must be [`Sealed`]: a refresh token is a long-lived
    /// credential, so an unsealed store is refused at compile time.
    ///
    /// **Without the store, no refresh.** When the store cannot be reached
    /// (a lease, read or write that fails or outlasts the store's
    /// [`op_timeout`](TokenStore::op_timeout)), or another replica holds the
    /// lease for longer than [`lease_wait`](Self::lease_wait), the fetch
    /// fails with a transient [`ErrorKind::Store`](crate::oauth2::ErrorKind::Store)
    /// error and no request is sent: a refresh outside the lease could send
    /// a refresh token another replica has already rotated, and logs the
    /// user out. The cache keeps serving a token that is still valid, and
    /// tries again after its backoff.
    ///
    /// The record holds what the application gave [`new`](Self::new) only
    /// until the first refresh: from then on the store's copy wins over the
    /// one given to a process that starts later. A record that cannot be
    /// opened (another seal key, tampered) is an error, not a miss, for the
    /// same reason.
    ///
    /// ```no_run
    /// use tower_bearer::oauth2::RefreshToken;
    /// use tower_bearer::store::{RedisStore, SealKey, Sealed};
    /// use tower_bearer::TokenCache;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let key = [7u8; 32];
    /// let store = Sealed::new(RedisStore::new("redis://127.0.0.1:6379/")?, SealKey::new(key));
    /// let source = RefreshToken::try_new("https://idp.example.com/token", "my-app", "s3cret", "rt-1")?
    ///     .fleet(store, "user-42");
    /// let cache = TokenCache::new(source);
    /// # drop(cache);
    /// # Ok(())
    /// # }
    /// ```
    pub fn fleet<S: TokenStore>(mut self, store: Sealed<S>, grant: impl Into<String>) -> Self {
        let (token_url, client_id) = self.inner.endpoint();
        let key = StoreIdentity::new("oauth2/refresh_token/grant")
            .with("token_url", token_url)
            .with("client_id", client_id)
            .with("grant", grant)
            .key(None);
        let lease_wait = self.fleet.as_ref().and_then(|fleet| fleet.lease_wait);
        self.fleet = Some(Arc::new(Fleet {
            store: Arc::new(store),
            key,
            lease_wait,
        }));
        self
    }

    /// How long a replica waits for another's lease before it gives up
    /// with a transient [`Store`](crate::oauth2::ErrorKind::Store) error.
    /// Default: the lease's own length (the request timeout, four store
    /// operations and 250 ms), so that a holder that died is outwaited.
    /// Set it after [`fleet`](Self::fleet).
    pub fn lease_wait(mut self, wait: Duration) -> Self {
        if let Some(fleet) = self.fleet.take() {
            self.fleet = Some(Arc::new(Fleet {
                store: Arc::clone(&fleet.store),
                key: fleet.key.clone(),
                lease_wait: Some(wait),
            }));
        }
        self
    }
}

impl Fleet {
    fn lease_ttl(&self, request_timeout: Duration) -> Duration {
        request_timeout
            .saturating_add(self.store.op_timeout().saturating_mul(4))
            .saturating_add(LEASE_SLACK)
    }

    /// One refresh under the lease.
    pub(super) async fn refresh(
        &self,
        source: &RefreshToken,
        state: &mut State,
    ) -> Result<Token, Error> {
        let owner = owner();
        let ttl = self.lease_ttl(source.request_timeout);
        let give_up = Instant::now() + self.lease_wait.unwrap_or(ttl);
        let mut pause = FIRST_POLL;
        loop {
            let lease = self.store.lease(&self.key, &owner, ttl);
            match self.op("lease", lease).await {
                Ok(true) => break,
                Ok(false) => {}
                // A lease that timed out may still land: it expires alone.
                Err(error) => return Err(error),
            }
            let now = Instant::now();
            if now >= give_up {
                return Err(Error::store(
                    "another replica holds the refresh lease; no request sent",
                ));
            }
            tokio::time::sleep(pause.min(give_up - now)).await;
            pause = (pause * 2).min(LAST_POLL);
        }
        let outcome = self.refresh_leased(source, state).await;
        let _ = self
            .op("release", self.store.release(&self.key, &owner))
            .await;
        let (token, rotated) = outcome?;
        // After the release: the hook is the application's, and no other
        // replica waits for it.
        if rotated {
            source.persist(state).await;
        }
        Ok(token)
    }

    async fn refresh_leased(
        &self,
        source: &RefreshToken,
        state: &mut State,
    ) -> Result<(Token, bool), Error> {
        let stored = self.op("read", self.store.read_strict(&self.key)).await?;
        if let Some(value) = stored {
            let record = Record::decode(&value).ok_or_else(|| {
                Error::store(
                    "the stored refresh token cannot be read (another seal key?); no request sent",
                )
            })?;
            if record.gone {
                state.gone = true;
                return Err(gone_earlier());
            }
            // Ours is newer only when our last write failed.
            if record.generation > state.generation {
                state.current = record.refresh;
                state.generation = record.generation;
                // Another replica refreshed since we did: its access token
                // serves us too, while it has most of its life ahead.
                if !source.inner.is_dpop() {
                    if let Some(token) = record.access {
                        return Ok((token, false));
                    }
                }
            }
        }
        match source.send(state).await {
            Ok((token, rotated)) => {
                state.generation += 1;
                let record = Record::encode(false, state.generation, &state.current, Some(&token));
                self.write(&record).await;
                Ok((token, rotated))
            }
            Err(error) => {
                if state.gone {
                    let record = Record::encode(true, state.generation, "", None);
                    self.write(&record).await;
                }
                Err(error)
            }
        }
    }

    /// Writes the record, a few times if it must: a rotated refresh token
    /// the store does not hold is one the next replica cannot use.
    async fn write(&self, record: &[u8]) {
        for _ in 0..WRITE_ATTEMPTS {
            if self
                .op("write", self.store.write(&self.key, record, None))
                .await
                .is_ok()
            {
                return;
            }
        }
        #[cfg(feature = "tracing")]
        tracing::warn!(
            "cannot write the refreshed grant to the fleet store: this process holds its only live refresh token"
        );
    }

    async fn op<T>(&self, what: &'static str, op: StoreFuture<'_, T>) -> Result<T, Error> {
        match tokio::time::timeout(self.store.op_timeout(), op).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(Error::store(format!(
                "the store's {what} failed ({error}); no request sent"
            ))),
            Err(_) => Err(Error::store(format!(
                "the store's {what} timed out; no request sent"
            ))),
        }
    }
}

/// A random lease owner.
fn owner() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::getrandom(&mut bytes).is_err() {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (nanos ^ (u128::from(std::process::id()) << 96)).to_be_bytes();
    }
    crate::identity::hex(&bytes)
}

/// The grant's record in the store (sealed by the store):
/// `tbrt1`, gone (1 byte), generation (8), the access token's issue time
/// and expiry in Unix milliseconds (8 + 8, 0 for none), then the refresh
/// token and the access token, each as a 4-byte length and its bytes.
struct Record {
    gone: bool,
    generation: u64,
    refresh: Zeroizing<String>,
    /// The access token, if it still has more than half its life ahead.
    access: Option<Token>,
}

const MAGIC: &[u8] = b"tbrt1";

impl Record {
    fn encode(
        gone: bool,
        generation: u64,
        refresh: &str,
        access: Option<&Token>,
    ) -> Zeroizing<Vec<u8>> {
        let now = SystemTime::now();
        let (issued, expires, access) =
            match access.and_then(|token| Some((token, token.expiry()?))) {
                Some((token, expiry)) => {
                    let left = expiry.saturating_duration_since(Instant::now());
                    (unix_ms(now), unix_ms(now + left), token.secret())
                }
                None => (0, 0, ""),
            };
        let mut out = Zeroizing::new(Vec::with_capacity(
            MAGIC.len() + 1 + 24 + 8 + refresh.len() + access.len(),
        ));
        out.extend_from_slice(MAGIC);
        out.push(u8::from(gone));
        out.extend_from_slice(&generation.to_be_bytes());
        out.extend_from_slice(&issued.to_be_bytes());
        out.extend_from_slice(&expires.to_be_bytes());
        for part in [refresh, access] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        out
    }

    fn decode(value: &[u8]) -> Option<Self> {
        let rest = value.strip_prefix(MAGIC)?;
        let (&gone, rest) = rest.split_first()?;
        let (generation, rest) = u64_of(rest)?;
        let (issued, rest) = u64_of(rest)?;
        let (expires, rest) = u64_of(rest)?;
        let (refresh, rest) = part(rest)?;
        let (access, rest) = part(rest)?;
        if !rest.is_empty() || gone > 1 {
            return None;
        }
        let now = unix_ms(SystemTime::now());
        let access = (!access.is_empty()
            && expires > issued
            && now < expires
            && expires - now > (expires - issued) / 2)
            .then(|| {
                Token::new(access.to_owned())
                    .expires_at(Instant::now() + Duration::from_millis(expires - now))
            });
        Some(Self {
            gone: gone == 1,
            generation,
            refresh: Zeroizing::new(refresh.to_owned()),
            access,
        })
    }
}

fn u64_of(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = bytes.split_at_checked(8)?;
    Some((u64::from_be_bytes(head.try_into().ok()?), rest))
}

fn part(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let (len, rest) = bytes.split_at_checked(4)?;
    let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
    let (text, rest) = rest.split_at_checked(len)?;
    Some((std::str::from_utf8(text).ok()?, rest))
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Mutex;

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::{BodyExt, Full};

    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::SealKey;
    use crate::TokenSource;

    #[tokio::test]
    async fn a_failed_write_is_tried_again_so_the_next_replica_has_the_rotation() {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let idp = {
            let sent = Arc::clone(&sent);
            tower::service_fn(move |request: Request<Full<Bytes>>| {
                let sent = Arc::clone(&sent);
                async move {
                    let body = request.into_body().collect().await.unwrap().to_bytes();
                    let form = String::from_utf8(body.to_vec()).unwrap();
                    let token = form
                        .split('&')
                        .find_map(|pair| pair.strip_prefix("refresh_token="))
                        .unwrap()
                        .to_owned();
                    let n = {
                        let mut sent = sent.lock().unwrap();
                        sent.push(token);
                        sent.len()
                    };
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                        r#"{{"access_token":"at-{n}","token_type":"Bearer","expires_in":3600,"refresh_token":"rt-{n}"}}"#
                    )))))
                }
            })
        };
        let store = Arc::new(MemoryStore::default());
        store.fail_writes(WRITE_ATTEMPTS - 1);
        let replica = || {
            RefreshToken::new("https://idp.example.com/token", "app", "s", "rt-0")
                .http_client(idp.clone())
                .fleet(
                    Sealed::new(Arc::clone(&store), SealKey::new([3; 32])),
                    "user",
                )
        };
        replica().fetch().await.unwrap();
        // Another replica, from the first refresh token: it takes the
        // stored rotation (and its access token), then refreshes with it.
        let other = replica();
        assert_eq!(other.fetch().await.unwrap().secret(), "at-1");
        other.fetch().await.unwrap();
        assert_eq!(*sent.lock().unwrap(), ["rt-0", "rt-1"]);
    }

    #[test]
    fn a_record_round_trips_and_garbage_is_none() {
        let token = Token::new("at-1").expires_at(Instant::now() + Duration::from_secs(600));
        let value = Record::encode(false, 7, "rt-7", Some(&token));
        let record = Record::decode(&value).unwrap();
        assert!(!record.gone);
        assert_eq!(record.generation, 7);
        assert_eq!(&*record.refresh, "rt-7");
        assert_eq!(record.access.unwrap().secret(), "at-1");
        // An access token with less than half its life ahead is not shared.
        let old = Token::new("at-2").expires_at(Instant::now() + Duration::from_secs(600));
        let mut value = Record::encode(false, 8, "rt-8", Some(&old)).to_vec();
        let issued = u64::from_be_bytes(value[14..22].try_into().unwrap()) - 1_200_000;
        value[14..22].copy_from_slice(&issued.to_be_bytes());
        assert!(Record::decode(&value).unwrap().access.is_none());
        let gone = Record::encode(true, 3, "", None);
        assert!(Record::decode(&gone).unwrap().gone);
        assert!(Record::decode(b"tbrt1").is_none());
        assert!(Record::decode(&value[..value.len() - 1]).is_none());
    }
}
