//! CPU time and memory of the processes under test, from /proc.

use std::time::Duration;

/// One sample of a process.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Sample {
    /// utime + stime, all threads.
    pub cpu: Duration,
    /// Resident set size in bytes.
    pub rss: u64,
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Read /proc/<pid>/stat and /proc/<pid>/status.
pub fn sample(pid: u32) -> std::io::Result<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // the command name may hold spaces; fields are counted after its closing parenthesis
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // after ')' : state is field 3, so utime (14) and stime (15) are at 11 and 12
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    let cpu = Duration::from_nanos(ticks * 1_000_000_000 / ticks_per_second());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    Ok(Sample { cpu, rss })
}

/// Sum over several processes.
pub fn sample_all(pids: &[u32]) -> Sample {
    pids.iter()
        .filter_map(|p| sample(*p).ok())
        .fold(Sample::default(), |a, s| Sample {
            cpu: a.cpu + s.cpu,
            rss: a.rss + s.rss,
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn samples_this_process() {
        let s = super::sample(std::process::id()).unwrap();
        assert!(s.rss > 0);
    }
}
