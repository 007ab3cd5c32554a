//! What every fake shares: a switch that makes a store fail like a lost database, and a lock
//! that survives a panicked test.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::error::StoreError;

/// While on, [`Failing::check`] answers `StoreError::Unavailable`.
#[derive(Debug, Default)]
pub(super) struct Failing(AtomicBool);

impl Failing {
    pub(super) fn set(&self, failing: bool) {
        self.0.store(failing, Ordering::Relaxed);
    }

    pub(super) fn check(&self) -> Result<(), StoreError> {
        if self.0.load(Ordering::Relaxed) {
            Err(StoreError::Unavailable("down".into()))
        } else {
            Ok(())
        }
    }
}

/// Locks `m`; a test that panicked while holding it has failed already, so keep going.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
