//! `loadtest`: load scenarios against any IMAP/POP3 proxy or server (ringmail, nginx, Dovecot),
//! with hdrhistogram latencies and, for the processes named with `--pid`, CPU time and RSS from
//! /proc; a verdict (exit status), HTML reports with charts and the comparison of two runs;
//! plus `loadtest backend` and `loadtest lookup`, the light servers benchmarks run against so
//! that they measure the proxy. See docs/benchmarks.md.

mod cli;
mod client;
mod engine;
mod procstat;
mod report;
mod servers;

use std::rc::Rc;

use clap::Parser;
use cli::{Accounts, Cli, Cmd, Common, Length};
use engine::{RunArgs, Scenario};

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
                    login_delay: a.login_delay,
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
        Cmd::Compare(a) => {
            let read = |p: &std::path::Path| -> anyhow::Result<report::Report> {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
            };
            let (first, second) = (read(&a.first)?, read(&a.second)?);
            print!("{}", report::compare(&first, &second, &a.out)?);
            eprintln!("charts: {}", a.out.display());
            Ok(())
        }
        Cmd::Login(c) => scenario(Scenario::Login, c.target, &c.common, |r| {
            r.concurrency = c.concurrency;
            length(r, &c.length);
        }),
        Cmd::Fetch(c) => scenario(Scenario::Fetch, c.target, &c.common, |r| {
            r.concurrency = c.concurrency;
            length(r, &c.length);
        }),
        Cmd::Http(c) => scenario(Scenario::Http, c.target, &c.common, |r| {
            r.concurrency = c.concurrency;
            r.http = Some((c.path.clone(), c.host.clone()));
            length(r, &c.length);
        }),
        Cmd::Pop3(c) => scenario(Scenario::Pop3, c.target, &c.common, |r| {
            r.concurrency = c.concurrency;
            length(r, &c.length);
        }),
        Cmd::Idle(c) => scenario(Scenario::Idle, c.target, &c.common, |r| {
            r.sessions = c.sessions;
            r.rate = c.rate;
            r.hold = c.hold;
        }),
        Cmd::Command(c) => scenario(Scenario::Command, c.target, &c.common, |r| {
            r.sessions = c.sessions;
            r.rate = c.rate;
            r.small_fetch = c.small_fetch;
            length(r, &c.length);
        }),
    }
}

fn length(r: &mut RunArgs, l: &Length) {
    r.duration = l.duration;
    r.count = l.count;
}

/// Run a load scenario, print or write its report, and turn its error rate into the exit
/// status.
fn scenario(
    which: Scenario,
    target: std::net::SocketAddr,
    c: &Common,
    specific: impl FnOnce(&mut RunArgs),
) -> anyhow::Result<()> {
    let mut args = RunArgs {
        target,
        tls: c.tls,
        ca: c.ca.clone(),
        accounts: Accounts::from_common(c)?,
        concurrency: 20,
        sessions: 100,
        rate: 500.0,
        duration: std::time::Duration::from_secs(10),
        count: None,
        hold: std::time::Duration::from_secs(10),
        small_fetch: false,
        http: None,
        threads: c.threads,
        pid: c.pid.clone(),
        json: c.json,
        label: c.label.clone(),
    };
    specific(&mut args);
    let r = engine::run(which, args)?;
    if c.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        report::print_table(&r);
    }
    if let Some(dir) = &c.report {
        report::write(dir, &r)?;
        eprintln!("report: {}", dir.join("report.html").display());
    }
    if !r.passes(c.max_errors) {
        eprintln!(
            "FAIL: {:.2} % of {} attempts failed (--max-errors {:.2} %)",
            r.error_rate * 100.0,
            r.attempts,
            c.max_errors * 100.0
        );
        std::process::exit(1);
    }
    Ok(())
}
