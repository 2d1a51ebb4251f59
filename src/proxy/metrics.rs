//! Prometheus metrics. Each worker owns one [`Metrics`] and is the only writer of it (relaxed
//! atomic adds on memory no other worker touches: no lock, no shared cache line on the relay
//! path); the admin thread reads every worker's set and sums them when `/metrics` is scraped.
//! The text exposition format is written here: it is a few lines of text, and a metrics
//! library's registry would put shared state (a lock or a shared atomic per series) in every
//! worker (docs/decisions.md).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::config::Proto;

/// Histogram bucket bounds, in seconds (lookups and backend connects: ms to seconds).
pub const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| s <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }
}

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    PreLogin,
    Relaying,
}

/// How a login ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginResult {
    Ok,
    /// The backend refused the credentials.
    Rejected,
    /// The lookup refused the login.
    Denied,
    /// The user throttle refused it.
    Throttled,
    /// Infrastructure failure at a step.
    Failed(Step),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Lookup,
    BackendConnect,
    BackendLogin,
    BackendTimeout,
}

const STEPS: [(Step, &str); 4] = [
    (Step::Lookup, "lookup"),
    (Step::BackendConnect, "backend_connect"),
    (Step::BackendLogin, "backend_login"),
    (Step::BackendTimeout, "backend_timeout"),
];
const RESULTS: [&str; 5] = ["ok", "rejected", "denied", "throttled", "failed"];

/// Why a connection was turned away before its greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `throttle.ip_*`.
    IpThrottle,
    /// `throttle.prelogin_per_ip`, `throttle.new_per_ip_per_second`.
    PerIpLimit,
    /// `workers.max_connections`.
    WorkerFull,
    /// PROXY protocol: untrusted peer, bad or missing header.
    ProxyProtocol,
}

const REFUSALS: [(Refused, &str); 4] = [
    (Refused::IpThrottle, "ip_throttle"),
    (Refused::PerIpLimit, "per_ip_limit"),
    (Refused::WorkerFull, "worker_full"),
    (Refused::ProxyProtocol, "proxy_protocol"),
];

fn p(proto: Proto) -> usize {
    proto.index()
}

const PROTOS: [&str; 2] = ["imap", "pop3"];

/// One worker's counters.
pub struct Metrics {
    /// [protocol][phase][tls]
    sessions: [[[AtomicI64; 2]; 2]; 2],
    connections: AtomicI64,
    logins: [[AtomicU64; RESULTS.len()]; 2],
    failures: [[AtomicU64; STEPS.len()]; 2],
    refused: [AtomicU64; REFUSALS.len()],
    pub lookup: Histogram,
    /// Per configured handler.
    lookup_errors: Vec<AtomicU64>,
    /// [process, memcached][hit, miss]
    cache: [[AtomicU64; 2]; 2],
    /// client→backend, backend→client
    bytes: [AtomicU64; 2],
    /// ok, failed
    tls: [AtomicU64; 2],
    pub backend_connect: Histogram,
    backend_connect_errors: AtomicU64,
    /// HTTP responses: [from the mailbox server, made by ringmail][1xx–2xx, 3xx, 4xx, 5xx]
    http_responses: [[AtomicU64; 4]; 2],
    /// HTTP requests sent to [their user's route, the group's ip-hash]
    http_routed: [AtomicU64; 2],
    /// Client connections accepted (refused ones included), and those served.
    accepted: [AtomicU64; 2],
    /// HTTP requests read (their heads).
    http_requests: AtomicU64,
    /// HTTP requests [reading their head, past it until answered]
    http_states: [AtomicI64; 2],
}

/// Where an HTTP request is, for `/nginx_status`'s Reading and Writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpState {
    /// Its head is coming in.
    Reading,
    /// Read, not yet answered.
    Writing,
}

/// A request counted in an [`HttpState`] while this lives.
pub struct InState<'a>(&'a Metrics, usize);

impl Drop for InState<'_> {
    fn drop(&mut self) {
        self.0.http_states[self.1].fetch_sub(1, Relaxed);
    }
}

impl Metrics {
    pub fn new(handlers: usize) -> Metrics {
        Metrics {
            sessions: Default::default(),
            connections: AtomicI64::new(0),
            logins: Default::default(),
            failures: Default::default(),
            refused: Default::default(),
            lookup: Histogram::default(),
            lookup_errors: (0..handlers).map(|_| AtomicU64::new(0)).collect(),
            cache: Default::default(),
            bytes: Default::default(),
            tls: Default::default(),
            backend_connect: Histogram::default(),
            backend_connect_errors: AtomicU64::new(0),
            http_responses: Default::default(),
            http_routed: Default::default(),
            accepted: Default::default(),
            http_requests: AtomicU64::new(0),
            http_states: Default::default(),
        }
    }

    /// A client connection accepted; `served` unless it is turned away for the worker's
    /// connection limit.
    pub fn accepted(&self, served: bool) {
        self.accepted[0].fetch_add(1, Relaxed);
        if served {
            self.accepted[1].fetch_add(1, Relaxed);
        }
    }

    /// An HTTP request's head was read.
    pub fn http_request(&self) {
        self.http_requests.fetch_add(1, Relaxed);
    }

    /// Count a request in `state` until the guard is dropped.
    pub fn http_state(&self, state: HttpState) -> InState<'_> {
        let i = usize::from(state == HttpState::Writing);
        self.http_states[i].fetch_add(1, Relaxed);
        InState(self, i)
    }

    pub fn session(&self, proto: Proto, phase: Phase, tls: bool, delta: i64) {
        let ph = usize::from(phase == Phase::Relaying);
        self.sessions[p(proto)][ph][usize::from(tls)].fetch_add(delta, Relaxed);
    }

    /// Client connections accepted so far (refused ones included).
    pub fn accepted_total(&self) -> u64 {
        self.accepted[0].load(Relaxed)
    }

    /// Mail sessions not yet relaying (greeting, pre-login, login).
    pub fn sessions_in_login(&self) -> u64 {
        let n: i64 = self
            .sessions
            .iter()
            .map(|phases| phases[0].iter().map(|n| n.load(Relaxed)).sum::<i64>())
            .sum();
        u64::try_from(n).unwrap_or(0)
    }

    pub fn connection(&self, delta: i64) {
        self.connections.fetch_add(delta, Relaxed);
    }

    pub fn login(&self, proto: Proto, result: LoginResult) {
        let r = match result {
            LoginResult::Ok => 0,
            LoginResult::Rejected => 1,
            LoginResult::Denied => 2,
            LoginResult::Throttled => 3,
            LoginResult::Failed(step) => {
                if let Some(i) = STEPS.iter().position(|(s, _)| *s == step) {
                    self.failures[p(proto)][i].fetch_add(1, Relaxed);
                }
                4
            }
        };
        self.logins[p(proto)][r].fetch_add(1, Relaxed);
    }

    pub fn refused(&self, why: Refused) {
        if let Some(i) = REFUSALS.iter().position(|(r, _)| *r == why) {
            self.refused[i].fetch_add(1, Relaxed);
        }
    }

    pub fn lookup_error(&self, handler: usize) {
        if let Some(c) = self.lookup_errors.get(handler) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// `memcached`: the fleet tier, else the process cache.
    pub fn cache(&self, memcached: bool, hit: bool) {
        self.cache[usize::from(memcached)][usize::from(!hit)].fetch_add(1, Relaxed);
    }

    pub fn relayed(&self, to_backend: bool, n: u64) {
        self.bytes[usize::from(!to_backend)].fetch_add(n, Relaxed);
    }

    pub fn tls_handshake(&self, ok: bool) {
        self.tls[usize::from(!ok)].fetch_add(1, Relaxed);
    }

    /// An HTTP response sent to a client: `proxy` when ringmail made it (an error, a redirect).
    pub fn http_response(&self, status: u16, proxy: bool) {
        let class = match status {
            0..=299 => 0,
            300..=399 => 1,
            400..=499 => 2,
            _ => 3,
        };
        self.http_responses[usize::from(proxy)][class].fetch_add(1, Relaxed);
    }

    /// An HTTP request sent on: by its user's route, or by the ip-hash fallback.
    pub fn http_routed(&self, by_route: bool) {
        self.http_routed[usize::from(!by_route)].fetch_add(1, Relaxed);
    }

    pub fn backend_connect_error(&self) {
        self.backend_connect_errors.fetch_add(1, Relaxed);
    }
}

fn sum_u(all: &[std::sync::Arc<Metrics>], f: impl Fn(&Metrics) -> &AtomicU64) -> u64 {
    all.iter().map(|m| f(m).load(Relaxed)).sum()
}

fn sum_i(all: &[std::sync::Arc<Metrics>], f: impl Fn(&Metrics) -> &AtomicI64) -> i64 {
    all.iter().map(|m| f(m).load(Relaxed)).sum()
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    all: &[std::sync::Arc<Metrics>],
    h: impl Fn(&Metrics) -> &Histogram,
) {
    header(out, name, "histogram", help);
    let mut cumulative = 0;
    for (i, bound) in BUCKETS.iter().enumerate() {
        cumulative += all
            .iter()
            .map(|m| h(m).buckets[i].load(Relaxed))
            .sum::<u64>();
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let count: u64 = all.iter().map(|m| h(m).count.load(Relaxed)).sum();
    let sum_us: u64 = all.iter().map(|m| h(m).sum_us.load(Relaxed)).sum();
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {}", sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {count}");
}

/// Escape a label value (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The text exposition of every worker's counters, summed (connections also per worker).
/// `handlers` names the lookup handlers in config order.
pub fn render(all: &[std::sync::Arc<Metrics>], handlers: &[String], ready: bool) -> String {
    let mut out = String::with_capacity(8192);
    header(
        &mut out,
        "ringmail_up",
        "gauge",
        "1 once every listener is bound.",
    );
    let _ = writeln!(out, "ringmail_up {}", u8::from(ready));

    header(
        &mut out,
        "ringmail_sessions",
        "gauge",
        "Open client sessions by protocol, phase (prelogin, relaying) and TLS.",
    );
    for (pi, proto) in PROTOS.iter().enumerate() {
        for (phi, phase) in ["prelogin", "relaying"].iter().enumerate() {
            for (ti, tls) in ["false", "true"].iter().enumerate() {
                let v = sum_i(all, |m| &m.sessions[pi][phi][ti]);
                let _ = writeln!(
                    out,
                    "ringmail_sessions{{protocol=\"{proto}\",phase=\"{phase}\",tls=\"{tls}\"}} {v}"
                );
            }
        }
    }

    header(
        &mut out,
        "ringmail_worker_connections",
        "gauge",
        "Open client connections per worker.",
    );
    for (i, m) in all.iter().enumerate() {
        let _ = writeln!(
            out,
            "ringmail_worker_connections{{worker=\"{i}\"}} {}",
            m.connections.load(Relaxed)
        );
    }

    header(&mut out, "ringmail_logins_total", "counter", "Logins by protocol and result: ok, rejected (by the backend), denied (by the lookup), throttled, failed.");
    for (pi, proto) in PROTOS.iter().enumerate() {
        for (ri, result) in RESULTS.iter().enumerate() {
            let v = sum_u(all, |m| &m.logins[pi][ri]);
            let _ = writeln!(
                out,
                "ringmail_logins_total{{protocol=\"{proto}\",result=\"{result}\"}} {v}"
            );
        }
    }
    header(
        &mut out,
        "ringmail_login_failures_total",
        "counter",
        "Failed logins by protocol and the step that failed.",
    );
    for (pi, proto) in PROTOS.iter().enumerate() {
        for (si, (_, step)) in STEPS.iter().enumerate() {
            let v = sum_u(all, |m| &m.failures[pi][si]);
            let _ = writeln!(
                out,
                "ringmail_login_failures_total{{protocol=\"{proto}\",step=\"{step}\"}} {v}"
            );
        }
    }
    header(
        &mut out,
        "ringmail_connections_refused_total",
        "counter",
        "Connections turned away before the greeting, by reason.",
    );
    for (i, (_, reason)) in REFUSALS.iter().enumerate() {
        let v = sum_u(all, |m| &m.refused[i]);
        let _ = writeln!(
            out,
            "ringmail_connections_refused_total{{reason=\"{reason}\"}} {v}"
        );
    }

    histogram(
        &mut out,
        "ringmail_lookup_duration_seconds",
        "Route lookups at the handlers (fail-over included).",
        all,
        |m| &m.lookup,
    );
    header(
        &mut out,
        "ringmail_lookup_errors_total",
        "counter",
        "Lookup failures by handler (connect, timeout, bad answer).",
    );
    for (i, h) in handlers.iter().enumerate() {
        let v: u64 = all
            .iter()
            .map(|m| m.lookup_errors.get(i).map_or(0, |c| c.load(Relaxed)))
            .sum();
        let _ = writeln!(
            out,
            "ringmail_lookup_errors_total{{handler=\"{}\"}} {v}",
            label(h)
        );
    }

    header(
        &mut out,
        "ringmail_route_cache_requests_total",
        "counter",
        "Route cache reads by tier (process, memcached) and result (hit, miss).",
    );
    for (ti, tier) in ["process", "memcached"].iter().enumerate() {
        for (ri, result) in ["hit", "miss"].iter().enumerate() {
            let v = sum_u(all, |m| &m.cache[ti][ri]);
            let _ = writeln!(
                out,
                "ringmail_route_cache_requests_total{{tier=\"{tier}\",result=\"{result}\"}} {v}"
            );
        }
    }

    header(
        &mut out,
        "ringmail_relayed_bytes_total",
        "counter",
        "Bytes relayed after login, by direction.",
    );
    for (i, dir) in ["client_to_backend", "backend_to_client"]
        .iter()
        .enumerate()
    {
        let v = sum_u(all, |m| &m.bytes[i]);
        let _ = writeln!(
            out,
            "ringmail_relayed_bytes_total{{direction=\"{dir}\"}} {v}"
        );
    }

    header(
        &mut out,
        "ringmail_tls_handshakes_total",
        "counter",
        "Client TLS handshakes by result.",
    );
    for (i, result) in ["ok", "failed"].iter().enumerate() {
        let v = sum_u(all, |m| &m.tls[i]);
        let _ = writeln!(
            out,
            "ringmail_tls_handshakes_total{{result=\"{result}\"}} {v}"
        );
    }

    histogram(
        &mut out,
        "ringmail_backend_connect_duration_seconds",
        "TCP (and TLS) connects to backends that succeeded.",
        all,
        |m| &m.backend_connect,
    );
    header(
        &mut out,
        "ringmail_backend_connect_errors_total",
        "counter",
        "Backend connects that failed or timed out.",
    );
    let _ = writeln!(
        out,
        "ringmail_backend_connect_errors_total {}",
        sum_u(all, |m| &m.backend_connect_errors)
    );
    header(
        &mut out,
        "ringmail_http_responses_total",
        "counter",
        "HTTP responses by source (backend: the mailbox server's; proxy: ringmail's own, errors and redirects) and status class.",
    );
    for (si, source) in ["backend", "proxy"].iter().enumerate() {
        for (ci, class) in ["2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
            let v = sum_u(all, |m| &m.http_responses[si][ci]);
            let _ = writeln!(
                out,
                "ringmail_http_responses_total{{source=\"{source}\",class=\"{class}\"}} {v}"
            );
        }
    }
    header(
        &mut out,
        "ringmail_http_routed_total",
        "counter",
        "HTTP requests sent on, by how their mailbox server was chosen: route (the user's) or ip_hash (Zimbra's fallback).",
    );
    for (i, by) in ["route", "ip_hash"].iter().enumerate() {
        let v = sum_u(all, |m| &m.http_routed[i]);
        let _ = writeln!(out, "ringmail_http_routed_total{{by=\"{by}\"}} {v}");
    }
    header(
        &mut out,
        "ringmail_connections_accepted_total",
        "counter",
        "Client connections accepted (every protocol), and those served (not turned away for workers.max_connections).",
    );
    for (i, what) in ["accepted", "served"].iter().enumerate() {
        let v = sum_u(all, |m| &m.accepted[i]);
        let _ = writeln!(
            out,
            "ringmail_connections_accepted_total{{result=\"{what}\"}} {v}"
        );
    }
    header(
        &mut out,
        "ringmail_http_requests_total",
        "counter",
        "HTTP requests whose head was read.",
    );
    let _ = writeln!(
        out,
        "ringmail_http_requests_total {}",
        sum_u(all, |m| &m.http_requests)
    );
    out
}

/// nginx's stub status page (`/nginx_status`, `spec/http-proxy.md` §3), every worker summed:
/// open client connections of every protocol, connections accepted and served, HTTP requests,
/// and how many requests are reading their head and being answered. Waiting is the rest of the
/// open connections (idle keep-alive HTTP connections and mail sessions), as nginx counts it.
pub fn stub_status(all: &[std::sync::Arc<Metrics>]) -> String {
    let active = sum_i(all, |m| &m.connections).max(0);
    let reading = sum_i(all, |m| &m.http_states[0]).max(0);
    let writing = sum_i(all, |m| &m.http_states[1]).max(0);
    let waiting = (active - reading - writing).max(0);
    format!(
        "Active connections: {active} \nserver accepts handled requests\n {} {} {} \nReading: {reading} Writing: {writing} Waiting: {waiting} \n",
        sum_u(all, |m| &m.accepted[0]),
        sum_u(all, |m| &m.accepted[1]),
        sum_u(all, |m| &m.http_requests),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn workers_are_summed() {
        let a = Arc::new(Metrics::new(2));
        let b = Arc::new(Metrics::new(2));
        a.login(Proto::Imap, LoginResult::Ok);
        b.login(Proto::Imap, LoginResult::Ok);
        b.login(Proto::Pop3, LoginResult::Failed(Step::BackendConnect));
        a.session(Proto::Imap, Phase::Relaying, true, 1);
        b.lookup.observe(Duration::from_millis(3));
        a.lookup.observe(Duration::from_secs(9));
        b.lookup_error(1);
        a.relayed(true, 10);
        b.relayed(false, 5);
        let text = render(&[a, b], &["http://h1/".into(), "http://h\"2/".into()], true);
        for line in [
            "ringmail_logins_total{protocol=\"imap\",result=\"ok\"} 2",
            "ringmail_logins_total{protocol=\"pop3\",result=\"failed\"} 1",
            "ringmail_login_failures_total{protocol=\"pop3\",step=\"backend_connect\"} 1",
            "ringmail_sessions{protocol=\"imap\",phase=\"relaying\",tls=\"true\"} 1",
            "ringmail_lookup_duration_seconds_bucket{le=\"0.005\"} 1",
            "ringmail_lookup_duration_seconds_bucket{le=\"+Inf\"} 2",
            "ringmail_lookup_duration_seconds_count 2",
            "ringmail_lookup_errors_total{handler=\"http://h\\\"2/\"} 1",
            "ringmail_relayed_bytes_total{direction=\"client_to_backend\"} 10",
            "ringmail_worker_connections{worker=\"1\"} 0",
            "ringmail_up 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn stub_status_is_nginx_s_format() {
        let a = Arc::new(Metrics::new(0));
        let b = Arc::new(Metrics::new(0));
        for m in [&a, &b] {
            m.accepted(true);
            m.connection(1);
            m.http_request();
        }
        b.accepted(false);
        a.connection(1);
        let reading = a.http_state(HttpState::Reading);
        let writing = b.http_state(HttpState::Writing);
        let all = [a.clone(), b.clone()];
        assert_eq!(
            stub_status(&all),
            "Active connections: 3 \nserver accepts handled requests\n 3 2 2 \nReading: 1 Writing: 1 Waiting: 1 \n"
        );
        drop((reading, writing));
        assert!(stub_status(&all).ends_with("Reading: 0 Writing: 0 Waiting: 3 \n"));
        let text = render(&all, &[], true);
        for line in [
            "ringmail_connections_accepted_total{result=\"accepted\"} 3",
            "ringmail_connections_accepted_total{result=\"served\"} 2",
            "ringmail_http_requests_total 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
