//! The closing tables: each figure of image-reflector beside Flux's from the same run, the
//! ratio ours/Flux and the target, then the baselines. Figures only: nothing here fails.

use crate::run::{Figures, Sweep, controller_writes};
use crate::{Args, Subject};

const MIB: f64 = 1024.0;

/// One row: how to read a figure, and its target against one Flux figure.
struct Row {
    name: String,
    value: fn(&Figures) -> Option<f64>,
    decimals: usize,
    target: &'static str,
    /// Whether the target applies to this run (the issue sets the memory target for
    /// 1,000 x 1,000, and the time target under the same API limits for every
    /// controller); a figure it does not apply to is printed as information.
    judged: bool,
    /// Whether ours meets the target against this Flux figure (None: no Flux to compare).
    met: fn(ours: f64, flux: Option<f64>) -> bool,
}

pub fn print(args: &Args, measured: &[Figures], sweep: &Sweep, apf: bool) {
    let ours = measured.iter().find(|f| f.subject == Subject::Ours);
    let fluxes: Vec<&Figures> = measured
        .iter()
        .filter(|f| f.subject != Subject::Ours)
        .collect();
    let small_load = args.repos <= 1000 && args.tags <= 1000;
    let rows = [
        Row {
            name: "time until all Ready (s)".into(),
            value: |f| Some(f.ready_s),
            decimals: 1,
            target: if apf {
                "no slower than Flux under the same API limits: not here (APF on: Flux has none)"
            } else {
                "no slower than Flux under the same API limits (ratio <= 1)"
            },
            judged: !apf,
            met: |o, f| f.is_none_or(|f| o <= f),
        },
        Row {
            name: "peak RSS, VmHWM (MiB)".into(),
            value: |f| Some(f.peak_rss_kib as f64 / MIB),
            decimals: 1,
            target: if small_load {
                "at most 1/4 of Flux's (ratio <= 0.25) and under 64 MiB"
            } else {
                "none at this load (the target is for 1,000 x 1,000)"
            },
            judged: small_load,
            met: |o, f| o < 64.0 && f.is_none_or(|f| o <= f / 4.0),
        },
        Row {
            name: "API writes per unchanged rescan".into(),
            value: Figures::writes_per_rescan,
            decimals: 2,
            target: "no more than Flux's (ratio <= 1)",
            judged: true,
            met: |o, f| f.is_none_or(|f| o <= f),
        },
        Row {
            name: format!("registry requests, {} s after restart", args.restart_window),
            value: |f| Some(f.restart_requests as f64),
            decimals: 0,
            target: "0",
            judged: true,
            met: |o, _| o == 0.0,
        },
    ];

    println!(
        "== results: {} ImageRepositories x {} tags; every controller with --kube-api-qps {} \
         --kube-api-burst {} --concurrent {}",
        args.repos, args.tags, args.kube_api_qps, args.kube_api_burst, args.concurrent
    );
    let mut header = vec!["figure".to_string(), Subject::Ours.title().to_string()];
    for f in &fluxes {
        header.push(f.subject.title().to_string());
        header.push("ours/Flux".to_string());
    }
    header.push("target".into());
    header.push("met".into());
    let mut table = vec![header];
    for row in &rows {
        let ours_value = ours.and_then(|f| (row.value)(f));
        let mut cells = vec![row.name.clone(), fmt(ours_value, row.decimals)];
        let mut verdicts = Vec::new();
        for f in &fluxes {
            let flux_value = (row.value)(f);
            cells.push(fmt(flux_value, row.decimals));
            cells.push(match (ours_value, flux_value) {
                (Some(o), Some(x)) if x > 0.0 => format!("{:.2}", o / x),
                (Some(0.0), Some(_)) => "0/0".into(),
                _ => "n/a".into(),
            });
            if let Some(o) = ours_value {
                verdicts.push((f.subject.title(), (row.met)(o, flux_value)));
            }
        }
        if fluxes.is_empty()
            && let Some(o) = ours_value
        {
            verdicts.push(("", (row.met)(o, None)));
        }
        cells.push(row.target.into());
        cells.push(if row.judged {
            verdict(&verdicts)
        } else {
            "-".into()
        });
        table.push(cells);
    }
    print_table(&table);
    println!("(ours/Flux below 1 is better; figures only: this benchmark never fails on a timing)");

    println!();
    println!("== baselines from the same run");
    println!(
        "   the registry swept directly (no controller, no API server): {:.2} s, {} requests",
        sweep.seconds, sweep.requests
    );
    for f in measured {
        print_baselines(args, f, apf);
    }
}

fn print_baselines(args: &Args, f: &Figures, apf: bool) {
    let repos = args.repos.max(1) as f64;
    let events = f.first_writes.only(|r| r.starts_with("events")).total();
    let others = f.first_writes.total() - events;
    println!("-- {}", f.subject.title());
    let created = format!("creating the objects alone took {:.1} s", f.created_s);
    if (apf && f.subject != Subject::Ours) || args.kube_api_qps <= 0.0 {
        println!(
            "   time to Ready: {created}; no client-side API limit ({others} writes + {events} events)"
        );
    } else {
        // One token bucket for the objects, another of the same size for events (as
        // controller-runtime's recorder has its own client; so has image-reflector's).
        let floor = others
            .max(events)
            .saturating_sub(args.kube_api_burst.into()) as f64
            / args.kube_api_qps;
        println!(
            "   time to Ready: {created}; the API limit's floor is {floor:.1} s ({others} writes + \
             {events} events on their own bucket, at {} qps after a burst of {})",
            args.kube_api_qps, args.kube_api_burst
        );
    }
    println!(
        "   first scans: {:.2} API writes per object ({}); registry {:.2} tags/list and {:.2} requests per repository",
        f.first_writes.total() as f64 / repos,
        f.first_writes,
        f.pages_per_scan(args.repos),
        f.first_requests as f64 / repos
    );
    println!(
        "   RSS: {:.1} MiB idle with no objects; {:.1} MiB peak after the restart (store read back)",
        f.idle_rss_kib as f64 / MIB,
        f.restart_rss_kib as f64 / MIB
    );
    println!(
        "   rescans: {:.0} in {} s, {} registry requests; the controller's writes {}; every write in the window: {}",
        f.rescans,
        args.rescan_window,
        f.rescan_requests,
        controller_writes(&f.rescan_writes),
        f.rescan_writes
    );
    println!(
        "   after the restart: API writes {}; {}/{} still Ready, {} revisions changed",
        f.restart_writes, f.still_ready, args.repos, f.revisions_changed
    );
}

fn fmt(v: Option<f64>, decimals: usize) -> String {
    v.map(|v| format!("{v:.decimals$}"))
        .unwrap_or_else(|| "n/a".into())
}

fn verdict(verdicts: &[(&str, bool)]) -> String {
    if verdicts.is_empty() {
        return "n/a".into();
    }
    if verdicts.iter().all(|(_, met)| *met) {
        return "yes".into();
    }
    let missed: Vec<&str> = verdicts
        .iter()
        .filter(|(_, met)| !met)
        .map(|(who, _)| *who)
        .collect();
    if missed.iter().all(|w| w.is_empty()) {
        "NO".into()
    } else {
        format!("NO (vs {})", missed.join(", "))
    }
}

fn print_table(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if i == 0 || i + 2 >= r.len() {
                    format!("{s:<w$}", w = widths[i])
                } else {
                    format!("{s:>w$}", w = widths[i])
                }
            })
            .collect();
        println!("  {}", line.join("  ").trim_end());
    }
}
