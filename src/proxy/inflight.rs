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

/// In-flight lookups of the process, keyed by (protocol, client IP, login), with the sessions
/// waiting for each; and the web's, keyed by everything a web lookup asks, with the requests
/// waiting for each. Touched twice per cache miss; never on the relay path.
#[derive(Default)]
pub struct InFlight {
    waiting: Mutex<HashMap<Vec<u8>, Vec<oneshot::Sender<Resolution>>>>,
    web: Mutex<HashMap<Vec<u8>, Vec<oneshot::Sender<super::webroute::WebRoute>>>>,
}

impl InFlight {
    pub(super) fn table(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Vec<oneshot::Sender<Resolution>>>> {
        // a panic while holding this lock cannot leave the map inconsistent (single inserts
        // and removes), so a poisoned lock is still usable
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn web_table(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Vec<oneshot::Sender<super::webroute::WebRoute>>>>
    {
        self.web.lock().unwrap_or_else(|e| e.into_inner())
    }
}
