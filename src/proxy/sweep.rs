//! Idle timeouts and drain closes of relayed sessions: one coarse sweep per worker instead of
//! a timer per session.
//!
//! A relayed session enters the worker's [`Sweep`] with its idle timeout and drain slot, notes
//! every chunk it moves ([`Entered::touch`]) and waits on [`Entered::ended`] beside its two
//! reads. The worker's sweeper task ([`run`]) looks at every entry once a second (every
//! [`DRAIN_TICK`] while draining) and ends those whose time has come, waking them. An idle
//! session therefore keeps no timer, no drain waiter and no clock of its own: one small entry
//! in a vector. The price is precision: an idle timeout fires up to [`TICK`] late.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_util::future::select;

use super::drain::Drain;
use super::relay::End;

/// How often the sweeper looks at the sessions.
pub const TICK: Duration = Duration::from_secs(1);
/// ... and while the worker drains (sessions close at their own moments of the spread).
pub const DRAIN_TICK: Duration = Duration::from_millis(100);
/// A drained session is closed after this long without a byte either way (when it can be).
pub const QUIET: Duration = Duration::from_secs(1);

/// 40 bytes per relayed session (64 with an `Instant` and a `Duration`): times are
/// milliseconds since the sweep's epoch.
struct Entry {
    /// When a byte last moved either way, in ms since the epoch.
    last: u64,
    /// The idle timeout in ms (at most ~49 days: a longer one counts as that).
    idle: u32,
    end: Option<End>,
    /// The session's drain slot ([`Drain::slot`]).
    slot: u64,
    waker: Option<Waker>,
}

/// A worker's relayed sessions, by key; freed keys are reused.
pub struct Sweep {
    entries: RefCell<Vec<Option<Entry>>>,
    free: RefCell<Vec<usize>>,
    live: Cell<usize>,
    epoch: Instant,
}

impl Default for Sweep {
    fn default() -> Self {
        Sweep {
            entries: RefCell::default(),
            free: RefCell::default(),
            live: Cell::default(),
            epoch: Instant::now(),
        }
    }
}

impl Sweep {
    /// `t` in ms since the epoch (rounded down: a session may end up to 1 ms early, on a
    /// sweep of one second).
    fn ms(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// A session starts relaying at `now`.
    pub fn enter(self: &Rc<Self>, now: Instant, idle: Duration, slot: u64) -> Entered {
        let entry = Entry {
            last: self.ms(now),
            idle: u32::try_from(idle.as_millis()).unwrap_or(u32::MAX),
            slot,
            end: None,
            waker: None,
        };
        let mut entries = self.entries.borrow_mut();
        let key = match self.free.borrow_mut().pop() {
            Some(k) => {
                entries[k] = Some(entry);
                k
            }
            None => {
                entries.push(Some(entry));
                entries.len() - 1
            }
        };
        self.live.set(self.live.get() + 1);
        Entered {
            sweep: self.clone(),
            key,
        }
    }

    /// Sessions relaying now.
    pub fn len(&self) -> usize {
        self.live.get()
    }

    pub fn is_empty(&self) -> bool {
        self.live.get() == 0
    }

    /// End every session whose idle timeout passed or whose drain moment came, at `now`.
    /// Returns how many were ended.
    pub fn sweep(&self, now: Instant, drain: &Drain) -> usize {
        let last_close = drain.last_close();
        let mut woken = Vec::new();
        let mut ended = 0;
        {
            let mut entries = self.entries.borrow_mut();
            for e in entries.iter_mut().flatten() {
                if e.end.is_some() {
                    continue;
                }
                let close = drain.close_at(e.slot).zip(last_close);
                let last = self.epoch + Duration::from_millis(e.last);
                let idle = Duration::from_millis(u64::from(e.idle));
                if let Some(end) = verdict(last, idle, now, close) {
                    e.end = Some(end);
                    ended += 1;
                    woken.extend(e.waker.take());
                }
            }
        }
        // woken outside the borrow: a waker may run code that enters or leaves
        for w in woken {
            w.wake();
        }
        ended
    }

    fn with<R>(&self, key: usize, f: impl FnOnce(&mut Entry) -> R) -> R {
        let mut entries = self.entries.borrow_mut();
        // invariant: an Entered's key is occupied until it is dropped
        f(entries[key].as_mut().expect("a live sweep entry"))
    }
}

/// Whether a session last active at `last` ends at `now`: its idle timeout passed, or the
/// worker drains (`close`: the session's moment and the spread's end) and its moment came,
/// and it has been quiet for [`QUIET`] (so that an answer in flight is not cut) or the spread
/// is about to end.
fn verdict(
    last: Instant,
    idle: Duration,
    now: Instant,
    close: Option<(Instant, Instant)>,
) -> Option<End> {
    if last + idle <= now {
        return Some(End::Idle);
    }
    let (close, end) = close?;
    let quiet = now.saturating_duration_since(last) >= QUIET;
    (now >= close && (quiet || now + QUIET > end)).then_some(End::Shutdown)
}

/// A session's place in the sweep; leaves it when dropped.
pub struct Entered {
    sweep: Rc<Sweep>,
    key: usize,
}

impl Entered {
    /// A byte moved at `now`.
    pub fn touch(&self, now: Instant) {
        let last = self.sweep.ms(now);
        self.sweep.with(self.key, |e| e.last = last);
    }

    /// Resolves when the sweep ends the session.
    pub fn ended(&self) -> Ended<'_> {
        Ended { entered: self }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        self.sweep.entries.borrow_mut()[self.key] = None;
        self.sweep.free.borrow_mut().push(self.key);
        self.sweep.live.set(self.sweep.live.get() - 1);
    }
}

/// Future of [`Entered::ended`].
pub struct Ended<'a> {
    entered: &'a Entered,
}

impl Future for Ended<'_> {
    type Output = End;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<End> {
        let e = self.entered;
        e.sweep.with(e.key, |entry| match entry.end {
            Some(end) => Poll::Ready(end),
            None => {
                match &entry.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => entry.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        })
    }
}

/// The worker's sweeper: runs for the worker's life. `on_tick` runs after each sweep of a
/// worker that is not draining (the worker's other once-a-tick chores).
pub async fn run(sweep: &Sweep, drain: &Drain, mut on_tick: impl FnMut(Instant)) {
    loop {
        if drain.started().is_some() {
            compio::time::sleep(DRAIN_TICK).await;
        } else {
            // the start of a drain is looked at at once
            let sleep = std::pin::pin!(compio::time::sleep(TICK));
            let _ = select(sleep, drain.wait()).await;
        }
        let now = Instant::now();
        sweep.sweep(now, drain);
        if drain.started().is_none() {
            on_tick(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(std::sync::atomic::AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn poll(f: &mut Ended<'_>, waker: &Waker) -> Poll<End> {
        Pin::new(f).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn idle_sessions_end_after_their_timeout_and_are_woken() {
        let sweep = Rc::new(Sweep::default());
        let t0 = Instant::now();
        let drain = Drain::new(Duration::ZERO, Duration::ZERO, 0);
        let a = sweep.enter(t0, Duration::from_secs(10), 0);
        let b = sweep.enter(t0, Duration::from_secs(20), 1);
        assert_eq!(sweep.len(), 2);
        let count = Arc::new(Count(0.into()));
        let waker = Waker::from(count.clone());
        let mut fa = a.ended();
        assert_eq!(poll(&mut fa, &waker), Poll::Pending);
        // activity at 5 s moves a's deadline to 15 s
        a.touch(t0 + Duration::from_secs(5));
        assert_eq!(sweep.sweep(t0 + Duration::from_secs(12), &drain), 0);
        assert_eq!(sweep.sweep(t0 + Duration::from_secs(15), &drain), 1);
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(poll(&mut fa, &waker), Poll::Ready(End::Idle));
        // an ended session is not ended twice
        assert_eq!(sweep.sweep(t0 + Duration::from_secs(16), &drain), 0);
        assert_eq!(sweep.sweep(t0 + Duration::from_secs(20), &drain), 1);
        drop(a);
        assert_eq!(sweep.len(), 1);
        // the freed key is reused
        let c = sweep.enter(t0, Duration::from_secs(1), 2);
        assert_eq!(c.key, 0);
        drop(b);
        drop(c);
        assert!(sweep.is_empty());
    }

    #[test]
    fn a_drain_closes_quiet_sessions_at_their_moment() {
        let t0 = Instant::now();
        let hour = Duration::from_secs(3600);
        let s = Duration::from_secs;
        // not draining: nothing but the idle timeout
        assert_eq!(verdict(t0, hour, t0 + s(100), None), None);
        let close = Some((t0 + s(10), t0 + s(20)));
        // before its moment
        assert_eq!(verdict(t0, hour, t0 + s(9), close), None);
        // its moment, quiet for a second
        assert_eq!(verdict(t0, hour, t0 + s(10), close), Some(End::Shutdown));
        // its moment, but a byte moved half a second ago: waits for quiet ...
        let busy = t0 + Duration::from_millis(9500);
        assert_eq!(verdict(busy, hour, t0 + s(10), close), None);
        assert_eq!(
            verdict(busy, hour, t0 + Duration::from_millis(10500), close),
            Some(End::Shutdown)
        );
        // ... but never past the spread's end
        let late = t0 + Duration::from_millis(19500);
        assert_eq!(
            verdict(late - Duration::from_millis(100), hour, late, close),
            Some(End::Shutdown)
        );
    }
}
