//! Graceful shutdown of one worker: the moment draining began and a way for every task of the
//! worker (accept loops, pre-login sessions, relays) to wait for it.
//!
//! On SIGTERM the process tells each worker to drain (a message from the signal thread). The
//! worker then stops accepting, pre-login sessions answer `* BYE` / `-ERR` and close, and
//! relayed sessions run on for `shutdown.grace`, then close one by one over `shutdown.spread`
//! so that thousands of IDLE clients do not reconnect in the same second (Dovecot's
//! `login_proxy_max_disconnect_delay`). Each relay's moment within the spread comes from its
//! [`Drain::slot`], a low-discrepancy sequence, so closes are evenly spaced whatever the
//! number of sessions. Single-threaded: one per worker, never shared.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// One worker's drain state.
pub struct Drain {
    started: Cell<Option<Instant>>,
    grace: Duration,
    spread: Duration,
    /// Tasks waiting for the start, by key; freed keys are reused.
    waiters: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
    next_slot: Cell<u64>,
    /// Mixed into slots so that workers do not close their sessions at the same moments.
    seed: u64,
}

impl Drain {
    pub fn new(grace: Duration, spread: Duration, seed: u64) -> Self {
        Drain {
            started: Cell::new(None),
            grace,
            spread,
            waiters: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            next_slot: Cell::new(0),
            seed,
        }
    }

    /// When draining began, if it has.
    pub fn started(&self) -> Option<Instant> {
        self.started.get()
    }

    /// Begin draining at `now` and wake every waiter. Later calls change nothing.
    pub fn start(&self, now: Instant) {
        if self.started.get().is_some() {
            return;
        }
        self.started.set(Some(now));
        let wakers: Vec<Waker> = self
            .waiters
            .borrow_mut()
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for w in wakers {
            w.wake();
        }
    }

    /// Resolves once draining has begun.
    pub fn wait(&self) -> Wait<'_> {
        Wait {
            drain: self,
            key: None,
        }
    }

    /// A new relayed session's slot: where in the spread it will be closed.
    pub fn slot(&self) -> u64 {
        let n = self.next_slot.get();
        self.next_slot.set(n + 1);
        n.wrapping_add(self.seed)
    }

    /// When the session with `slot` is closed, once draining has begun: after the grace
    /// period, at the slot's fraction of the spread (golden-ratio sequence, so any number of
    /// sessions is spread evenly).
    pub fn close_at(&self, slot: u64) -> Option<Instant> {
        let start = self.started.get()?;
        let frac = (slot.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
        Some(start + self.grace + self.spread.mul_f64(frac))
    }

    /// The latest moment any relayed session may still be open.
    pub fn last_close(&self) -> Option<Instant> {
        Some(self.started.get()? + self.grace + self.spread)
    }

    fn register(&self, key: &mut Option<usize>, waker: &Waker) {
        let mut waiters = self.waiters.borrow_mut();
        match *key {
            Some(k) => match &mut waiters[k] {
                Some(w) if w.will_wake(waker) => {}
                slot => *slot = Some(waker.clone()),
            },
            None => {
                let k = match self.free.borrow_mut().pop() {
                    Some(k) => {
                        waiters[k] = Some(waker.clone());
                        k
                    }
                    None => {
                        waiters.push(Some(waker.clone()));
                        waiters.len() - 1
                    }
                };
                *key = Some(k);
            }
        }
    }

    fn unregister(&self, key: usize) {
        self.waiters.borrow_mut()[key] = None;
        self.free.borrow_mut().push(key);
    }
}

/// Future of [`Drain::wait`]; deregisters itself when dropped.
pub struct Wait<'a> {
    drain: &'a Drain,
    key: Option<usize>,
}

impl Future for Wait<'_> {
    type Output = Instant;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Instant> {
        let this = self.get_mut();
        if let Some(t) = this.drain.started.get() {
            return Poll::Ready(t);
        }
        this.drain.register(&mut this.key, cx.waker());
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            self.drain.unregister(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_wake_once_started_and_deregister() {
        let d = Drain::new(Duration::from_secs(1), Duration::from_secs(10), 0);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut a = Box::pin(d.wait());
        let mut b = Box::pin(d.wait());
        assert!(a.as_mut().poll(&mut cx).is_pending());
        assert!(b.as_mut().poll(&mut cx).is_pending());
        drop(b);
        assert_eq!(d.free.borrow().len(), 1, "a dropped waiter frees its key");
        let now = Instant::now();
        d.start(now);
        assert_eq!(a.as_mut().poll(&mut cx), Poll::Ready(now));
        d.start(now + Duration::from_secs(5));
        assert_eq!(d.started(), Some(now), "the first start counts");
    }

    #[test]
    fn closes_are_spread_evenly_after_the_grace() {
        let d = Drain::new(Duration::from_secs(30), Duration::from_secs(60), 7);
        assert_eq!(d.close_at(1), None);
        let now = Instant::now();
        d.start(now);
        let mut offsets: Vec<f64> = (0..1000)
            .map(|_| (d.close_at(d.slot()).unwrap() - now).as_secs_f64())
            .collect();
        offsets.sort_by(f64::total_cmp);
        assert!(offsets[0] >= 30.0 && offsets[999] <= 90.0);
        // every 6-second window of the spread gets about a tenth of the sessions
        for w in 0..10 {
            let lo = 30.0 + 6.0 * w as f64;
            let n = offsets.iter().filter(|&&o| o >= lo && o < lo + 6.0).count();
            assert!((90..=110).contains(&n), "window {w}: {n}");
        }
    }
}
