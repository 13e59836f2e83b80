//! The chaos run's figures, printed as the README's table rows.

use std::time::Duration;

/// What one `kill -9` interrupted, seen while image-reflector was dead.
pub struct Kill {
    /// How long after the work was asked for it came.
    pub delay: Duration,
    /// Objects whose requested scan had not finished (mid-scan, or queued).
    pub pending_scans: usize,
    /// Temporary files of the store left behind (mid-store-write).
    pub temp_files: usize,
    /// Objects whose store entry was newer than their status (between the store write
    /// and the status write).
    pub store_ahead_of_status: usize,
}

pub struct Report {
    seed: u64,
    repositories: usize,
    pub kills: Vec<Kill>,
    pub settled_after_kills: Option<Duration>,
    faults: Vec<(String, Duration, String)>,
    pub full_disk: Option<(Duration, String)>,
    pub entries_verified: usize,
    pub requests_after_restart: Option<(usize, u64)>,
    pub total: Duration,
}

impl Report {
    pub fn new(seed: u64, repositories: usize) -> Report {
        Report {
            seed,
            repositories,
            kills: Vec::new(),
            settled_after_kills: None,
            faults: Vec::new(),
            full_disk: None,
            entries_verified: 0,
            requests_after_restart: None,
            total: Duration::ZERO,
        }
    }

    /// A fault, the time from its end to every object Ready, and what a condition said.
    pub fn fault(&mut self, what: &str, recovery: Duration, said: &str) {
        self.faults
            .push((what.to_string(), recovery, said.to_string()));
    }

    pub fn print(&self) {
        let count = |f: fn(&Kill) -> usize| self.kills.iter().filter(|k| f(k) > 0).count();
        let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
        println!();
        println!(
            "chaos: {} ImageRepositories, seed {}, {} in all",
            self.repositories,
            self.seed,
            secs(self.total)
        );
        println!("| case | result |");
        println!("|---|---|");
        let delays = self.kills.iter().map(|k| k.delay.as_millis());
        let (first, last) = (delays.clone().min().unwrap_or(0), delays.max().unwrap_or(0));
        println!(
            "| `kill -9` at random moments ({first}-{last} ms after work was asked) | {n} of {n} survived (restarted and Ready each time); {scan} while scans were unfinished, {tmp} mid-store-write (a temporary file left), {status} between a store write and its status write; every object healed {settled} after the last restart |",
            n = self.kills.len(),
            scan = count(|k| k.pending_scans),
            tmp = count(|k| k.temp_files),
            status = count(|k| k.store_ahead_of_status),
            settled = self.settled_after_kills.map(secs).unwrap_or_default(),
        );
        for (what, recovery, said) in &self.faults {
            let said = if said.is_empty() {
                String::new()
            } else {
                format!("; meanwhile Ready=False: \"{said}\"")
            };
            println!(
                "| {what} | no crash; every object Ready {} after the start{said} |",
                secs(*recovery)
            );
        }
        if let Some((recovery, said)) = &self.full_disk {
            println!(
                "| full disk under `--storage-path` (tmpfs) | every scan failed with Ready=False \"{said}\"; no stored entry changed; every object Ready with its new tag {} after space returned |",
                secs(*recovery)
            );
        }
        if let Some((requests, writes)) = self.requests_after_restart {
            println!(
                "| after the last restart | {} store entries verified, 0 orphaned, each matching its object's status and the registry's tags; {requests} registry requests and {writes} status writes before the interval |",
                self.entries_verified
            );
        }
    }
}
