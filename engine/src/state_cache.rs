//! Recently written order states, kept in memory with the stream version they stand for.
//!
//! Why: every command reads its order's stream before deciding. A payment notification arrives
//! seconds after this process created the prepay, so the state is almost always known already;
//! reading and decoding the stream again is a database round trip per notification.
//!
//! Why it is safe: an entry is only ever the fold of the events up to its version, computed by
//! the same `evolve` a replay uses, and a decision made on it is appended with exactly that
//! version expected. Streams only grow, so an entry is either current or behind; behind means
//! another writer (another engine process, say) appended since, the append is refused as a
//! conflict, the entry is dropped and the command is decided again on a fresh read. Reads for
//! answers (order details, histories) never come from here.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;

use crate::order::{Order, OrderId};

pub struct StateCache {
    entries: Mutex<LruCache<OrderId, (Order, i64)>>,
}

impl StateCache {
    pub fn new(capacity: usize) -> StateCache {
        StateCache {
            entries: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<OrderId, (Order, i64)>> {
        // A panic while holding the lock cannot leave an entry half-written (each operation is
        // a single insert or removal), so a poisoned cache is still consistent.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state and version last seen for `id`.
    pub fn get(&self, id: OrderId) -> Option<(Order, i64)> {
        self.lock().get(&id).cloned()
    }

    /// Remembers `order` as the state at `version`, unless a newer one is already known.
    pub fn put(&self, id: OrderId, order: Order, version: i64) {
        let mut entries = self.lock();
        if entries.peek(&id).is_some_and(|(_, known)| *known > version) {
            return;
        }
        entries.put(id, (order, version));
    }

    pub fn forget(&self, id: OrderId) {
        self.lock().pop(&id);
    }
}
