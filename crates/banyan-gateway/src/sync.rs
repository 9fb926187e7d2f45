//! Locks that survive a panic elsewhere.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, ignoring poisoning.
///
/// The kit's and the gateways' locks guard state that is consistent at
/// every step (a queue, a routing table) and are never held across an
/// await; a panic in another holder cannot leave it half-changed, so the
/// data is still good and the gateway goes on.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
