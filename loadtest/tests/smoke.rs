//! Every loadtest scenario runs and reports: against `loadtest backend` directly, and through
//! the real ringmail binary (built next to loadtest by `cargo test --workspace`) routed by
//! `loadtest lookup`, with `--pid` sampling. Small counts: this checks the tool, not speed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

#[path = "../../tests/common/ports.rs"]
mod ports;
use ports::free_port as port;

/// A child process killed on drop; its stderr goes to a file that failures quote.
struct Kill(Child, PathBuf);

impl Kill {
    fn spawn(cmd: &mut Command, dir: &Path, name: &str) -> Kill {
        let log = dir.join(format!("{name}.stderr"));
        let child = cmd
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Kill(child, log)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }

    /// Wait until the child listens on `port`; fail at once, with its stderr, if it exits.
    fn wait(&mut self, port: u16) {
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = self.0.try_wait().unwrap() {
                panic!(
                    "it exited ({status}) before listening on {port}: {}",
                    self.stderr()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "nothing listens on {port} after 20 s; its stderr: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.1.display(), self.stderr());
        }
    }
}

fn loadtest() -> Command {
    Command::new(env!("CARGO_BIN_EXE_loadtest"))
}

/// Run a scenario with --json and return the report (it must pass its verdict).
fn run(args: &[&str]) -> serde_json::Value {
    let (ok, r, stderr) = run_any(args);
    assert!(ok, "loadtest {args:?}: {stderr}");
    r
}

/// Run a scenario with --json: (exit status success, report, stderr).
fn run_any(args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = loadtest().args(args).arg("--json").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let r = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("loadtest {args:?}: {e}: {stderr}"));
    (out.status.success(), r, stderr)
}

#[test]
fn every_scenario_reports() {
    let (imap, pop3, lookup) = (port(), port(), port());
    let dir = std::env::temp_dir().join(format!("loadtest-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut backend = Kill::spawn(
        loadtest()
            .args([
                "backend",
                "--imap",
                &format!("127.0.0.1:{imap}"),
                "--pop3",
                &format!("127.0.0.1:{pop3}"),
            ])
            .args(["--message-size", "100k"]),
        &dir,
        "backend",
    );
    let mut lookup_server = Kill::spawn(
        loadtest()
            .args(["lookup", "--listen", &format!("127.0.0.1:{lookup}")])
            .args([
                "--imap-backend",
                &format!("127.0.0.1:{imap}"),
                "--pop3-backend",
                &format!("127.0.0.1:{pop3}"),
            ]),
        &dir,
        "lookup",
    );
    backend.wait(imap);
    lookup_server.wait(lookup);

    let target = format!("127.0.0.1:{imap}");
    let r = run(&[
        "login",
        "--target",
        &target,
        "--count",
        "50",
        "--concurrency",
        "5",
    ]);
    assert_eq!(r["ops"].as_u64().unwrap(), 50, "--count is exact");
    assert_eq!(r["attempts"].as_u64().unwrap(), 50);
    assert!(r["errors"].as_object().unwrap().is_empty(), "{r}");
    assert!(r["latency_us"]["p99"].as_u64().unwrap() > 0);
    let r = run(&[
        "fetch",
        "--target",
        &target,
        "--count",
        "10",
        "--concurrency",
        "2",
    ]);
    assert!(r["bytes"].as_u64().unwrap() >= 10 * 100 * 1024, "{r}");
    let r = run(&[
        "pop3",
        "--target",
        &format!("127.0.0.1:{pop3}"),
        "--count",
        "10",
        "--concurrency",
        "2",
    ]);
    assert!(r["bytes"].as_u64().unwrap() >= 10 * 100 * 1024, "{r}");
    // a wrong password is counted as a refusal, with the server's reply; --count counts
    // attempts, and any error fails the run unless --max-errors allows it
    let wrong = [
        "login",
        "--target",
        &target,
        "--count",
        "4",
        "--concurrency",
        "1",
        "--password",
        "nope",
    ];
    let (ok, r, stderr) = run_any(&wrong);
    assert!(!ok, "errors fail the run by default");
    assert!(
        stderr.contains("FAIL: 100.00 % of 4 attempts failed"),
        "{stderr}"
    );
    assert_eq!(r["errors"]["Refused"].as_u64().unwrap(), 4, "{r}");
    assert_eq!(r["attempts"].as_u64().unwrap(), 4, "{r}");
    assert!(
        r["first_error_by_kind"]["Refused"]
            .as_str()
            .unwrap()
            .contains("NO"),
        "the server's reply: {r}"
    );
    let mut allowed = wrong.to_vec();
    allowed.extend(["--max-errors", "1"]);
    assert!(run_any(&allowed).0, "--max-errors 1 accepts every error");

    // real accounts: zero-padded patterns and an accounts file (the backend checks the
    // password, so a wrong expansion would fail)
    let r = run(&[
        "login",
        "--target",
        &target,
        "--count",
        "5",
        "--user",
        "user{n:04}@example.test",
        "--password",
        "secret",
    ]);
    assert_eq!(r["ops"].as_u64().unwrap(), 5, "{r}");
    let accounts = dir.join("accounts.txt");
    std::fs::write(
        &accounts,
        "# user password\na@example.test secret\nb@example.test secret\n",
    )
    .unwrap();
    let r = run(&[
        "login",
        "--target",
        &target,
        "--count",
        "6",
        "--accounts",
        accounts.to_str().unwrap(),
    ]);
    assert_eq!(r["ops"].as_u64().unwrap(), 6, "{r}");

    // through ringmail, if the workspace built it next to loadtest
    let ringmail = PathBuf::from(env!("CARGO_BIN_EXE_loadtest")).with_file_name("ringmail");
    assert!(
        ringmail.exists(),
        "ringmail binary next to loadtest: {}",
        ringmail.display()
    );
    let rm_port = port();
    let conf = dir.join("ringmail.toml");
    std::fs::write(
        &conf,
        format!(
            "[workers]\ncount = 1\npin = false\nbuffers = 64\n[admin]\nlisten = \"\"\n[imap]\nlisten = [\"127.0.0.1:{rm_port}\"]\n\
             [pop3]\nlisten = []\n[lookup]\nhandlers = [\"http://127.0.0.1:{lookup}/lookup\"]\n"
        ),
    )
    .unwrap();
    let mut proxy = Kill::spawn(
        Command::new(&ringmail).arg("--config").arg(&conf),
        &dir,
        "ringmail",
    );
    proxy.wait(rm_port);
    let pid = proxy.0.id().to_string();
    let target = format!("127.0.0.1:{rm_port}");
    let r = run(&[
        "login",
        "--target",
        &target,
        "--count",
        "100",
        "--concurrency",
        "5",
        "--pid",
        &pid,
    ]);
    assert!(r["errors"].as_object().unwrap().is_empty(), "{r}");
    // sampled (a number, not null); 100 logins may take less than one 10 ms clock tick of CPU,
    // so the value itself can be 0
    assert!(r["cpu_us_per_op"].as_f64().is_some(), "{r}");
    let r = run(&[
        "command",
        "--target",
        &target,
        "--sessions",
        "20",
        "--rate",
        "200",
        "--duration",
        "1s",
        "--pid",
        &pid,
    ]);
    assert!(r["ops"].as_u64().unwrap() > 20, "{r}");
    let r = run(&[
        "idle",
        "--target",
        &target,
        "--sessions",
        "50",
        "--rate",
        "500",
        "--hold",
        "1s",
        "--pid",
        &pid,
    ]);
    assert_eq!(r["sessions"].as_u64().unwrap(), 50, "{r}");
    assert!(r["rss_loaded"].as_u64().unwrap() > 0, "{r}");

    // reports: the proxy, then the backend alone, then the two compared
    let through = dir.join("through");
    let direct = dir.join("direct");
    let backend_target = format!("127.0.0.1:{imap}");
    for (t, out) in [(&target, &through), (&backend_target, &direct)] {
        run(&[
            "login",
            "--target",
            t,
            "--duration",
            "3s",
            "--concurrency",
            "4",
            "--pid",
            &pid,
            "--label",
            out.file_name().unwrap().to_str().unwrap(),
            "--report",
            out.to_str().unwrap(),
        ]);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap())
                .unwrap();
        assert!(json["series"].as_array().unwrap().len() >= 3, "{json}");
        assert!(json["percentiles"].as_array().unwrap().len() >= 5, "{json}");
    }
    let compared = dir.join("compare.html");
    let out = loadtest()
        .args(["compare"])
        .arg(through.join("report.json"))
        .arg(direct.join("report.json"))
        .arg("--out")
        .arg(&compared)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ops/s") && text.contains("ratio"), "{text}");
    for page in [through.join("report.html"), compared] {
        assert_charts_render(&page, 2);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Open `page` in headless Chromium and check that at least `charts` SVG charts rendered, each
/// with a drawn line (a polyline or path with points).
fn assert_charts_render(page: &Path, charts: usize) {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chromium is not installed: run scripts/test.sh (it installs Debian's chromium)");
    let profile = std::env::temp_dir().join(format!("loadtest-chromium-{}", std::process::id()));
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=2000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&out.stdout);
    let svgs = dom.matches("<svg").count();
    assert!(
        svgs >= charts,
        "{svgs} charts rendered in {}: {dom}",
        page.display()
    );
    let lines = dom
        .split("<polyline")
        .skip(1)
        .filter(|l| {
            l.split("points=\"").nth(1).is_some_and(|p| {
                p.split('"')
                    .next()
                    .is_some_and(|pts| pts.split(' ').count() >= 2)
            })
        })
        .count();
    assert!(lines >= charts, "{lines} drawn lines in {}", page.display());
}

#[test]
fn refuses_a_plan_over_the_open_files_limit() {
    let out = loadtest()
        .args(["idle", "--target", "127.0.0.1:9", "--sessions", "100000"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("open files"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A keep-alive HTTP/1.1 server (Python's http.server): `/chunked` answers in chunks, anything
/// else with 100 bytes and a Content-Length.
const PY_HTTP: &str = r#"
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        self.send_response(200)
        if self.path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked"); self.end_headers()
            for part in (b"x" * 30, b"y" * 20):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", "100"); self.end_headers()
            self.wfile.write(b"z" * 100)
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

#[test]
fn http_scenario_reports() {
    let p = port();
    let dir = std::env::temp_dir().join(format!("loadtest-smoke-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut server = Kill::spawn(
        Command::new("python3").args(["-c", PY_HTTP, &p.to_string()]),
        &dir,
        "http",
    );
    server.wait(p);
    let target = format!("127.0.0.1:{p}");
    let r = run(&[
        "http",
        "--target",
        &target,
        "--path",
        "/page",
        "--count",
        "30",
        "--concurrency",
        "3",
    ]);
    assert_eq!(r["ops"].as_u64().unwrap(), 30, "{r}");
    assert_eq!(r["bytes"].as_u64().unwrap(), 3000, "body bytes: {r}");
    let r = run(&[
        "http",
        "--target",
        &target,
        "--path",
        "/chunked",
        "--count",
        "10",
        "--concurrency",
        "2",
    ]);
    assert_eq!(r["ops"].as_u64().unwrap(), 10, "{r}");
    assert_eq!(r["bytes"].as_u64().unwrap(), 500, "chunked bodies: {r}");
}
