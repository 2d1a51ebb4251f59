//! Giving a login storm's memory back to the system.
//!
//! glibc returns freed memory to the system only from the top of each arena. When thousands
//! of clients connect at once (a restart, a network blip, a load balancer failing over), each
//! session holds a few KiB while it logs in (tens of KiB during a TLS handshake); once they
//! are relaying they keep about 1 KiB, scattered over pages whose other bytes are free, and
//! those pages stay resident: measured on a backend that answers logins after 1 s, 1 407
//! bytes per idle session instead of 879 (docs/benchmarks.md, session 14).
//!
//! So each worker's sweeper looks once a tick at its connection counters ([`Release::tick`]):
//! after a burst of at least [`STORM`] new connections, on the first tick when new
//! connections have calmed down and few sessions are still in their login, it asks glibc to
//! give every arena's free pages back ([`ringmail_heap::release_free_memory`], one
//! `malloc_trim(0)`). Never during steady load: trimming pages the next requests would fault
//! in again costs more than it saves (session 13 measured exactly that on the web path).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// New connections since the last release that make a burst worth giving back.
pub const STORM: u64 = 512;
/// At most this many new connections in the last tick, and sessions still in their login:
/// the burst is over.
pub const CALM: u64 = 16;
/// A release by any worker this recent covers this worker's burst too (every arena is
/// trimmed).
pub const RECENT: Duration = Duration::from_secs(2);

/// One worker's view of its connection counters between releases. Sans-I/O: counts and
/// times come in, a decision goes out.
#[derive(Debug, Default)]
pub struct Release {
    /// The accepted-connections counter at the last tick (None before the first).
    last_accepted: Option<u64>,
    /// Connections accepted since the last release.
    since: u64,
}

impl Release {
    /// A tick: `accepted` is the worker's accepted-connections counter, `in_login` its mail
    /// sessions not yet relaying, `last_release` how long ago any worker last released
    /// (None: never). True when this worker should release now.
    pub fn tick(&mut self, accepted: u64, in_login: u64, last_release: Option<Duration>) -> bool {
        let new = accepted.saturating_sub(self.last_accepted.unwrap_or(accepted));
        self.last_accepted = Some(accepted);
        self.since = self.since.saturating_add(new);
        if self.since < STORM || new > CALM || in_login > CALM {
            return false;
        }
        // the burst is over: released now, or just now by another worker
        self.since = 0;
        last_release.is_none_or(|ago| ago >= RECENT)
    }
}

/// When the process last released, in ms since [`epoch`] plus one (0: never).
static LAST: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The worker's tick at `now`: release if [`Release::tick`] says so. Returns what the release
/// gave back (whether anything, and how long it took) when it ran.
pub fn tick(
    state: &mut Release,
    now: Instant,
    accepted: u64,
    in_login: u64,
) -> Option<(bool, Duration)> {
    let since_epoch = |t: Instant| t.saturating_duration_since(epoch());
    let last = match LAST.load(Relaxed) {
        0 => None,
        ms => Some(since_epoch(now).saturating_sub(Duration::from_millis(ms - 1))),
    };
    if !state.tick(accepted, in_login, last) {
        return None;
    }
    let ms = u64::try_from(since_epoch(now).as_millis()).unwrap_or(u64::MAX - 1);
    LAST.store(ms + 1, Relaxed);
    let start = Instant::now();
    let released = ringmail_heap::release_free_memory();
    Some((released, start.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_once_a_burst_has_calmed_down() {
        let mut r = Release::default();
        // the first tick only learns the counter
        assert!(!r.tick(1_000, 0, None));
        // a burst: 400 then 300 new connections a tick, many in their login
        assert!(!r.tick(1_400, 350, None));
        assert!(!r.tick(1_700, 300, None));
        // arrivals stop but logins are still under way (a slow backend)
        assert!(!r.tick(1_702, 200, None));
        // logins done: release, once
        assert!(r.tick(1_705, 3, None));
        assert!(!r.tick(1_706, 3, None));
        assert!(!r.tick(1_706, 0, Some(Duration::from_secs(60))));
    }

    #[test]
    fn steady_load_and_small_bursts_never_release() {
        let mut r = Release::default();
        let mut accepted = 0;
        assert!(!r.tick(accepted, 0, None));
        // 200 connections a second for a minute: never calm
        for _ in 0..60 {
            accepted += 200;
            assert!(!r.tick(accepted, 20, None));
        }
        // a trickle below the calm level adds up to a burst only slowly, then releases
        let mut r = Release::default();
        assert!(!r.tick(0, 0, None));
        let mut released = 0;
        for i in 1..=100u64 {
            if r.tick(i * 10, 2, None) {
                released += 1;
            }
        }
        assert_eq!(
            released, 1,
            "1 000 connections in 100 ticks: one release at 512"
        );
    }

    #[test]
    fn a_release_by_another_worker_covers_this_one() {
        let mut r = Release::default();
        assert!(!r.tick(0, 0, None));
        assert!(!r.tick(600, 500, None));
        // calm, but another worker released a second ago: not again, and the burst is
        // counted as given back
        assert!(!r.tick(600, 0, Some(Duration::from_secs(1))));
        assert!(!r.tick(600, 0, Some(Duration::from_secs(5))));
        // a later burst is released
        assert!(!r.tick(1_200, 400, Some(Duration::from_secs(6))));
        assert!(r.tick(1_201, 0, Some(Duration::from_secs(7))));
    }

    #[test]
    fn a_counter_that_goes_back_counts_nothing() {
        let mut r = Release::default();
        assert!(!r.tick(5_000, 0, None));
        assert!(!r.tick(10, 0, None));
        assert_eq!(r.since, 0);
    }
}
