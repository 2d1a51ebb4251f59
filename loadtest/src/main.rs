//! `loadtest`: load scenarios against any IMAP/POP3 proxy or server (ringmail, nginx, Dovecot),
//! with hdrhistogram latencies and, for the processes named with `--pid`, CPU time and RSS from
//! /proc; plus `loadtest backend` and `loadtest lookup`, the light servers benchmarks run
//! against so that they measure the proxy. See docs/benchmarks.md.

mod client;
mod procstat;
mod servers;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use client::{Client, ErrorKind, Failure, Res, Target, TlsMode};
use hdrhistogram::Histogram;

#[derive(Parser)]
#[command(about = "Load scenarios for IMAP/POP3 proxies, and the servers to run them against")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Connect, LOGIN, LOGOUT, in a loop on each of --concurrency connections.
    Login(RunArgs),
    /// Open --sessions sessions at --rate, each LOGIN + SELECT + IDLE, hold them --hold.
    Idle(RunArgs),
    /// --sessions logged-in sessions each doing NOOP (or --small-fetch) request/response.
    Command(RunArgs),
    /// Repeated FETCH of the (large) message on --concurrency sessions.
    Fetch(RunArgs),
    /// POP3: USER/PASS, RETR 1, QUIT, in a loop on each of --concurrency connections.
    Pop3(RunArgs),
    /// A light IMAP/POP3 server: any user whose password matches --password.
    Backend(BackendArgs),
    /// A route lookup handler pointing every login at the backend.
    Lookup(LookupArgs),
}

#[derive(Args, Clone)]
struct RunArgs {
    /// Server or proxy to load.
    #[arg(long, default_value = "127.0.0.1:1143")]
    target: SocketAddr,
    #[arg(long, value_enum, default_value = "off")]
    tls: TlsMode,
    /// CA file to verify the server's certificate (without it, no verification).
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// Login pattern; `{n}` is replaced by a number below --users.
    #[arg(long, default_value = "user{n}@example.com")]
    user: String,
    #[arg(long, default_value_t = 1000)]
    users: u64,
    /// Password pattern; `{user}` is replaced by the login.
    #[arg(long, default_value = "secret")]
    password: String,
    /// Connections working in parallel (login, fetch, pop3).
    #[arg(long, default_value_t = 20)]
    concurrency: u64,
    /// Sessions (idle, command).
    #[arg(long, default_value_t = 100)]
    sessions: u64,
    /// Sessions opened per second (idle, command).
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// How long the measured phase lasts.
    #[arg(long, default_value = "10s", value_parser = ringmail::config::parse_duration)]
    duration: Duration,
    /// Stop after this many operations instead.
    #[arg(long)]
    count: Option<u64>,
    /// How long idle sessions are held once all are open.
    #[arg(long, default_value = "10s", value_parser = ringmail::config::parse_duration)]
    hold: Duration,
    /// command scenario: FETCH 1 (FLAGS) instead of NOOP.
    #[arg(long)]
    small_fetch: bool,
    /// Load-generator threads (each its own io_uring runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Processes under test to sample CPU and RSS of (repeatable).
    #[arg(long)]
    pid: Vec<u32>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// A name for this run in the report.
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Args)]
struct BackendArgs {
    #[arg(long, default_value = "127.0.0.1:10143")]
    imap: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:10110")]
    pop3: SocketAddr,
    #[arg(long, default_value = "secret")]
    password: String,
    #[arg(long, default_value = "1m", value_parser = ringmail::config::parse_size)]
    message_size: usize,
}

#[derive(Args)]
struct LookupArgs {
    #[arg(long, default_value = "127.0.0.1:7072")]
    listen: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:10143")]
    imap_backend: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:10110")]
    pop3_backend: SocketAddr,
}

fn runtime() -> std::io::Result<compio::runtime::Runtime> {
    let mut p = compio::driver::ProactorBuilder::new();
    p.capacity(4096)
        .buffer_pool_size(std::num::NonZero::new(1024).unwrap_or(std::num::NonZero::<u16>::MIN))
        .buffer_pool_buffer_len(65536);
    compio::runtime::RuntimeBuilder::new()
        .with_proactor(p)
        .build()
}

/// Raise the open-files soft limit to the hard one; refuse a plan that still cannot fit.
fn check_fds(needed: u64) -> anyhow::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    let limit = lim.rlim_cur as u64;
    if needed + 64 > limit {
        anyhow::bail!(
            "this plan needs about {} open files but the limit is {limit} (ulimit -n); \
             lower --sessions/--concurrency (the proxy under test needs about twice as many)",
            needed + 64
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Backend(a) => {
            check_fds(19000).ok();
            let rt = runtime()?;
            rt.block_on(async move {
                let imap = servers::listener(a.imap)?;
                let pop3 = servers::listener(a.pop3)?;
                eprintln!(
                    "loadtest backend: IMAP {} POP3 {} (message {} bytes)",
                    a.imap, a.pop3, a.message_size
                );
                let b = Rc::new(servers::Backend {
                    password: a.password,
                    message: servers::make_message(a.message_size),
                });
                servers::serve_backend(Some(imap), Some(pop3), b).await;
                anyhow::Ok(())
            })
        }
        Cmd::Lookup(a) => {
            let rt = runtime()?;
            rt.block_on(async move {
                let l = servers::listener(a.listen)?;
                eprintln!(
                    "loadtest lookup: {} -> IMAP {} POP3 {}",
                    a.listen, a.imap_backend, a.pop3_backend
                );
                servers::serve_lookup(
                    l,
                    Rc::new(servers::Routes {
                        imap: a.imap_backend,
                        pop3: a.pop3_backend,
                    }),
                )
                .await;
                anyhow::Ok(())
            })
        }
        Cmd::Login(a) => run(Scenario::Login, a),
        Cmd::Idle(a) => run(Scenario::Idle, a),
        Cmd::Command(a) => run(Scenario::Command, a),
        Cmd::Fetch(a) => run(Scenario::Fetch, a),
        Cmd::Pop3(a) => run(Scenario::Pop3, a),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Scenario {
    Login,
    Idle,
    Command,
    Fetch,
    Pop3,
}

/// Counters shared by the threads and the progress line.
#[derive(Default)]
struct Shared {
    ops: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
    established: AtomicU64,
}

struct ThreadStats {
    hist: Histogram<u64>,
    errors: BTreeMap<ErrorKind, u64>,
    first_errors: Vec<String>,
}

impl ThreadStats {
    fn new() -> Self {
        ThreadStats {
            hist: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds"),
            errors: BTreeMap::new(),
            first_errors: Vec::new(),
        }
    }

    fn error(&mut self, f: Failure, shared: &Shared) {
        shared.errors.fetch_add(1, Ordering::Relaxed);
        *self.errors.entry(f.0).or_default() += 1;
        if self.first_errors.len() < 3 {
            self.first_errors.push(format!("{:?}: {}", f.0, f.1));
        }
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
        let user = self
            .args
            .user
            .replace("{n}", &(n % self.args.users.max(1)).to_string());
        let pass = self.args.password.replace("{user}", &user);
        (user, pass)
    }

    fn done(&self, shared: &Shared) -> bool {
        Instant::now() >= self.deadline
            || self
                .args
                .count
                .is_some_and(|c| shared.ops.load(Ordering::Relaxed) >= c)
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
    while !p.done(&shared) {
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
        let _ = c.imap_ok("Q", "LOGOUT").await;
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

#[derive(serde::Serialize)]
struct Report {
    scenario: Scenario,
    label: String,
    target: String,
    tls: TlsMode,
    seconds: f64,
    ops: u64,
    ops_per_s: f64,
    latency_us: BTreeMap<&'static str, u64>,
    errors: BTreeMap<String, u64>,
    first_errors: Vec<String>,
    bytes: u64,
    mb_per_s: f64,
    sessions: u64,
    cpu_s: Option<f64>,
    cpu_us_per_op: Option<f64>,
    cpu_s_per_gb: Option<f64>,
    rss_before: Option<u64>,
    rss_loaded: Option<u64>,
    bytes_per_session: Option<f64>,
}

fn run(scenario: Scenario, args: RunArgs) -> anyhow::Result<()> {
    let planned = match scenario {
        Scenario::Idle | Scenario::Command => args.sessions,
        _ => args.concurrency,
    };
    check_fds(planned)?;
    let tls_config = match args.tls {
        TlsMode::Off => None,
        _ => Some(client::tls_config(args.ca.as_deref())?),
    };
    let target = Target {
        addr: args.target,
        tls: args.tls,
        tls_config,
        pop3: scenario == Scenario::Pop3,
    };
    let open_time = Duration::from_secs_f64(args.sessions as f64 / args.rate.max(0.001));
    let start = Instant::now();
    let deadline = match scenario {
        Scenario::Idle => start + open_time + Duration::from_secs(5) + args.hold,
        Scenario::Command => start + open_time + args.duration,
        _ => start + args.duration,
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
                    let rt = runtime().expect("io_uring runtime for the load generator");
                    let plan = Rc::new(Plan {
                        scenario,
                        target,
                        args,
                        deadline,
                    });
                    let s = rt.block_on(thread_main(idx, plan, shared));
                    (s.hist, s.errors, s.first_errors)
                })?,
        );
    }
    // progress, and for idle the memory sample once every session is open
    let mut loaded = None;
    let mut last = Instant::now();
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
        if last.elapsed() >= Duration::from_secs(1) && !args.json {
            last = Instant::now();
            eprint!(
                "\r{:>6.1}s  ops {:>9}  open {:>6}  errors {:>6}  ",
                start.elapsed().as_secs_f64(),
                shared.ops.load(Ordering::Relaxed),
                shared.established.load(Ordering::Relaxed),
                shared.errors.load(Ordering::Relaxed)
            );
        }
    }
    if !args.json {
        eprintln!();
    }
    let measured = start.elapsed();
    let after = procstat::sample_all(&args.pid);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut errors = BTreeMap::new();
    let mut first_errors = Vec::new();
    for h in handles {
        let (hh, e, f) = h
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))?;
        hist.add(hh)?;
        for (k, v) in e {
            *errors.entry(format!("{k:?}")).or_default() += v;
        }
        first_errors.extend(f);
    }
    let ops = shared.ops.load(Ordering::Relaxed);
    let bytes = shared.bytes.load(Ordering::Relaxed);
    let secs = measured.as_secs_f64();
    let sampled = !args.pid.is_empty();
    let cpu = (after.cpu.saturating_sub(before.cpu)).as_secs_f64();
    let latency_us: BTreeMap<&'static str, u64> = [
        ("p50", hist.value_at_quantile(0.5)),
        ("p90", hist.value_at_quantile(0.9)),
        ("p99", hist.value_at_quantile(0.99)),
        ("p99.9", hist.value_at_quantile(0.999)),
        ("max", hist.max()),
    ]
    .into_iter()
    .collect();
    let established = shared.established.load(Ordering::Relaxed);
    let report = Report {
        scenario,
        label: args.label.clone(),
        target: args.target.to_string(),
        tls: args.tls,
        seconds: secs,
        ops,
        ops_per_s: ops as f64 / secs,
        latency_us,
        errors,
        first_errors,
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
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(r: &Report) {
    println!(
        "scenario   {:?} {} -> {} (tls {:?})",
        r.scenario, r.label, r.target, r.tls
    );
    println!(
        "ops        {} in {:.1} s = {:.0}/s",
        r.ops, r.seconds, r.ops_per_s
    );
    let l = &r.latency_us;
    println!(
        "latency µs p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        l["p50"], l["p90"], l["p99"], l["p99.9"], l["max"]
    );
    if r.bytes > 0 {
        println!("received   {} bytes = {:.1} MB/s", r.bytes, r.mb_per_s);
    }
    if r.scenario == Scenario::Idle {
        println!("sessions   {} idle", r.sessions);
    }
    if let Some(cpu) = r.cpu_s {
        println!("cpu        {cpu:.3} s (processes under test)");
    }
    if let Some(v) = r.cpu_us_per_op {
        println!("cpu/op     {v:.1} µs");
    }
    if let Some(v) = r.cpu_s_per_gb {
        println!("cpu/GB     {v:.2} s");
    }
    if let Some(v) = r.bytes_per_session {
        println!(
            "memory     {v:.0} bytes of RSS per idle session ({} -> {} bytes)",
            r.rss_before.unwrap_or(0),
            r.rss_loaded.unwrap_or(0)
        );
    }
    if r.errors.is_empty() {
        println!("errors     none");
    } else {
        println!("errors     {:?}", r.errors);
        for e in &r.first_errors {
            println!("           {e}");
        }
    }
}
