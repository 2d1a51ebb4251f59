//! The health of a peer the workers share (a lookup handler, a memcached server): marked down
//! until when, since when, and its last error. One value per peer for the whole process, so a
//! peer one worker finds down is skipped by all, and `ringmail servers` can report it. Touched
//! once per lookup or cache operation, never on the relay path.

use std::sync::Mutex;
use std::time::Instant;

pub struct PeerHealth {
    /// What the peer is, for the listing: `lookup`, `memcached`.
    kind: &'static str,
    /// Its address (a URL for a handler), for the listing.
    pub name: String,
    state: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    down_since: Option<Instant>,
    down_until: Option<Instant>,
    last_error: Option<(Instant, String)>,
}

impl PeerHealth {
    pub fn new(kind: &'static str, name: String) -> Self {
        PeerHealth {
            kind,
            name,
            state: Mutex::new(Health::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Health> {
        // plain fields: a panic elsewhere cannot leave them inconsistent
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Until when the peer is to be skipped, if it is marked down.
    pub fn down_until(&self) -> Option<Instant> {
        self.state().down_until
    }

    /// Whether the peer may be used at `now` (not marked down, or its mark has ended).
    pub fn is_up(&self, now: Instant) -> bool {
        self.down_until().is_none_or(|t| t <= now)
    }

    pub fn mark_down(&self, now: Instant, until: Instant, error: String) {
        let mut s = self.state();
        s.down_since.get_or_insert(now);
        s.down_until = Some(until);
        s.last_error = Some((now, error));
    }

    pub fn note_error(&self, now: Instant, error: String) {
        self.state().last_error = Some((now, error));
    }

    pub fn mark_up(&self) {
        let mut s = self.state();
        if s.down_since.is_some() {
            s.down_since = None;
            s.down_until = None;
        }
    }

    /// One line for `ringmail servers`: up, or down since when, and the last error.
    pub fn describe(&self, now: Instant) -> String {
        let s = self.state();
        let ago = |t: Instant| format!("{} s ago", now.saturating_duration_since(t).as_secs());
        let (kind, name) = (self.kind, &self.name);
        let mut line = match (s.down_since, s.down_until) {
            (Some(since), Some(until)) if until > now => format!(
                "{kind} {name} down since {}, skipped for {} s more",
                ago(since),
                until.saturating_duration_since(now).as_secs()
            ),
            (Some(since), _) => {
                format!("{kind} {name} down since {}, to be tried again", ago(since))
            }
            (None, _) => format!("{kind} {name} up"),
        };
        if let Some((at, error)) = &s.last_error {
            line.push_str(&format!("; last error {}: {error}", ago(*at)));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn down_then_up() {
        let h = PeerHealth::new("memcached", "127.0.0.1:11211".into());
        let t0 = Instant::now();
        assert!(h.is_up(t0));
        assert_eq!(h.describe(t0), "memcached 127.0.0.1:11211 up");
        h.mark_down(t0, t0 + Duration::from_secs(60), "connect: refused".into());
        assert!(!h.is_up(t0 + Duration::from_secs(59)));
        assert!(h.is_up(t0 + Duration::from_secs(60)));
        assert_eq!(
            h.describe(t0 + Duration::from_secs(10)),
            "memcached 127.0.0.1:11211 down since 10 s ago, skipped for 50 s more; \
             last error 10 s ago: connect: refused"
        );
        h.mark_up();
        assert!(h.is_up(t0));
        assert!(h
            .describe(t0)
            .starts_with("memcached 127.0.0.1:11211 up; last error"));
    }
}
