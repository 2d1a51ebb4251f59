//! The load engine: worker threads with their own io_uring runtimes run a scenario's
//! connections; the main thread samples progress, the processes under test and a time series,
//! then builds the [`Report`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::cli::Accounts;
use crate::client::{self, Client, ErrorKind, Failure, Res, Target, TlsMode};
use crate::procstat;
use crate::report::{Report, Sample};

/// What a run does, from the scenario's command line.
#[derive(Clone)]
pub struct RunArgs {
    pub target: SocketAddr,
    pub tls: TlsMode,
    pub ca: Option<std::path::PathBuf>,
    pub accounts: Accounts,
    pub concurrency: u64,
    pub sessions: u64,
    pub rate: f64,
    pub duration: Duration,
    pub count: Option<u64>,
    pub hold: Duration,
    pub small_fetch: bool,
    /// The http scenario's request target pattern and Host header.
    pub http: Option<(String, String)>,
    pub threads: usize,
    pub pid: Vec<u32>,
    pub json: bool,
    pub label: String,
}

/// A run bounded by `--count` still ends after this long, whatever happens.
const COUNT_LIMIT: Duration = Duration::from_secs(3600);

#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    Login,
    Idle,
    Command,
    Fetch,
    Pop3,
    Http,
}

/// Counters shared by the threads and the progress line.
#[derive(Default)]
struct Shared {
    /// Attempts started (the --count tickets).
    started: AtomicU64,
    ops: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
    established: AtomicU64,
}

struct ThreadStats {
    hist: Histogram<u64>,
    errors: BTreeMap<ErrorKind, u64>,
    first_errors: Vec<String>,
    /// The first message of each kind of error.
    first_by_kind: BTreeMap<ErrorKind, String>,
}

impl ThreadStats {
    fn new() -> Self {
        ThreadStats {
            hist: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds"),
            errors: BTreeMap::new(),
            first_errors: Vec::new(),
            first_by_kind: BTreeMap::new(),
        }
    }

    fn error(&mut self, f: Failure, shared: &Shared) {
        shared.errors.fetch_add(1, Ordering::Relaxed);
        *self.errors.entry(f.0).or_default() += 1;
        if self.first_errors.len() < 3 {
            self.first_errors.push(format!("{:?}: {}", f.0, f.1));
        }
        self.first_by_kind.entry(f.0).or_insert(f.1);
    }
}

/// Everything a worker thread needs.
struct Plan {
    scenario: Scenario,
    target: Target,
    args: RunArgs,
    /// End of the measured phase (idle: when sessions are released).
    deadline: Instant,
}

impl Plan {
    fn login(&self, n: u64) -> (String, String) {
        self.args.accounts.get(n)
    }

    /// Whether another attempt may start: before the deadline, and with `--count`, while
    /// tickets are left (each attempt takes one, so the run makes exactly that many).
    fn next_attempt(&self, shared: &Shared) -> bool {
        if Instant::now() >= self.deadline {
            return false;
        }
        match self.args.count {
            Some(c) => shared.started.fetch_add(1, Ordering::Relaxed) < c,
            None => true,
        }
    }
}

async fn logged_in(p: &Plan, n: u64) -> Res<Client> {
    let mut c = Client::connect(&p.target).await?;
    let (user, pass) = p.login(n);
    if p.target.pop3 {
        c.pop3_ok(&format!("USER {user}")).await?;
        c.pop3_ok(&format!("PASS {pass}")).await?;
    } else {
        c.imap_ok("L", &format!("LOGIN \"{user}\" \"{pass}\""))
            .await?;
    }
    Ok(c)
}

/// One connection slot of a loop scenario.
async fn looping(
    p: Rc<Plan>,
    slot: u64,
    shared: Arc<Shared>,
    stats: Rc<std::cell::RefCell<ThreadStats>>,
) {
    let mut n = slot;
    // sessions that stay logged in
    let mut session: Option<Client> = None;
    while p.next_attempt(&shared) {
        let t = Instant::now();
        let r: Res<u64> = async {
            match p.scenario {
                Scenario::Login => {
                    let mut c = logged_in(&p, n).await?;
                    c.imap_ok("Q", "LOGOUT").await?;
                    c.close().await;
                    Ok(0)
                }
                Scenario::Pop3 => {
                    let mut c = logged_in(&p, n).await?;
                    c.pop3_ok("RETR 1").await?;
                    let size = c.pop3_multiline().await?;
                    c.pop3_ok("QUIT").await?;
                    c.close().await;
                    Ok(size as u64)
                }
                Scenario::Http => {
                    if session.is_none() {
                        session = Some(Client::connect(&p.target).await?);
                    }
                    let c = session.as_mut().expect("connection just opened");
                    let (path, host) = p.args.http.clone().unwrap_or_default();
                    let (user, _) = p.login(n);
                    let path = path
                        .replace("{user}", &user)
                        .replace("{n}", &(n % 1_000_000).to_string());
                    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
                    Ok(c.http_get(req.as_bytes()).await? as u64)
                }
                Scenario::Command | Scenario::Fetch => {
                    if session.is_none() {
                        let mut c = logged_in(&p, n).await?;
                        c.imap_ok("S", "SELECT INBOX").await?;
                        session = Some(c);
                    }
                    let c = session.as_mut().expect("session just opened");
                    let before = c.received;
                    match (p.scenario, p.args.small_fetch) {
                        (Scenario::Fetch, _) => c.imap_ok("F", "FETCH 1 BODY.PEEK[]").await?,
                        (_, true) => c.imap_ok("F", "FETCH 1 (FLAGS)").await?,
                        _ => c.imap_ok("N", "NOOP").await?,
                    }
                    Ok(c.received - before)
                }
                Scenario::Idle => unreachable!("idle is not a loop scenario"),
            }
        }
        .await;
        match r {
            Ok(bytes) => {
                let us = t.elapsed().as_micros() as u64;
                let _ = stats.borrow_mut().hist.record(us.max(1));
                shared.ops.fetch_add(1, Ordering::Relaxed);
                shared.bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            Err(f) => {
                stats.borrow_mut().error(f, &shared);
                session = None;
                compio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        n += p.args.concurrency.max(1);
    }
    if let Some(mut c) = session {
        if p.scenario == Scenario::Http {
            c.close().await;
        } else {
            let _ = c.imap_ok("Q", "LOGOUT").await;
        }
    }
}

/// One idle session: LOGIN, SELECT, IDLE, hold until the deadline, DONE, LOGOUT.
async fn idle_session(
    p: Rc<Plan>,
    n: u64,
    shared: Arc<Shared>,
    stats: Rc<std::cell::RefCell<ThreadStats>>,
) {
    let t = Instant::now();
    let r: Res<Client> = async {
        let mut c = logged_in(&p, n).await?;
        c.imap_ok("S", "SELECT INBOX").await?;
        c.send(b"I IDLE\r\n").await?;
        let l = c.line().await?;
        if !l.starts_with(b"+") {
            return Err(Failure(
                ErrorKind::Protocol,
                String::from_utf8_lossy(&l).into(),
            ));
        }
        Ok(c)
    }
    .await;
    match r {
        Ok(mut c) => {
            let _ = stats
                .borrow_mut()
                .hist
                .record((t.elapsed().as_micros() as u64).max(1));
            shared.established.fetch_add(1, Ordering::Relaxed);
            shared.ops.fetch_add(1, Ordering::Relaxed);
            compio::time::sleep_until(p.deadline).await;
            let r: Res<()> = async {
                c.send(b"DONE\r\n").await?;
                c.tagged(b"I").await?;
                c.imap_ok("Q", "LOGOUT").await
            }
            .await;
            if let Err(f) = r {
                stats.borrow_mut().error(f, &shared);
            }
        }
        Err(f) => stats.borrow_mut().error(f, &shared),
    }
}

async fn thread_main(idx: usize, p: Rc<Plan>, shared: Arc<Shared>) -> ThreadStats {
    let threads = p.args.threads.max(1) as u64;
    let stats = Rc::new(std::cell::RefCell::new(ThreadStats::new()));
    let mut tasks = Vec::new();
    match p.scenario {
        Scenario::Idle | Scenario::Command => {
            // sessions idx, idx+threads, ... opened at this thread's share of --rate
            let interval = Duration::from_secs_f64(threads as f64 / p.args.rate.max(0.001));
            let mut next = Instant::now();
            for n in (idx as u64..p.args.sessions).step_by(threads as usize) {
                compio::time::sleep_until(next).await;
                next += interval;
                let (p, shared, stats) = (p.clone(), shared.clone(), stats.clone());
                tasks.push(if p.scenario == Scenario::Idle {
                    compio::runtime::spawn(idle_session(p, n, shared, stats))
                } else {
                    compio::runtime::spawn(looping(p, n, shared, stats))
                });
            }
        }
        _ => {
            for slot in (idx as u64..p.args.concurrency).step_by(threads as usize) {
                let (p, shared, stats) = (p.clone(), shared.clone(), stats.clone());
                tasks.push(compio::runtime::spawn(looping(p, slot, shared, stats)));
            }
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    Rc::try_unwrap(stats)
        .map(|s| s.into_inner())
        .unwrap_or_else(|_| ThreadStats::new())
}

/// Run a scenario to the end and report it.
pub fn run(scenario: Scenario, args: RunArgs) -> anyhow::Result<Report> {
    let planned = match scenario {
        Scenario::Idle | Scenario::Command => args.sessions,
        _ => args.concurrency,
    };
    crate::check_fds(planned)?;
    let tls_config = match args.tls {
        TlsMode::Off => None,
        _ => Some(client::tls_config(args.ca.as_deref())?),
    };
    let target = Target {
        addr: args.target,
        tls: args.tls,
        tls_config,
        pop3: scenario == Scenario::Pop3,
        http: scenario == Scenario::Http,
    };
    let open_time = Duration::from_secs_f64(args.sessions as f64 / args.rate.max(0.001));
    let start = Instant::now();
    let length = if args.count.is_some() {
        COUNT_LIMIT
    } else {
        args.duration
    };
    let deadline = match scenario {
        Scenario::Idle => start + open_time + Duration::from_secs(5) + args.hold,
        Scenario::Command => start + open_time + length,
        _ => start + length,
    };
    let shared = Arc::new(Shared::default());
    let before = procstat::sample_all(&args.pid);
    let mut handles = Vec::new();
    for idx in 0..args.threads.max(1) {
        let (shared, args, target) = (shared.clone(), args.clone(), target.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("loadtest-{idx}"))
                .spawn(move || {
                    let rt = crate::runtime().expect("io_uring runtime for the load generator");
                    let plan = Rc::new(Plan {
                        scenario,
                        target,
                        args,
                        deadline,
                    });
                    let s = rt.block_on(thread_main(idx, plan, shared));
                    (s.hist, s.errors, s.first_errors, s.first_by_kind)
                })?,
        );
    }
    // progress, a sample per second (throughput, CPU, memory), and for idle the memory
    // sample once every session is open
    let mut loaded = None;
    let mut last = Instant::now();
    let mut series = vec![Sample {
        t: 0.0,
        ops: 0,
        errors: 0,
        cpu_s: (!args.pid.is_empty()).then_some(0.0),
        rss: (!args.pid.is_empty()).then_some(before.rss),
    }];
    let progress = crate::report::Progress::new(!args.json);
    while handles.iter().any(|h| !h.is_finished()) {
        std::thread::sleep(Duration::from_millis(200));
        if scenario == Scenario::Idle && loaded.is_none() {
            let all_open = shared.established.load(Ordering::Relaxed)
                + shared.errors.load(Ordering::Relaxed)
                >= args.sessions;
            if all_open || Instant::now() + args.hold >= deadline {
                std::thread::sleep(Duration::from_secs(2));
                loaded = Some(procstat::sample_all(&args.pid));
            }
        }
        if last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            let (ops, errors) = (
                shared.ops.load(Ordering::Relaxed),
                shared.errors.load(Ordering::Relaxed),
            );
            let now = (!args.pid.is_empty()).then(|| procstat::sample_all(&args.pid));
            series.push(Sample {
                t: start.elapsed().as_secs_f64(),
                ops,
                errors,
                cpu_s: now
                    .as_ref()
                    .map(|s| s.cpu.saturating_sub(before.cpu).as_secs_f64()),
                rss: now.map(|s| s.rss),
            });
            progress.update(
                start.elapsed(),
                ops,
                shared.established.load(Ordering::Relaxed),
                errors,
            );
        }
    }
    progress.finish();
    let measured = start.elapsed();
    let after = procstat::sample_all(&args.pid);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut errors = BTreeMap::new();
    let mut first_errors = Vec::new();
    let mut first_error_by_kind = BTreeMap::new();
    for h in handles {
        let (hh, e, f, by_kind) = h
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))?;
        hist.add(hh)?;
        for (k, v) in e {
            *errors.entry(format!("{k:?}")).or_default() += v;
        }
        first_errors.extend(f);
        for (k, v) in by_kind {
            first_error_by_kind.entry(format!("{k:?}")).or_insert(v);
        }
    }
    let ops = shared.ops.load(Ordering::Relaxed);
    let bytes = shared.bytes.load(Ordering::Relaxed);
    let secs = measured.as_secs_f64();
    let sampled = !args.pid.is_empty();
    let cpu = (after.cpu.saturating_sub(before.cpu)).as_secs_f64();
    let latency_us: BTreeMap<String, u64> = [
        ("p50", hist.value_at_quantile(0.5)),
        ("p90", hist.value_at_quantile(0.9)),
        ("p99", hist.value_at_quantile(0.99)),
        ("p99.9", hist.value_at_quantile(0.999)),
        ("max", hist.max()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let established = shared.established.load(Ordering::Relaxed);
    let failed: u64 = errors.values().sum();
    // the percentile spectrum, as HdrHistogram prints it (ticks halving the distance to 100 %)
    let percentiles: Vec<(f64, u64)> = if hist.is_empty() {
        Vec::new()
    } else {
        hist.iter_quantiles(2)
            .map(|v| (v.percentile(), v.value_iterated_to()))
            .collect()
    };
    let report = Report {
        scenario,
        label: args.label.clone(),
        target: args.target.to_string(),
        tls: args.tls,
        seconds: secs,
        ops,
        ops_per_s: ops as f64 / secs,
        latency_us,
        attempts: ops + failed,
        error_rate: if ops + failed > 0 {
            failed as f64 / (ops + failed) as f64
        } else {
            0.0
        },
        errors,
        first_errors,
        first_error_by_kind,
        bytes,
        mb_per_s: bytes as f64 / secs / 1e6,
        sessions: established,
        cpu_s: sampled.then_some(cpu),
        cpu_us_per_op: (sampled && ops > 0).then(|| cpu * 1e6 / ops as f64),
        cpu_s_per_gb: (sampled && bytes > 0).then(|| cpu / (bytes as f64 / 1e9)),
        rss_before: sampled.then_some(before.rss),
        rss_loaded: loaded.map(|l| l.rss),
        bytes_per_session: loaded
            .filter(|_| sampled && established > 0)
            .map(|l| (l.rss as f64 - before.rss as f64) / established as f64),
        percentiles,
        series,
    };
    Ok(report)
}
