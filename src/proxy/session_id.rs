//! A session's id (on every log line of the session and sent to the backend).

/// A session's id, as Dovecot makes them: 12 base64 characters (9 bytes: the process start
/// time, the worker, a per-worker count), unique across the workers and restarts of a host.
/// On every log line of the session, and sent to the backend as IMAP ID `x-session-id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionId {
    started: u32,
    worker: u8,
    n: u32,
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text().as_str())
    }
}

/// A session id's text, without an allocation.
pub struct SessionText([u8; 12]);

impl SessionText {
    pub fn as_str(&self) -> &str {
        // base64's alphabet is ASCII
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl SessionId {
    /// The `n`th session of worker `worker` in a process started at `started` (Unix seconds).
    pub fn new(started: u32, worker: u8, n: u32) -> Self {
        SessionId { started, worker, n }
    }

    /// The id as text: 9 bytes are exactly 12 base64 characters, without padding.
    pub fn text(&self) -> SessionText {
        use base64::Engine;
        let mut raw = [0u8; 9];
        raw[..4].copy_from_slice(&self.started.to_be_bytes());
        raw[4] = self.worker;
        raw[5..].copy_from_slice(&self.n.to_be_bytes());
        let mut text = [0u8; 12];
        let _ = base64::engine::general_purpose::STANDARD.encode_slice(raw, &mut text);
        SessionText(text)
    }
}
