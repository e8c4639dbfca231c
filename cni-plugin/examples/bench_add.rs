//! A small benchmark driver for `cni-plugin/bench/add.sh`: runs each variant (a program, its
//! arguments and a file for stdin) round-robin, so every variant sees the same drift, and prints
//! a Markdown table of medians and percentiles. No shell sits between the timer and the process.
//!
//! Usage: bench_add RUNS 'NAME|PROGRAM [ARGS…]|STDIN_FILE' …

use std::fs::File;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

struct Variant {
    name: String,
    argv: Vec<String>,
    stdin: String,
    times: Vec<f64>,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(runs) = args.first().and_then(|r| r.parse::<usize>().ok()) else {
        eprintln!("usage: bench_add RUNS 'NAME|PROGRAM [ARGS…]|STDIN_FILE' …");
        return ExitCode::FAILURE;
    };
    let mut vs: Vec<Variant> = Vec::new();
    for spec in &args[1..] {
        let parts: Vec<&str> = spec.splitn(3, '|').collect();
        let [name, cmd, stdin] = parts[..] else {
            eprintln!("bad variant {spec:?}");
            return ExitCode::FAILURE;
        };
        vs.push(Variant {
            name: name.into(),
            argv: cmd.split_whitespace().map(String::from).collect(),
            stdin: stdin.into(),
            times: Vec::with_capacity(runs),
        });
    }
    // Warm-up: page cache, and a failing variant stops the run here.
    for v in &vs {
        for _ in 0..5 {
            if let Err(e) = run_once(v) {
                eprintln!("{}: {e}", v.name);
                return ExitCode::FAILURE;
            }
        }
    }
    for _ in 0..runs {
        for v in vs.iter_mut() {
            match run_once(v) {
                Ok(t) => v.times.push(t),
                Err(e) => {
                    eprintln!("{}: {e}", v.name);
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    println!("| variant | median | p10 | p90 | runs |");
    println!("|---|---|---|---|---|");
    let mut medians = Vec::new();
    for v in &mut vs {
        v.times.sort_by(f64::total_cmp);
        let m = pct(&v.times, 0.5);
        medians.push(m);
        println!(
            "| {} | {:.2} ms | {:.2} ms | {:.2} ms | {} |",
            v.name,
            m,
            pct(&v.times, 0.1),
            pct(&v.times, 0.9),
            v.times.len()
        );
    }
    ExitCode::SUCCESS
}

fn run_once(v: &Variant) -> Result<f64, String> {
    let stdin = File::open(&v.stdin).map_err(|e| format!("{}: {e}", v.stdin))?;
    let t = Instant::now();
    let st = Command::new(&v.argv[0])
        .args(&v.argv[1..])
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("{}: {e}", v.argv[0]))?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if !st.success() {
        return Err(format!("exited {st}"));
    }
    Ok(ms)
}
