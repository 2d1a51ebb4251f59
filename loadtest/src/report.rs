//! What a run reports: the table, the JSON, the verdict, the HTML page with its charts
//! (plotters, SVG), the comparison of two runs, and the progress bar while it runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;

use crate::client::TlsMode;
use crate::engine::Scenario;

/// One point of the time series: totals since the start.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// Seconds since the start.
    pub t: f64,
    pub ops: u64,
    pub errors: u64,
    /// CPU seconds of the processes under test since the start (with --pid).
    pub cpu_s: Option<f64>,
    /// Their resident memory in bytes (with --pid).
    pub rss: Option<u64>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub scenario: Scenario,
    pub label: String,
    pub target: String,
    pub tls: TlsMode,
    pub seconds: f64,
    pub ops: u64,
    pub ops_per_s: f64,
    /// Successful operations plus failed ones.
    pub attempts: u64,
    pub error_rate: f64,
    pub latency_us: BTreeMap<String, u64>,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    pub first_errors: Vec<String>,
    /// The first message (usually the server's reply) of each kind of failure.
    pub first_error_by_kind: BTreeMap<String, String>,
    pub bytes: u64,
    pub mb_per_s: f64,
    pub sessions: u64,
    pub cpu_s: Option<f64>,
    pub cpu_us_per_op: Option<f64>,
    pub cpu_s_per_gb: Option<f64>,
    pub rss_before: Option<u64>,
    pub rss_loaded: Option<u64>,
    pub bytes_per_session: Option<f64>,
    /// (percentile, latency µs): the HdrHistogram percentile spectrum.
    pub percentiles: Vec<(f64, u64)>,
    pub series: Vec<Sample>,
}

impl Report {
    /// Whether the error rate is within `max_errors` (a fraction of attempts).
    pub fn passes(&self, max_errors: f64) -> bool {
        self.error_rate <= max_errors
    }

    pub fn name(&self) -> String {
        if self.label.is_empty() {
            format!("{:?} {}", self.scenario, self.target)
        } else {
            self.label.clone()
        }
    }
}

pub fn print_table(r: &Report) {
    println!(
        "scenario   {:?} {} -> {} (tls {:?})",
        r.scenario, r.label, r.target, r.tls
    );
    println!(
        "ops        {} in {:.1} s = {:.0}/s ({} attempts)",
        r.ops, r.seconds, r.ops_per_s, r.attempts
    );
    let l = |k: &str| r.latency_us.get(k).copied().unwrap_or(0);
    println!(
        "latency µs p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        l("p50"),
        l("p90"),
        l("p99"),
        l("p99.9"),
        l("max")
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
        println!("errors     {:.2} % of attempts", r.error_rate * 100.0);
        for (kind, n) in &r.errors {
            let first = r
                .first_error_by_kind
                .get(kind)
                .map(String::as_str)
                .unwrap_or("");
            println!("           {kind:<9} {n:>8}  first: {first}");
        }
    }
}

/// Throughput per interval from the cumulative series: (t, ops/s).
fn throughput(series: &[Sample]) -> Vec<(f64, f64)> {
    series
        .windows(2)
        .filter(|w| w[1].t > w[0].t)
        .map(|w| (w[1].t, (w[1].ops - w[0].ops) as f64 / (w[1].t - w[0].t)))
        .collect()
}

/// CPU use of the processes under test per interval, in % of one core: (t, %).
fn cpu_percent(series: &[Sample]) -> Vec<(f64, f64)> {
    series
        .windows(2)
        .filter_map(|w| {
            let (a, b) = (w[0].cpu_s?, w[1].cpu_s?);
            (w[1].t > w[0].t).then(|| (w[1].t, (b - a) * 100.0 / (w[1].t - w[0].t)))
        })
        .collect()
}

fn rss_mb(series: &[Sample]) -> Vec<(f64, f64)> {
    series
        .iter()
        .filter_map(|s| Some((s.t, s.rss? as f64 / 1e6)))
        .collect()
}

/// x = 1 / (1 - percentile/100): the HdrHistogram percentile-spectrum axis.
fn spectrum(r: &Report) -> Vec<(f64, f64)> {
    r.percentiles
        .iter()
        .filter(|(p, _)| *p < 100.0)
        .map(|&(p, us)| (1.0 / (1.0 - p / 100.0), us.max(1) as f64))
        .collect()
}

const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

type Series<'a> = (&'a str, Vec<(f64, f64)>);

/// One line chart as an SVG string; `log` puts both axes on a log scale (the spectrum).
fn chart(title: &str, x_label: &str, y_label: &str, lines: &[Series<'_>], log: bool) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 360)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let points = || lines.iter().flat_map(|(_, l)| l.iter());
        let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
        for &(x, y) in points() {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
        if x0 >= x1 {
            x0 = if log { 1.0 } else { 0.0 };
            x1 = x0 + 1.0;
        }
        let y1 = if y1 <= 0.0 { 1.0 } else { y1 * 1.1 };
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70);
        let drawn = if log {
            builder
                .build_cartesian_2d(
                    (x0.max(1.0)..x1.max(2.0)).log_scale(),
                    (1.0..y1).log_scale(),
                )
                .map(|mut c| {
                    let _ = c
                        .configure_mesh()
                        .x_desc(x_label)
                        .y_desc(y_label)
                        .x_label_formatter(&|x| format!("{:.4}%", 100.0 - 100.0 / x))
                        .draw();
                    for (i, (name, l)) in lines.iter().enumerate() {
                        let color = COLORS[i % COLORS.len()];
                        if let Ok(s) =
                            c.draw_series(LineSeries::new(l.clone(), color.stroke_width(2)))
                        {
                            s.label(*name).legend(move |(x, y)| {
                                PathElement::new(vec![(x, y), (x + 16, y)], color)
                            });
                        }
                    }
                    let _ = c.configure_series_labels().border_style(BLACK).draw();
                })
        } else {
            builder.build_cartesian_2d(x0..x1, 0.0..y1).map(|mut c| {
                let _ = c.configure_mesh().x_desc(x_label).y_desc(y_label).draw();
                for (i, (name, l)) in lines.iter().enumerate() {
                    let color = COLORS[i % COLORS.len()];
                    if let Ok(s) = c.draw_series(LineSeries::new(l.clone(), color.stroke_width(2)))
                    {
                        s.label(*name).legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 16, y)], color)
                        });
                    }
                }
                let _ = c.configure_series_labels().border_style(BLACK).draw();
            })
        };
        let _ = drawn;
        let _ = root.present();
    }
    svg
}

fn page(title: &str, summary: &str, charts: &[String]) -> String {
    let mut html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}pre{{background:#f4f4f4;padding:1em}}\
         figure{{margin:1em 0}}</style></head><body>\n<h1>{title}</h1>\n<pre>{summary}</pre>\n"
    );
    for c in charts {
        let _ = writeln!(html, "<figure>{c}</figure>");
    }
    html.push_str("</body></html>\n");
    html
}

fn summary(r: &Report) -> String {
    let l = |k: &str| r.latency_us.get(k).copied().unwrap_or(0);
    let mut s = format!(
        "{:?} against {} (TLS {:?}), {:.1} s\n{} ops, {:.0}/s; errors {:.2} % of {} attempts\n\
         latency µs: p50 {} p90 {} p99 {} p99.9 {} max {}\n",
        r.scenario,
        r.target,
        r.tls,
        r.seconds,
        r.ops,
        r.ops_per_s,
        r.error_rate * 100.0,
        r.attempts,
        l("p50"),
        l("p90"),
        l("p99"),
        l("p99.9"),
        l("max"),
    );
    if let Some(v) = r.cpu_us_per_op {
        let _ = writeln!(s, "CPU per operation: {v:.1} µs");
    }
    if let Some(v) = r.bytes_per_session {
        let _ = writeln!(s, "RSS per idle session: {v:.0} bytes");
    }
    for (kind, n) in &r.errors {
        let _ = writeln!(
            s,
            "{kind}: {n} (first: {})",
            r.first_error_by_kind
                .get(kind)
                .map(String::as_str)
                .unwrap_or("")
        );
    }
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `--report DIR`: report.json and report.html.
pub fn write(dir: &Path, r: &Report) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(r)?)?;
    let name = r.name();
    let mut charts = vec![
        chart(
            "Latency by percentile",
            "percentile",
            "latency (µs)",
            &[(name.as_str(), spectrum(r))],
            true,
        ),
        chart(
            "Throughput",
            "seconds",
            "operations per second",
            &[(name.as_str(), throughput(&r.series))],
            false,
        ),
    ];
    if r.cpu_s.is_some() {
        charts.push(chart(
            "CPU of the processes under test",
            "seconds",
            "% of one core",
            &[(name.as_str(), cpu_percent(&r.series))],
            false,
        ));
        charts.push(chart(
            "Resident memory of the processes under test",
            "seconds",
            "MB",
            &[(name.as_str(), rss_mb(&r.series))],
            false,
        ));
    }
    let title = format!("loadtest: {name}");
    std::fs::write(dir.join("report.html"), page(&title, &summary(r), &charts))?;
    // each chart also on its own, for documents
    for (file, svg) in ["latency.svg", "throughput.svg", "cpu.svg", "rss.svg"]
        .iter()
        .zip(&charts)
    {
        std::fs::write(dir.join(file), svg)?;
    }
    Ok(())
}

/// `loadtest compare A B`: the ratios (A / B), printed; the overlay charts, written to `out`.
pub fn compare(a: &Report, b: &Report, out: &Path) -> anyhow::Result<String> {
    let (na, nb) = (a.name(), b.name());
    let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) if y != 0.0 => format!("{:.2}", x / y),
        _ => "-".into(),
    };
    let lat = |r: &Report, k: &str| r.latency_us.get(k).map(|&v| v as f64);
    let mut text = format!("{:<22} {:>14} {:>14} {:>8}\n", "", na, nb, "ratio");
    let mut row = |what: &str, x: Option<f64>, y: Option<f64>| {
        let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
        let _ = writeln!(
            text,
            "{what:<22} {:>14} {:>14} {:>8}",
            f(x),
            f(y),
            ratio(x, y)
        );
    };
    row("ops/s", Some(a.ops_per_s), Some(b.ops_per_s));
    row("latency p50 µs", lat(a, "p50"), lat(b, "p50"));
    row("latency p99 µs", lat(a, "p99"), lat(b, "p99"));
    row("CPU µs per op", a.cpu_us_per_op, b.cpu_us_per_op);
    row("CPU s per GB", a.cpu_s_per_gb, b.cpu_s_per_gb);
    row("MB/s", Some(a.mb_per_s), Some(b.mb_per_s));
    row(
        "RSS per idle session",
        a.bytes_per_session,
        b.bytes_per_session,
    );
    row(
        "error rate %",
        Some(a.error_rate * 100.0),
        Some(b.error_rate * 100.0),
    );
    let mut charts = vec![
        chart(
            "Latency by percentile",
            "percentile",
            "latency (µs)",
            &[(na.as_str(), spectrum(a)), (nb.as_str(), spectrum(b))],
            true,
        ),
        chart(
            "Throughput",
            "seconds",
            "operations per second",
            &[
                (na.as_str(), throughput(&a.series)),
                (nb.as_str(), throughput(&b.series)),
            ],
            false,
        ),
    ];
    if a.cpu_s.is_some() && b.cpu_s.is_some() {
        charts.push(chart(
            "CPU of the processes under test",
            "seconds",
            "% of one core",
            &[
                (na.as_str(), cpu_percent(&a.series)),
                (nb.as_str(), cpu_percent(&b.series)),
            ],
            false,
        ));
    }
    let escaped = text.replace('&', "&amp;").replace('<', "&lt;");
    std::fs::write(out, page(&format!("{na} / {nb}"), &escaped, &charts))?;
    Ok(text)
}

/// The progress bar on stderr (indicatif), only for a person at a terminal.
pub struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    pub fn new(wanted: bool) -> Progress {
        use std::io::IsTerminal;
        if !wanted || !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = indicatif::ProgressBar::new_spinner();
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
        {
            bar.set_style(style);
        }
        Progress(Some(bar))
    }

    pub fn update(&self, elapsed: Duration, ops: u64, open: u64, errors: u64) {
        if let Some(bar) = &self.0 {
            let rate = ops as f64 / elapsed.as_secs_f64().max(0.001);
            bar.set_message(format!(
                "ops {ops} ({rate:.0}/s)  open {open}  errors {errors}"
            ));
            bar.tick();
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
