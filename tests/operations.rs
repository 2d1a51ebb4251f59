//! Operations (issue 11, items 1 and 2) against a real Dovecot: Prometheus metrics after real
//! logins, parsed by the Prometheus project's own Python parser; `/health` and `/ready`; the
//! audit line per session (text and JSON) with its session id, which Dovecot logs too.

mod common;

use std::time::Duration;

use common::*;

/// Parse `/metrics` with prometheus_client's text parser and print `name{labels} value` per
/// sample (labels sorted), so the test reads exactly what Prometheus would.
const PARSE: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
text = sys.stdin.read() if len(sys.argv) < 2 else open(sys.argv[1]).read()
for family in text_string_to_metric_families(text):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {s.value}")
"#;

fn scrape(rm: &Ringmail) -> Vec<String> {
    let (code, body) = rm.admin_get("/metrics");
    assert_eq!(code, 200, "{body}");
    let file = rm.dir.join("metrics.txt");
    std::fs::write(&file, &body).unwrap();
    system_python(PARSE, &[file.to_str().unwrap()])
        .lines()
        .map(str::to_string)
        .collect()
}

fn value(samples: &[String], series: &str) -> f64 {
    samples
        .iter()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{series} not scraped:\n{}", samples.join("\n")))
}

#[test]
fn metrics_after_real_logins() {
    let env = Env::start();
    let rm = &env.ringmail;
    assert_eq!(rm.admin_get("/health"), (200, "ok\n".into()));
    assert_eq!(rm.admin_get("/ready"), (200, "ready\n".into()));
    // two successful IMAP logins (the second a cache hit), one rejected, one POP3 login
    let mut held = Raw::greeted(env.port());
    held.login("bob@example.com", "bobpw");
    held.send(b"s SELECT INBOX\r\n");
    held.until("s OK");
    let mut c = Raw::greeted(env.port());
    c.login("bob@example.com", "bobpw");
    c.send(b"z LOGOUT\r\n");
    c.until("z OK");
    let mut c = Raw::greeted(env.port());
    c.send(b"w LOGIN bob@example.com wrong\r\n");
    assert!(c.line().starts_with("w NO"));
    let mut p = Raw::connect(rm.pop3_port);
    p.line();
    p.send(b"USER alice@example.com\r\nPASS alicepw\r\nQUIT\r\n");
    p.until("+OK Logging out");
    drop((c, p));
    wait_for(Duration::from_secs(10), "the sessions to end", || {
        let m = scrape(rm);
        value(
            &m,
            "ringmail_sessions{phase=\"prelogin\",protocol=\"imap\",tls=\"false\"}",
        ) == 0.0
            && value(
                &m,
                "ringmail_sessions{phase=\"relaying\",protocol=\"imap\",tls=\"false\"}",
            ) == 1.0
            && value(
                &m,
                "ringmail_sessions{phase=\"relaying\",protocol=\"pop3\",tls=\"false\"}",
            ) == 0.0
    });
    let m = scrape(rm);
    assert_eq!(
        value(&m, "ringmail_logins_total{protocol=\"imap\",result=\"ok\"}"),
        2.0
    );
    assert_eq!(
        value(
            &m,
            "ringmail_logins_total{protocol=\"imap\",result=\"rejected\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&m, "ringmail_logins_total{protocol=\"pop3\",result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "ringmail_sessions{phase=\"relaying\",protocol=\"imap\",tls=\"false\"}"
        ),
        1.0,
        "the held session"
    );
    assert_eq!(
        value(&m, "ringmail_lookup_duration_seconds_count{}"),
        2.0,
        "bob, alice"
    );
    assert!(value(&m, "ringmail_lookup_duration_seconds_bucket{le=\"+Inf\"}") >= 2.0);
    // bob's second and third logins (the third rejected) hit; bob's first and alice's miss
    assert_eq!(
        value(
            &m,
            "ringmail_route_cache_requests_total{result=\"hit\",tier=\"process\"}"
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            "ringmail_route_cache_requests_total{result=\"miss\",tier=\"process\"}"
        ),
        2.0
    );
    assert!(
        value(
            &m,
            "ringmail_relayed_bytes_total{direction=\"backend_to_client\"}"
        ) > 100.0
    );
    assert!(
        value(
            &m,
            "ringmail_relayed_bytes_total{direction=\"client_to_backend\"}"
        ) > 10.0
    );
    assert!(value(&m, "ringmail_backend_connect_duration_seconds_count{}") >= 4.0);
    let per_worker: f64 = m
        .iter()
        .filter(|l| l.starts_with("ringmail_worker_connections{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(per_worker, 1.0, "only the held session is open");
    assert_eq!(
        value(
            &m,
            &format!(
                "ringmail_lookup_errors_total{{handler=\"{}\"}}",
                env.lookup.url()
            )
        ),
        0.0
    );
    assert_eq!(value(&m, "ringmail_up{}"), 1.0);
}

#[test]
fn one_audit_line_per_session_with_its_id() {
    let env = Env::start();
    let mut c = Raw::greeted(env.port());
    c.login("bob@example.com", "bobpw");
    c.send(b"z LOGOUT\r\n");
    c.until("z OK");
    drop(c);
    let mut c = Raw::greeted(env.port());
    c.send(b"a LOGOUT\r\n");
    c.until("a OK");
    drop(c);
    wait_for(Duration::from_secs(5), "two audit lines", || {
        env.ringmail.log().matches("session ended").count() == 2
    });
    let log = env.ringmail.log();
    assert!(!log.contains('\x1b'), "no colour codes into a file");
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("session ended"))
        .collect();
    let relayed = lines
        .iter()
        .find(|l| l.contains("user=\"bob@example.com\""))
        .unwrap_or_else(|| panic!("{log}"));
    for field in [
        "protocol=\"IMAP\"",
        "tls=false",
        &format!("backend=\"127.0.0.1:{}\"", env.dovecot.imap_port),
        "end=\"closed\"",
        "client=127.0.0.1:",
        "duration_ms=",
        "bytes_in=",
        "bytes_out=",
    ] {
        assert!(relayed.contains(field), "{field} in {relayed}");
    }
    let pre = lines.iter().find(|l| l.contains("user=\"-\"")).unwrap();
    assert!(pre.contains("end=\"closed_before_login\""), "{pre}");
    // the same id on the session's other lines, and in Dovecot's log
    let sid = relayed
        .split("session=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert!(log
        .lines()
        .any(|l| l.contains("logged in") && l.contains(sid)));
    wait_for(Duration::from_secs(5), "dovecot's line", || {
        env.dovecot.log().contains(&format!("session=<{sid}>"))
    });
}

#[test]
fn json_logs() {
    let env = Env::start_opts("", &["--log-format", "json"]);
    let mut c = Raw::greeted(env.port());
    c.login("bob@example.com", "bobpw");
    c.send(b"s SELECT INBOX\r\n");
    c.until("s OK");
    drop(c);
    wait_for(Duration::from_secs(5), "the audit line", || {
        env.ringmail.log().contains("session ended")
    });
    let script = r#"
import json, sys
found = False
for line in open(sys.argv[1]):
    record = json.loads(line)
    if record.get("message") == "session ended":
        assert record["user"] == "bob@example.com", record
        assert record["protocol"] == "IMAP" and record["end"] == "closed", record
        assert record["bytes_out"] > 0 and len(record["session"]) == 12, record
        found = True
print("ok" if found else "missing")
"#;
    let log = env.ringmail.dir.join("ringmail.log");
    assert_eq!(python(script, &[log.to_str().unwrap()]).trim(), "ok");
}

/// Issue 11.5: every metric the Grafana dashboard queries is one ringmail exports (checked
/// against a real scrape, after a login so that every series has moved at least once).
#[test]
fn the_grafana_dashboard_queries_only_exported_metrics() {
    let env = Env::start();
    let mut c = Raw::greeted(env.port());
    c.login("bob@example.com", "bobpw");
    let (code, body) = env.ringmail.admin_get("/metrics");
    assert_eq!(code, 200);
    let scraped = env.ringmail.dir.join("metrics.txt");
    std::fs::write(&scraped, body).unwrap();
    let dashboard =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana-dashboard.json");
    let script = r#"
import json, re, sys
from prometheus_client.parser import text_string_to_metric_families
samples = set()
for family in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in family.samples:
        samples.add(s.name)
dash = json.load(open(sys.argv[2]))
exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
exprs += [v["query"]["query"] for v in dash["templating"]["list"] if isinstance(v.get("query"), dict)]
used = set()
for e in exprs:
    used.update(re.findall(r"\bringmail_[a-z_]+", e))
missing = sorted(used - samples)
assert not missing, f"queried but not exported: {missing}"
assert len(used) >= 10, used
print(len(used))
"#;
    let n = system_python(
        script,
        &[scraped.to_str().unwrap(), dashboard.to_str().unwrap()],
    );
    assert!(n.trim().parse::<usize>().unwrap() >= 10);
}
