//! A [`TokenStore`] in memory, for the unit tests that inject faults a real
//! Redis cannot be made to show on cue: a store that answers late, writes
//! that fail. Leases expire on tokio's
//! clock, so the paused clock drives them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{fingerprint, Error, Fingerprint, StoreFuture, Stored, TokenStore};

#[derive(Default)]
pub(crate) struct MemoryStore {
    values: Mutex<HashMap<String, Vec<u8>>>,
    /// The owner of each lease and when it lapses.
    leases: Mutex<HashMap<String, (String, Instant)>>,
    /// How long every operation takes to answer.
    delay: Duration,
    /// How many of the next writes fail.
    failing_writes: AtomicU32,
}

impl MemoryStore {
    /// A store whose every answer takes `delay`.
    pub(crate) fn answering_after(delay: Duration) -> Self {
        Self {
            delay,
            ..Self::default()
        }
    }

    /// Makes the next `writes` writes fail.
    pub(crate) fn fail_writes(&self, writes: u32) {
        self.failing_writes.store(writes, Ordering::SeqCst);
    }

    /// The value stored under `key`.
    pub(crate) fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.values.lock().unwrap().get(key).cloned()
    }

    fn answer<'a, T: Send + 'a>(&'a self, result: Result<T, Error>) -> StoreFuture<'a, T> {
        let delay = self.delay;
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            result
        })
    }
}

impl TokenStore for MemoryStore {
    fn read<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Stored>> {
        let value = self.value(key);
        self.answer(Ok(value.map(|value| Stored { value, ttl: None })))
    }

    fn write<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        _: Option<SystemTime>,
    ) -> StoreFuture<'a, ()> {
        let fail = self
            .failing_writes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let result = if fail {
            Err(Error::new("injected write failure"))
        } else {
            self.values
                .lock()
                .unwrap()
                .insert(key.to_owned(), value.to_vec());
            Ok(())
        };
        self.answer(result)
    }

    fn lease<'a>(&'a self, key: &'a str, owner: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        let now = Instant::now();
        let granted = {
            let mut leases = self.leases.lock().unwrap();
            let free = leases
                .get(key)
                .is_none_or(|(held_by, until)| *until <= now || held_by == owner);
            if free {
                let until = now
                    .checked_add(ttl)
                    .unwrap_or(now + Duration::from_secs(86_400));
                leases.insert(key.to_owned(), (owner.to_owned(), until));
            }
            free
        };
        self.answer(Ok(granted))
    }

    fn release<'a>(&'a self, key: &'a str, owner: &'a str) -> StoreFuture<'a, ()> {
        let mut leases = self.leases.lock().unwrap();
        if leases.get(key).is_some_and(|(held_by, _)| held_by == owner) {
            leases.remove(key);
        }
        drop(leases);
        self.answer(Ok(()))
    }

    fn delete_if<'a>(&'a self, key: &'a str, expected: &'a Fingerprint) -> StoreFuture<'a, bool> {
        let mut values = self.values.lock().unwrap();
        let matches = values
            .get(key)
            .is_some_and(|value| fingerprint(value) == *expected);
        if matches {
            values.remove(key);
        }
        drop(values);
        self.answer(Ok(matches))
    }
}
