//! The `process_*` series Prometheus' client libraries export (and Flux's dashboards and
//! alerts read): CPU time, resident and virtual memory, open and maximum file
//! descriptors, start time. Read from `/proc/self` at each scrape; on a system without
//! `/proc` the series are simply absent.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Linux reports CPU times in clock ticks of `USER_HZ`, which is 100 on every
/// architecture Linux supports for user space.
const TICKS_PER_SECOND: f64 = 100.0;

/// The process collector; register it with `Registry::register_collector`.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// What one scrape read.
#[derive(Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<f64>,
    pub virtual_bytes: Option<f64>,
    pub start_time_seconds: Option<f64>,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
}

impl ProcessStats {
    /// Reads `/proc/self`.
    pub fn read() -> ProcessStats {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let boot = std::fs::read_to_string("/proc/stat").ok();
        let limits = std::fs::read_to_string("/proc/self/limits").ok();
        let status = std::fs::read_to_string("/proc/self/status").ok();
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as f64);
        let mut stats = parse(stat.as_deref(), boot.as_deref(), limits.as_deref());
        stats.open_fds = open_fds;
        // VmRSS in kB, which needs no page size.
        if let Some(kb) = status.as_deref().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        }) {
            stats.resident_bytes = Some(kb * 1024.0);
        }
        stats
    }
}

/// Parses `/proc/self/stat`, `/proc/stat` and `/proc/self/limits` (see proc(5)).
pub fn parse(stat: Option<&str>, boot: Option<&str>, limits: Option<&str>) -> ProcessStats {
    let mut out = ProcessStats::default();
    // The command name (field 2) is in parentheses and may hold spaces; count from ')'.
    let fields: Vec<&str> = stat
        .and_then(|s| s.rsplit_once(')'))
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After ')': field 3 (state) is at index 0, so field N is at index N - 3.
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        out.cpu_seconds = Some((utime + stime) / TICKS_PER_SECOND);
    }
    out.virtual_bytes = field(23);
    // Resident pages; `read` prefers VmRSS from /proc/self/status, which is in kB.
    out.resident_bytes = field(24).map(|pages| pages * 4096.0);
    let boot_time = boot.and_then(|b| {
        b.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    if let (Some(boot_time), Some(start_ticks)) = (boot_time, field(22)) {
        out.start_time_seconds = Some(boot_time + start_ticks / TICKS_PER_SECOND);
    }
    out.max_fds = limits.and_then(|l| {
        l.lines()
            .find(|line| line.starts_with("Max open files"))
            .and_then(|line| line.split_whitespace().nth(3))
            .and_then(|soft| soft.parse::<f64>().ok())
    });
    out
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = ProcessStats::read();
        if let Some(v) = stats.cpu_seconds {
            let metric = ConstCounter::new(v);
            metric.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                metric.metric_type(),
            )?)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                stats.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                stats.virtual_bytes,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                stats.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                stats.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                stats.max_fds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let metric = ConstGauge::new(v);
                metric.encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    metric.metric_type(),
                )?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_give_cpu_memory_start_time_and_fd_limit() {
        // Fields 14-15 utime/stime 150 and 50 ticks, 22 starttime 1000 ticks, 23 vsize,
        // 24 rss 256 pages; the command name holds a space and a parenthesis.
        let stat = "4242 (image (reflector) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 8 0 1000 123456789 256 18446744073709551615";
        let boot = "cpu  1 2 3\nbtime 1764633600\nprocesses 10\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1048576              1048576              files\n";
        let s = parse(Some(stat), Some(boot), Some(limits));
        assert_eq!(s.cpu_seconds, Some(2.0));
        assert_eq!(s.start_time_seconds, Some(1764633610.0));
        assert_eq!(s.virtual_bytes, Some(123456789.0));
        assert_eq!(s.resident_bytes, Some(256.0 * 4096.0));
        assert_eq!(s.max_fds, Some(1048576.0));
        assert_eq!(parse(None, None, None), ProcessStats::default());
    }

    #[test]
    fn this_process_reads_itself() {
        let s = ProcessStats::read();
        assert!(s.cpu_seconds.is_some() && s.resident_bytes.is_some_and(|r| r > 0.0));
        assert!(s.open_fds.is_some_and(|n| n >= 3.0), "{s:?}");
    }
}
