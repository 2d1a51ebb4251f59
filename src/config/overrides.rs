//! Command-line flags that override the file (the one place flags touch the config).

use super::*;

/// Command-line flags that override the file, each also a config key.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// Worker threads, one per core (0: all online cores). Key: workers.count
    #[arg(long)]
    pub workers: Option<usize>,
    /// CPUs to pin workers to, such as `0-3,8`. Key: workers.cpus
    #[arg(long)]
    pub cpus: Option<String>,
    /// Do not pin workers to CPUs. Key: workers.pin = false
    #[arg(long)]
    pub no_pin: bool,
    /// io_uring submission queue entries per worker. Key: workers.ring_entries
    #[arg(long)]
    pub ring_entries: Option<u32>,
    /// Size of each provided (relay) buffer, e.g. 16k. Key: workers.buffer_size
    #[arg(long, value_parser = parse_size)]
    pub buffer_size: Option<usize>,
    /// Provided buffers per worker (power of two, at most 32768). Key: workers.buffers
    #[arg(long)]
    pub buffers_per_worker: Option<u16>,
    /// Client connections per worker before new ones are refused. Key: workers.max_connections
    #[arg(long)]
    pub max_connections_per_worker: Option<usize>,
    /// Route cache entries (one cache for the whole process). Key: lookup.cache_capacity
    #[arg(long)]
    pub route_cache_capacity: Option<usize>,
    /// Idle keep-alive connections to lookup handlers per worker. Key: lookup.pool_size
    #[arg(long)]
    pub lookup_pool_size: Option<usize>,
    /// Listen backlog. Key: workers.backlog
    #[arg(long)]
    pub backlog: Option<i32>,
    /// How long a busy worker gathers completions before handling them, e.g. 1ms (0, the
    /// default: one at a time; adds up to this much latency under load). Key: workers.batch_wait
    #[arg(long, value_parser = parse_duration)]
    pub batch_wait: Option<Duration>,
    /// Most completions a worker waits for at once. Key: workers.batch_size
    #[arg(long)]
    pub batch_size: Option<u32>,
    /// Keep the memory a burst of logins freed instead of giving it back to the system once
    /// the burst is over. Key: workers.release_memory = false
    #[arg(long)]
    pub no_release_memory: bool,
}

impl Overrides {
    pub fn apply(&self, f: &mut FileConfig) {
        let w = &mut f.workers;
        if let Some(v) = self.workers {
            w.count = v;
        }
        if let Some(v) = &self.cpus {
            w.cpus = v.clone();
        }
        if self.no_pin {
            w.pin = false;
        }
        if let Some(v) = self.ring_entries {
            w.ring_entries = v;
        }
        if let Some(v) = self.buffer_size {
            w.buffer_size = Size(v);
        }
        if let Some(v) = self.buffers_per_worker {
            w.buffers = v;
        }
        if let Some(v) = self.max_connections_per_worker {
            w.max_connections = v;
        }
        if let Some(v) = self.backlog {
            w.backlog = v;
        }
        if let Some(v) = self.batch_wait {
            w.batch_wait = Dur(v);
        }
        if let Some(v) = self.batch_size {
            w.batch_size = v;
        }
        if self.no_release_memory {
            w.release_memory = false;
        }
        if let Some(v) = self.route_cache_capacity {
            f.lookup.cache_capacity = v;
        }
        if let Some(v) = self.lookup_pool_size {
            f.lookup.pool_size = v;
        }
    }
}
