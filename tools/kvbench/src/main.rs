//! kvbench: load generator for ringkv (binary protocol) and RESP2 servers.
//!
//! Closed loop (`--connections C --pipeline P`): every connection keeps P requests in flight.
//! Open loop (`--rate R`): request i is due at t0 + i/R (spread over the connections) and its
//! latency counts from that intended time, not from when it could actually be sent, so a
//! server that falls behind shows its queueing delay (no coordinated omission, as in wrk2).

mod args;
mod engine;
mod plot;
mod report;
mod resp;
mod stats;
mod workload;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use args::Args;
use engine::{Plan, Sched};
use stats::{Live, Recorder, Totals};
use workload::Generator;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(out) = &args.plot {
        return match plot::plot_files(&args.inputs, out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kvbench: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Err(e) = args.validate() {
        eprintln!("kvbench: {e}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kvbench: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let json_to_stdout = args.json.as_deref().is_some_and(|p| p.as_os_str() == "-");
    // With the JSON on stdout, everything for humans goes to stderr.
    let mut human: Box<dyn Write + Send> = if json_to_stdout {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    if !args.quiet {
        let _ = writeln!(
            human,
            "kvbench: {} connections to {} ({}), consistency {} (takes effect when the cluster lands)",
            args.connections,
            args.addr,
            args.proto.name(),
            args.consistency.name()
        );
    }

    // Connect everything before the clock starts.
    let tls = match engine::tls_config(&args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("kvbench: {e}");
            return ExitCode::from(2);
        }
    };
    let connects = (0..args.connections).map(|_| engine::connect(&args, tls.as_ref()));
    let mut conns = Vec::with_capacity(args.connections);
    for r in futures::future::join_all(connects).await {
        match r {
            Ok(c) => conns.push(c),
            Err(e) => {
                eprintln!(
                    "kvbench: cannot connect to {} ({} protocol): {e}",
                    args.addr,
                    args.proto.name()
                );
                return ExitCode::from(2);
            }
        }
    }

    let shared = workload::Shared::new(&args);
    let live = Live::new();
    let t0 = Instant::now();
    let plan = Plan::new(&args, t0);
    let mut tasks = Vec::with_capacity(conns.len());
    for (i, conn) in conns.into_iter().enumerate() {
        let sched = Sched::new(plan.clone(), i);
        let gen = Generator::new(shared.clone(), args.seed.wrapping_add(i as u64));
        let rec = Recorder::new(plan.warmup_end, live.clone());
        tasks.push(tokio::spawn(engine::drive(
            conn,
            sched,
            gen,
            rec,
            args.timeout,
        )));
    }

    // Ctrl-C stops sending; the replies in flight are still awaited and reported.
    {
        let plan = plan.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                plan.stop();
            }
        });
    }
    let pacer = plan.start_pacer();
    let progress = start_progress(&args, &plan, &live);

    let mut recorders = Vec::with_capacity(tasks.len());
    let mut panicked = None;
    for t in tasks {
        match t.await {
            Ok(rec) => recorders.push(rec),
            Err(e) => panicked = Some(format!("a connection task failed: {e}")),
        }
    }
    if let Some((bar, ticker)) = progress {
        ticker.abort();
        bar.finish_and_clear();
    }
    if let Some(msg) = panicked {
        plan.abort(msg);
    }
    // The pacer ends by itself at the end of the schedule; after a stop, within 20 ms.
    plan.stop();
    if let Some(p) = pacer {
        let _ = p.join();
    }

    let totals = Totals::merge(recorders);
    let elapsed = totals.last_completion.map_or(0.0, |t| {
        t.saturating_duration_since(plan.warmup_end).as_secs_f64()
    });
    let missed = plan
        .scheduled_slots()
        .map_or(0, |s| s.saturating_sub(totals.requests()));
    let series = std::mem::take(&mut *live.series.lock().unwrap_or_else(|e| e.into_inner()));
    let result = report::build(
        &args,
        &totals,
        &series,
        report::Extra {
            elapsed_secs: elapsed,
            missed: if plan.fatal().is_some() { 0 } else { missed },
            error: plan.fatal(),
        },
    );

    let _ = report::print_summary(&result, &mut human);
    let _ = human.flush();
    let mut code = if result.error.is_some() {
        eprintln!(
            "kvbench: the run ended early: {}",
            result.error.as_deref().unwrap_or("")
        );
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    };
    if let Some(path) = &args.json {
        let text = match serde_json::to_string_pretty(&result) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("kvbench: cannot encode the JSON result: {e}");
                return ExitCode::from(2);
            }
        };
        let written = if json_to_stdout {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{text}").and_then(|_| out.flush())
        } else {
            std::fs::write(path, text + "\n")
        };
        if let Err(e) = written {
            eprintln!("kvbench: cannot write {}: {e}", path.display());
            code = ExitCode::from(2);
        }
    }
    if let Some(path) = &args.hdr_out {
        if let Err(e) = report::write_hdr(&totals.all, path) {
            eprintln!("kvbench: {e}");
            code = ExitCode::from(2);
        }
    }
    code
}

/// The live progress bar, unless stdout is not a terminal or --quiet.
fn start_progress(
    args: &Args,
    plan: &Arc<Plan>,
    live: &Arc<Live>,
) -> Option<(ProgressBar, tokio::task::JoinHandle<()>)> {
    if args.quiet || !std::io::stdout().is_terminal() {
        return None;
    }
    let (bar, count_mode) = match args.requests {
        Some(n) => (ProgressBar::new(n), true),
        None => {
            let total = args.warmup + args.run_duration().unwrap_or_default();
            (ProgressBar::new(total.as_millis() as u64), false)
        }
    };
    bar.set_draw_target(ProgressDrawTarget::stderr());
    let template = if count_mode {
        "{elapsed_precise} [{bar:40}] {pos}/{len} requests {msg}"
    } else {
        "{elapsed_precise} [{bar:40}] {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    let (plan, live, b) = (plan.clone(), live.clone(), bar.clone());
    let ticker = tokio::spawn(async move {
        let mut last_n = 0u64;
        let mut last_t = Instant::now();
        let mut interval = tokio::time::interval(Duration::from_millis(250));
        loop {
            interval.tick().await;
            let n = live.completed.load(Ordering::Relaxed);
            let errors = live.errors.load(Ordering::Relaxed);
            let now = Instant::now();
            let dt = now.duration_since(last_t).as_secs_f64();
            let rate = if dt > 0.0 {
                (n - last_n) as f64 / dt
            } else {
                0.0
            };
            (last_n, last_t) = (n, now);
            let phase = if now < plan.warmup_end {
                "warmup, "
            } else {
                ""
            };
            if count_mode {
                b.set_position(n);
            } else {
                b.set_position(now.duration_since(plan.t0).as_millis() as u64);
            }
            b.set_message(format!("{phase}{rate:.0} req/s, {n} done, {errors} errors"));
        }
    });
    Some((bar, ticker))
}
