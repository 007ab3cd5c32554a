//! The in-process caches of the hot path (token checks, decrypted credentials, settings,
//! provisioned external users), and what they do when the store fails: stale-if-error.
//!
//! [`TtlCache`] answers from memory for its time-to-live. A read that missed asks the store;
//! if the store fails (database down, pool exhausted), the service may instead take the last
//! value the store gave for that key ([`TtlCache::stale`]) as long as it was read less than the
//! [`StaleIfError`] bound ago. Invalidation (a revocation, a key deleted or replaced, a tier or
//! settings change, made here or announced by another replica) removes the entry, stale copy
//! included: what was invalidated before an outage never comes back during it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::StoreError;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The cache generation a read started in: a read that started before an invalidation does
/// not store its (possibly outdated) answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Generation(u64);

struct Entry<V> {
    value: V,
    /// When the store last gave this value (the age stale-if-error is bounded by).
    read: Instant,
    /// When the entry was last confirmed: by the store, or served stale while the store
    /// failed (the store is then asked again only after the TTL, not on every request).
    checked: Instant,
    /// Served stale since its last read: when it expires again, one caller asks the store and
    /// the others keep the stale value meanwhile (a hanging store costs one slow request per
    /// entry per TTL, not every request that arrives while that read waits).
    stale: bool,
}

struct State<K, V> {
    entries: HashMap<K, Entry<V>>,
    generation: u64,
}

/// A bounded map with a time-to-live, a generation counter and a stale-if-error read. Cleared
/// when full.
pub(crate) struct TtlCache<K, V> {
    state: Mutex<State<K, V>>,
    ttl: Duration,
    /// How long after its read an entry may still be served when the store fails (zero:
    /// never).
    stale_for: Duration,
    max_entries: usize,
}

impl<K, V> std::fmt::Debug for TtlCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtlCache")
            .field("ttl", &self.ttl)
            .field("stale_for", &self.stale_for)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq, V: Clone> TtlCache<K, V> {
    pub(crate) fn new(ttl: Duration, stale_for: Duration, max_entries: usize) -> Self {
        Self {
            state: Mutex::new(State {
                entries: HashMap::new(),
                generation: 0,
            }),
            ttl,
            stale_for,
            max_entries,
        }
    }

    /// The fresh value for `key`, or the generation a later [`Self::store`] must match.
    pub(crate) fn lookup(&self, key: &K) -> Result<V, Generation> {
        let mut state = lock(&self.state);
        let generation = Generation(state.generation);
        let Some(e) = state.entries.get_mut(key) else {
            return Err(generation);
        };
        if !e.stale {
            return if e.checked.elapsed() < self.ttl {
                Ok(e.value.clone())
            } else {
                Err(generation)
            };
        }
        // A stale value is never served past the stale bound, TTL or not.
        if e.read.elapsed() >= self.stale_for {
            return Err(generation);
        }
        if e.checked.elapsed() < self.ttl {
            return Ok(e.value.clone());
        }
        // Expired again while the store failed: this caller asks the store; the others take
        // the stale value for another TTL instead of waiting on the same (maybe hanging) read.
        e.checked = Instant::now();
        Err(generation)
    }

    /// Stores what the store just answered, unless something was invalidated since the read
    /// began. Nothing is kept when neither the TTL nor stale-if-error needs it.
    pub(crate) fn store(&self, key: K, value: V, since: Generation) {
        if self.ttl.is_zero() && self.stale_for.is_zero() {
            return;
        }
        let mut state = lock(&self.state);
        if state.generation != since.0 {
            return;
        }
        Self::insert(&mut state, self.max_entries, key, value);
    }

    /// Stores a value this process just wrote (invalidating reads in flight).
    pub(crate) fn put(&self, key: K, value: V) {
        let mut state = lock(&self.state);
        state.generation += 1;
        if self.ttl.is_zero() && self.stale_for.is_zero() {
            state.entries.remove(&key);
            return;
        }
        Self::insert(&mut state, self.max_entries, key, value);
    }

    fn insert(state: &mut State<K, V>, max: usize, key: K, value: V) {
        if state.entries.len() >= max && !state.entries.contains_key(&key) {
            state.entries.clear();
        }
        let now = Instant::now();
        state.entries.insert(
            key,
            Entry {
                value,
                read: now,
                checked: now,
                stale: false,
            },
        );
    }

    /// Stale-if-error: the last value the store gave for `key`, if that was less than the
    /// stale bound ago. It is then treated as fresh for another TTL, so a failing store is
    /// asked about this key once per TTL, not on every request.
    pub(crate) fn stale(&self, key: &K) -> Option<V> {
        if self.stale_for.is_zero() {
            return None;
        }
        let mut state = lock(&self.state);
        let entry = state.entries.get_mut(key)?;
        if entry.read.elapsed() >= self.stale_for {
            return None;
        }
        entry.checked = Instant::now();
        entry.stale = true;
        Some(entry.value.clone())
    }

    /// Expires every entry (the next lookup asks the store) but keeps the values for
    /// stale-if-error: for a feed of invalidations that was interrupted (changes may have been
    /// missed; an outage may follow, and the stale copies are what it is served from). Reads in
    /// flight do not store their answer.
    pub(crate) fn expire_all(&self) {
        let mut state = lock(&self.state);
        state.generation += 1;
        let ttl = self.ttl;
        let now = Instant::now();
        match now.checked_sub(ttl) {
            Some(past) => {
                for e in state.entries.values_mut() {
                    e.checked = past;
                    e.stale = false;
                }
            }
            None => state.entries.clear(),
        }
    }

    /// Invalidates `key` (a change made here or elsewhere): the entry goes, stale copy
    /// included, and reads in flight do not store their answer.
    pub(crate) fn invalidate(&self, key: &K) {
        let mut state = lock(&self.state);
        state.generation += 1;
        state.entries.remove(key);
    }

    /// Drops the entry of `key` if there is one (a newer answer superseded it); reads in flight
    /// are invalidated only when something was dropped.
    pub(crate) fn discard(&self, key: &K) {
        let mut state = lock(&self.state);
        if state.entries.remove(key).is_some() {
            state.generation += 1;
        }
    }

    /// Invalidates every entry for which `drop` is true; returns their keys.
    pub(crate) fn invalidate_where(&self, mut drop: impl FnMut(&K, &V) -> bool) -> Vec<K>
    where
        K: Clone,
    {
        let mut state = lock(&self.state);
        state.generation += 1;
        let mut dropped = Vec::new();
        state.entries.retain(|k, e| {
            let gone = drop(k, &e.value);
            if gone {
                dropped.push(k.clone());
            }
            !gone
        });
        dropped
    }

    /// What the services' `forget_all` does (their one caller: `Invalidation::Everything`,
    /// sent when the invalidation feed (re)connects): [`Self::expire_all`], not a deletion, so
    /// a flapping database does not empty the caches an outage is served from. Changes missed
    /// while the feed was down are then honoured at the next read, or during an outage at the
    /// latest when the stale bound passes (the bound operators already accept for a partition).
    pub(crate) fn clear(&self) {
        self.expire_all();
    }
}

/// What a stale-if-error answer stood in for (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleKind {
    /// A gateway-token check (acceptance or refusal).
    Token,
    /// A user's decrypted provider credential (or "no key").
    Credential,
    /// A user's gateway settings (fallback policy).
    Settings,
    /// An external (OIDC) user already provisioned locally.
    Identity,
}

impl StaleKind {
    /// Every kind, for metrics.
    pub const ALL: [StaleKind; 4] = [
        Self::Token,
        Self::Credential,
        Self::Settings,
        Self::Identity,
    ];

    /// The metric label (`token`, `credential`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Credential => "credential",
            Self::Settings => "settings",
            Self::Identity => "identity",
        }
    }
}

/// Stale-if-error: the bound on how old a cached value may be when it is served because the
/// store failed, shared by every cache of the process, with counters and once-per-outage logs.
///
/// The age counts from the value's last successful read, so with traffic the entries of a
/// running service are at most a TTL old when an outage begins, and are served for about this
/// bound into it. A change this process never saw (made by another replica while this one
/// could not reach the database, and not announced to it) is honoured at the latest when the
/// store answers again or the bound passes, whichever comes first.
#[derive(Debug)]
pub struct StaleIfError {
    max_age: Duration,
    served: [AtomicU64; 4],
    /// Set by the first stale answer, cleared by the next successful read: one log line per
    /// outage each way.
    failing: AtomicBool,
}

/// Default bound (`BYOK_STALE_IF_ERROR_SECS`): 15 minutes.
pub const DEFAULT_STALE_IF_ERROR: Duration = Duration::from_secs(900);

impl Default for StaleIfError {
    fn default() -> Self {
        Self::new(DEFAULT_STALE_IF_ERROR)
    }
}

impl StaleIfError {
    /// `max_age` zero disables stale answers (a failing store then fails the request).
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            served: Default::default(),
            failing: AtomicBool::new(false),
        }
    }

    /// Never serve stale values.
    pub fn disabled() -> Self {
        Self::new(Duration::ZERO)
    }

    /// How old a value may be and still serve while the store fails.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// Stale answers served since start, by kind.
    pub fn served(&self) -> [(StaleKind, u64); 4] {
        StaleKind::ALL.map(|k| (k, self.served[k as usize].load(Ordering::Relaxed)))
    }

    /// True between a stale answer and the next successful read of the store.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// A stale value stands in for a failed read.
    pub(crate) fn serving(&self, kind: StaleKind, error: &StoreError) {
        self.served[kind as usize].fetch_add(1, Ordering::Relaxed);
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = %error,
                max_age_secs = self.max_age.as_secs(),
                "the store cannot be read: serving cached identities, credentials and settings \
                 (each at most max_age_secs old) until it answers again"
            );
        }
    }

    /// The store answered a read.
    pub(crate) fn answered(&self) {
        if self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::Relaxed) {
            let served: u64 = self.served().iter().map(|(_, n)| n).sum();
            tracing::info!(
                stale_answers_since_start = served,
                "the store answers again: cached values are no longer served past their TTL"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_stale_and_invalidated() {
        let c: TtlCache<u32, &str> = TtlCache::new(Duration::ZERO, Duration::from_secs(60), 10);
        let g = c.lookup(&1).unwrap_err();
        c.store(1, "one", g);
        assert!(c.lookup(&1).is_err(), "TTL zero: never fresh");
        assert_eq!(c.stale(&1), Some("one"), "but kept for stale-if-error");
        c.invalidate(&1);
        assert_eq!(
            c.stale(&1),
            None,
            "an invalidated entry is never served stale"
        );
    }

    #[test]
    fn a_read_that_began_before_an_invalidation_is_not_stored() {
        let c: TtlCache<u32, &str> =
            TtlCache::new(Duration::from_secs(60), Duration::from_secs(60), 10);
        let g = c.lookup(&1).unwrap_err();
        c.invalidate(&1);
        c.store(1, "old", g);
        assert!(c.lookup(&1).is_err());
        assert_eq!(c.stale(&1), None);
    }

    #[test]
    fn stale_is_bounded_and_can_be_disabled() {
        let off: TtlCache<u32, &str> = TtlCache::new(Duration::ZERO, Duration::ZERO, 10);
        let g = off.lookup(&1).unwrap_err();
        off.store(1, "one", g);
        assert_eq!(off.stale(&1), None);
        let short: TtlCache<u32, &str> =
            TtlCache::new(Duration::ZERO, Duration::from_millis(20), 10);
        let g = short.lookup(&1).unwrap_err();
        short.store(1, "one", g);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(short.stale(&1), None, "older than the bound");
    }

    #[test]
    fn a_stale_answer_is_fresh_for_another_ttl() {
        let c: TtlCache<u32, &str> =
            TtlCache::new(Duration::from_millis(50), Duration::from_secs(60), 10);
        let g = c.lookup(&1).unwrap_err();
        c.store(1, "one", g);
        std::thread::sleep(Duration::from_millis(60));
        assert!(c.lookup(&1).is_err());
        assert_eq!(c.stale(&1), Some("one"));
        assert_eq!(c.lookup(&1), Ok("one"));
    }

    #[test]
    fn a_stale_value_is_never_served_past_the_bound() {
        // TTL longer than the bound: the stale answer must not be served for a whole TTL.
        let c: TtlCache<u32, &str> =
            TtlCache::new(Duration::from_secs(60), Duration::from_millis(80), 10);
        c.put(1, "one");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(c.stale(&1), Some("one"), "within the bound");
        assert_eq!(c.lookup(&1), Ok("one"));
        std::thread::sleep(Duration::from_millis(40));
        assert!(
            c.lookup(&1).is_err(),
            "read 90 ms ago: past the 80 ms bound"
        );
        assert_eq!(c.stale(&1), None);
    }

    #[test]
    fn one_caller_asks_again_while_the_store_fails() {
        let c: TtlCache<u32, &str> =
            TtlCache::new(Duration::from_millis(30), Duration::from_secs(60), 10);
        c.put(1, "one");
        std::thread::sleep(Duration::from_millis(40));
        // Before any failure every caller of an expired entry reads.
        assert!(c.lookup(&1).is_err());
        assert!(c.lookup(&1).is_err());
        assert_eq!(c.stale(&1), Some("one"));
        std::thread::sleep(Duration::from_millis(40));
        assert!(c.lookup(&1).is_err(), "the first caller asks the store");
        assert_eq!(
            c.lookup(&1),
            Ok("one"),
            "the others take the stale value meanwhile"
        );
        // The store answered: a fresh entry, normal rules.
        let g = c.lookup(&2).unwrap_err();
        c.store(1, "new", g);
        assert_eq!(c.lookup(&1), Ok("new"));
    }

    #[test]
    fn expire_all_keeps_stale_copies_and_invalidate_does_not() {
        let c: TtlCache<u32, &str> =
            TtlCache::new(Duration::from_secs(60), Duration::from_secs(60), 10);
        c.put(1, "one");
        c.put(2, "two");
        let g = c.lookup(&3).unwrap_err();
        c.expire_all();
        assert!(c.lookup(&1).is_err(), "expired: asks the store again");
        c.store(3, "three", g);
        assert!(c.lookup(&3).is_err(), "a read begun before is not stored");
        assert_eq!(c.stale(&1), Some("one"), "kept for stale-if-error");
        c.invalidate(&2);
        assert_eq!(c.stale(&2), None, "an explicit invalidation removes it");
    }

    #[test]
    fn counts_by_kind() {
        let s = StaleIfError::new(Duration::from_secs(1));
        let e = StoreError::Unavailable("down".into());
        s.serving(StaleKind::Credential, &e);
        s.serving(StaleKind::Credential, &e);
        assert!(s.failing());
        s.answered();
        assert!(!s.failing());
        assert_eq!(s.served()[1], (StaleKind::Credential, 2));
    }
}
