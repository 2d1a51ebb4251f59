//! The command line: one subcommand per scenario, each listing only the options it uses, and
//! the accounts the scenarios log in as (a pattern or a file).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::client::TlsMode;

const ABOUT: &str =
    "Load scenarios for IMAP/POP3 proxies (ringmail, nginx) and servers (Dovecot), \
with latency percentiles, CPU and memory of the processes under test, a verdict, and HTML reports.";

const LONG_ABOUT: &str = "\
Load scenarios for IMAP/POP3 proxies (ringmail, nginx) and servers (Dovecot), with latency
percentiles, CPU and memory of the processes under test (--pid), a verdict (the exit status is
non-zero when the error rate passes --max-errors), and HTML reports with charts (--report).

Measure a proxy in front of a real server, with real accounts:

  loadtest login --target 127.0.0.1:143 --user 'user{n:04}@example.test' \\
      --password 'pw-{n:04}' --users 5000 --pid $(pidof ringmail) --report out/ringmail

Measure the proxy alone, in front of the light servers this tool also provides (any user,
password \"secret\"; the lookup handler routes every login to the backend):

  loadtest backend &                 # IMAP 127.0.0.1:20143, POP3 127.0.0.1:20110
  loadtest lookup &                  # 127.0.0.1:20072 -> that backend
  # ringmail with [lookup] handlers = [\"http://127.0.0.1:20072/service/extension/nginx-lookup\"]
  loadtest login --target 127.0.0.1:143 --pid $(pidof ringmail)

Compare two runs (for example ringmail against nginx):

  loadtest compare out/ringmail/report.json out/nginx/report.json --out out/compare.html";

#[derive(Parser)]
#[command(about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Connect, LOGIN, LOGOUT, in a loop on each of --concurrency connections.
    #[command(
        after_help = "Example:\n  loadtest login --target 127.0.0.1:143 --concurrency 20 --duration 30s --pid $(pidof ringmail)"
    )]
    Login(LoopCmd),
    /// Open --sessions sessions at --rate, each LOGIN + SELECT + IDLE, hold them --hold; with
    /// --pid, the resident memory each idle session costs.
    #[command(
        after_help = "Example:\n  loadtest idle --target 127.0.0.1:143 --sessions 9000 --rate 2000 --hold 20s --pid $(pidof ringmail)"
    )]
    Idle(IdleCmd),
    /// --sessions logged-in sessions each doing NOOP (or FETCH 1 (FLAGS)) request/response.
    #[command(
        after_help = "Example:\n  loadtest command --target 127.0.0.1:143 --sessions 1000 --duration 30s --pid $(pidof ringmail)"
    )]
    Command(CommandCmd),
    /// Repeated FETCH 1 BODY.PEEK[] of the first message of INBOX (with `loadtest backend`, a
    /// message of --message-size) on --concurrency sessions: throughput and CPU per GB.
    #[command(
        after_help = "Example:\n  loadtest fetch --target 127.0.0.1:993 --tls implicit --ca ca.pem --concurrency 8 --pid $(pidof ringmail)"
    )]
    Fetch(LoopCmd),
    /// POP3: USER/PASS, RETR 1, QUIT, in a loop on each of --concurrency connections.
    #[command(
        after_help = "Example:\n  loadtest pop3 --target 127.0.0.1:110 --concurrency 20 --duration 30s"
    )]
    Pop3(Pop3Cmd),
    /// HTTP/1.1 keep-alive GETs of --path on each of --concurrency connections (any HTTP
    /// server or proxy; with --tls implicit, HTTPS): requests/s, latency, CPU per request.
    #[command(
        after_help = "Example:\n  loadtest http --target 127.0.0.1:8080 --path /home/user1/small.txt --concurrency 20 --pid $(pidof ringmail)"
    )]
    Http(HttpCmd),
    /// A light IMAP/POP3 server for benchmarks: any user whose password is --password; INBOX
    /// holds two messages, the first one --message-size bytes.
    #[command(
        after_help = "Example:\n  loadtest backend --imap 127.0.0.1:20143 --pop3 127.0.0.1:20110 --message-size 1m"
    )]
    Backend(BackendArgs),
    /// A route lookup handler (Zimbra's protocol) routing every login to the backend.
    #[command(
        after_help = "Example:\n  loadtest lookup --listen 127.0.0.1:20072 --imap-backend 127.0.0.1:20143"
    )]
    Lookup(LookupArgs),
    /// Overlay two --report runs in one chart and print their ratios (first / second).
    #[command(
        after_help = "Example:\n  loadtest compare ringmail/report.json nginx/report.json --out compare.html"
    )]
    Compare(CompareArgs),
}

/// What every load scenario shares: TLS, accounts, threads, what to sample, how to report.
#[derive(Args, Clone)]
pub struct Common {
    /// TLS to the target: off, starttls, or implicit (993/995).
    #[arg(long, value_enum, default_value = "off")]
    pub tls: TlsMode,
    /// CA file (PEM) to verify the target's certificate; without it, no verification.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Login pattern: the account number (0 to --users - 1) replaces n in braces, as in the
    /// default, or `{n:04}` zero-padded to 4 digits (any width).
    #[arg(long, default_value = "user{n}@example.com", value_name = "PATTERN")]
    pub user: String,
    /// Number of accounts the logins cycle over.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub users: u64,
    /// Password pattern: `{user}` becomes the login; the account number replaces n in braces
    /// or `{n:04}` (zero-padded), as in --user.
    #[arg(long, default_value = "secret", value_name = "PATTERN")]
    pub password: String,
    /// A file of accounts, one `user password` per line (instead of the patterns).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["user", "users", "password"])]
    pub accounts: Option<PathBuf>,
    /// Load-generator threads, each its own io_uring runtime.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// A process under test whose CPU time and resident memory are sampled (repeatable).
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// Print the report as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// A name for this run in the report.
    #[arg(long, default_value = "")]
    pub label: String,
    /// Write report.json and report.html (charts: latency by percentile, throughput, and the
    /// sampled processes' CPU and memory over time) into this directory.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Highest acceptable error rate, as a fraction of attempts (0.01 = 1 %); above it the exit
    /// status is 1. Default: any error fails the run.
    #[arg(long, default_value_t = 0.0, value_name = "FRACTION")]
    pub max_errors: f64,
}

/// How long a looping scenario runs.
#[derive(Args, Clone)]
pub struct Length {
    /// How long the measured phase lasts (ms, s, m, h).
    #[arg(long, default_value = "10s", value_parser = ringmail::config::parse_duration)]
    pub duration: Duration,
    /// Stop after exactly this many attempts (successful or not) instead of --duration.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

#[derive(Args, Clone)]
pub struct LoopCmd {
    /// IMAP server or proxy to load.
    #[arg(long, default_value = "127.0.0.1:1143")]
    pub target: SocketAddr,
    /// Connections working in parallel.
    #[arg(long, default_value_t = 20)]
    pub concurrency: u64,
    #[command(flatten)]
    pub length: Length,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Clone)]
pub struct Pop3Cmd {
    /// POP3 server or proxy to load.
    #[arg(long, default_value = "127.0.0.1:110")]
    pub target: SocketAddr,
    /// Connections working in parallel.
    #[arg(long, default_value_t = 20)]
    pub concurrency: u64,
    #[command(flatten)]
    pub length: Length,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Clone)]
pub struct HttpCmd {
    /// HTTP server or proxy to load.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub target: SocketAddr,
    /// Connections working in parallel, each sending one request at a time.
    #[arg(long, default_value_t = 20)]
    pub concurrency: u64,
    /// The request target; n in braces becomes the account number as in --user.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// The Host header.
    #[arg(long, default_value = "mail.example.com")]
    pub host: String,
    #[command(flatten)]
    pub length: Length,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Clone)]
pub struct IdleCmd {
    /// IMAP server or proxy to load.
    #[arg(long, default_value = "127.0.0.1:1143")]
    pub target: SocketAddr,
    /// Idle sessions to open.
    #[arg(long, default_value_t = 100)]
    pub sessions: u64,
    /// Sessions opened per second.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// How long the sessions are held once all are open (then DONE and LOGOUT).
    #[arg(long, default_value = "10s", value_parser = ringmail::config::parse_duration)]
    pub hold: Duration,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Clone)]
pub struct CommandCmd {
    /// IMAP server or proxy to load.
    #[arg(long, default_value = "127.0.0.1:1143")]
    pub target: SocketAddr,
    /// Logged-in sessions, each sending one command at a time.
    #[arg(long, default_value_t = 100)]
    pub sessions: u64,
    /// Sessions opened per second.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// FETCH 1 (FLAGS) instead of NOOP.
    #[arg(long)]
    pub small_fetch: bool,
    #[command(flatten)]
    pub length: Length,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args)]
pub struct BackendArgs {
    /// Where the IMAP side listens.
    #[arg(long, default_value = "127.0.0.1:20143")]
    pub imap: SocketAddr,
    /// Where the POP3 side listens.
    #[arg(long, default_value = "127.0.0.1:20110")]
    pub pop3: SocketAddr,
    /// The password every user has.
    #[arg(long, default_value = "secret")]
    pub password: String,
    /// Size of the first message (what `fetch` and `pop3` retrieve): 512, 16k, 1m.
    #[arg(long, default_value = "1m", value_parser = ringmail::config::parse_size)]
    pub message_size: usize,
    /// How long every IMAP login waits before its answer (a slow mailbox server: keeps a
    /// proxy's sessions in their login, e.g. to count what a login storm holds).
    #[arg(long, default_value = "0s", value_parser = ringmail::config::parse_duration)]
    pub login_delay: std::time::Duration,
}

#[derive(Args)]
pub struct LookupArgs {
    /// Where the handler listens (HTTP).
    #[arg(long, default_value = "127.0.0.1:20072")]
    pub listen: SocketAddr,
    /// The backend address answered for IMAP logins.
    #[arg(long, default_value = "127.0.0.1:20143")]
    pub imap_backend: SocketAddr,
    /// The backend address answered for POP3 logins.
    #[arg(long, default_value = "127.0.0.1:20110")]
    pub pop3_backend: SocketAddr,
}

#[derive(Args)]
pub struct CompareArgs {
    /// The first run's report.json (the numerator of the ratios).
    pub first: PathBuf,
    /// The second run's report.json.
    pub second: PathBuf,
    /// Where to write the overlay charts (HTML).
    #[arg(long, default_value = "compare.html")]
    pub out: PathBuf,
}

/// The accounts logins cycle over.
#[derive(Clone)]
pub enum Accounts {
    Pattern {
        user: String,
        password: String,
        users: u64,
    },
    List(Vec<(String, String)>),
}

impl Accounts {
    pub fn from_common(c: &Common) -> anyhow::Result<Accounts> {
        let Some(path) = &c.accounts else {
            return Ok(Accounts::Pattern {
                user: c.user.clone(),
                password: c.password.clone(),
                users: c.users.max(1),
            });
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let mut list = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(char::is_whitespace) {
                Some((u, p)) if !p.trim().is_empty() => {
                    list.push((u.to_string(), p.trim().to_string()))
                }
                _ => anyhow::bail!("{}:{}: expected `user password`", path.display(), i + 1),
            }
        }
        if list.is_empty() {
            anyhow::bail!("{}: no accounts", path.display());
        }
        Ok(Accounts::List(list))
    }

    /// The login and password of account `n` (cycling).
    pub fn get(&self, n: u64) -> (String, String) {
        match self {
            Accounts::Pattern {
                user,
                password,
                users,
            } => {
                let n = n % users;
                let user = expand(user, n);
                let password = expand(password, n).replace("{user}", &user);
                (user, password)
            }
            Accounts::List(list) => list[(n % list.len() as u64) as usize].clone(),
        }
    }
}

/// Replace `{n}` and `{n:0W}` (zero-padded to W digits) with `n`.
pub fn expand(pattern: &str, n: u64) -> String {
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut rest = pattern;
    while let Some(start) = rest.find("{n") {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let Some(end) = tail.find('}') else {
            out.push_str(tail);
            return out;
        };
        let spec = &tail[2..end];
        match spec {
            "" => out.push_str(&n.to_string()),
            s if s.starts_with(":0") && s[2..].parse::<usize>().is_ok() => {
                let width: usize = s[2..].parse().unwrap_or(0);
                out.push_str(&format!("{n:0width$}"));
            }
            _ => out.push_str(&tail[..=end]),
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert_eq!(expand("user{n}@example.com", 7), "user7@example.com");
        assert_eq!(
            expand("user{n:04}@example.test", 7),
            "user0007@example.test"
        );
        assert_eq!(expand("pw-{n:04}", 12345), "pw-12345");
        assert_eq!(expand("{n}-{n:02}", 3), "3-03");
        assert_eq!(expand("{x}{n", 1), "{x}{n");
        let a = Accounts::Pattern {
            user: "u{n:03}".into(),
            password: "{user}:{n}".into(),
            users: 10,
        };
        assert_eq!(a.get(13), ("u003".into(), "u003:3".into()));
    }

    #[test]
    fn help_keeps_the_placeholders() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        let login = cmd.find_subcommand_mut("login").unwrap();
        let help = login.render_long_help().to_string();
        // clap turns a literal n in braces into a line break in help text: the text avoids it
        assert!(help.contains("replaces n in braces"), "{help}");
        assert!(help.contains("`{n:04}` zero-padded"), "{help}");
        assert!(help.contains("[default: user{n}@example.com]"), "{help}");
        assert!(!help.contains("--sessions"), "login lists only its options");
        let pop3 = cmd.find_subcommand_mut("pop3").unwrap();
        assert!(pop3
            .render_long_help()
            .to_string()
            .contains("127.0.0.1:110"));
    }
}
