//! What route resolution produces ([`Resolution`]) and the process's table of lookups in
//! flight ([`InFlight`]), shared by the workers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use futures_channel::oneshot;

use crate::route::SessionKeys;
use crate::secret::Secret;

/// The outcome of resolving a login.
#[derive(Debug, Clone)]
pub enum Resolution {
    Route {
        server: SocketAddr,
        /// Decoded account name for the backend login.
        account: Vec<u8>,
        /// Password from the handler's Auth-Pass (replaces the client's).
        password: Option<Secret>,
        /// Cache keys to drop if the backend rejects the credentials.
        keys: Option<SessionKeys>,
    },
    /// The handler refused: reply NO after `wait`. `text` is shown in the stock dialect.
    Denied {
        text: Option<Vec<u8>>,
        wait: Option<Duration>,
    },
    /// Infrastructure failure (already logged): internal error to the client.
    Failed(super::error::ProxyError),
}

/// In-flight lookups of the process: the mail logins', keyed by (protocol, client IP, login),
/// and the web's, keyed by everything a web lookup asks. Touched twice per cache miss; never on
/// the relay path.
#[derive(Default)]
pub struct InFlight {
    pub(super) mail: Table<Resolution>,
    pub(super) web: Table<super::webroute::WebRoute>,
}

/// Lookups in flight by key, with the callers waiting for each one's answer.
pub(super) struct Table<T>(Mutex<HashMap<Vec<u8>, Vec<oneshot::Sender<T>>>>);

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table(Mutex::new(HashMap::new()))
    }
}

/// What [`Table::join`] made of a caller.
pub(super) enum Joined<'a, T: Clone> {
    /// Another caller is asking: wait for its answer (a closed channel: it was dropped).
    Wait(oneshot::Receiver<T>),
    /// This caller asks; the guard answers the others (or, dropped, closes their channels).
    Lead(Lead<'a, T>),
}

impl<T: Clone> Table<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Vec<oneshot::Sender<T>>>> {
        // a panic while holding this lock cannot leave the map inconsistent (single inserts
        // and removes), so a poisoned lock is still usable
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait for the lookup of `key` in flight, or become it.
    pub(super) fn join(&self, key: Vec<u8>) -> Joined<'_, T> {
        let mut table = self.lock();
        if let Some(waiters) = table.get_mut(&key) {
            let (tx, rx) = oneshot::channel();
            waiters.push(tx);
            return Joined::Wait(rx);
        }
        table.insert(key.clone(), Vec::new());
        Joined::Lead(Lead {
            table: self,
            key: Some(key),
        })
    }
}

/// The caller whose lookup the others wait for. Removes the entry whether the lookup finishes
/// (`finish`, which answers the waiters) or its future is dropped (the waiters then see their
/// channel closed).
pub(super) struct Lead<'a, T: Clone> {
    table: &'a Table<T>,
    key: Option<Vec<u8>>,
}

impl<T: Clone> Lead<'_, T> {
    pub(super) fn finish(mut self, answer: &T) {
        if let Some(key) = self.key.take() {
            let waiters = self.table.lock().remove(&key);
            for tx in waiters.into_iter().flatten() {
                let _ = tx.send(answer.clone());
            }
        }
    }
}

impl<T: Clone> Drop for Lead<'_, T> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.table.lock().remove(&key);
        }
    }
}
