//! The benchmark harness of `bench/SPEC.md`: W1–W6, one JSON line per measurement.
//!
//! ```text
//! cargo run --release --example bench                          # everything, three runs (1 and 2 threads)
//! cargo run --release --example bench -- --workload W1 --size M --threads 1 --runs 1
//! ```
//!
//! Each line holds: workload, size, threads, mode, run, median_ms, min_ms, max_ms,
//! steps (how many were timed: `--steps`, or for a short step as many as fill two
//! seconds, at most 2,000, after `--warmup` untimed ones), gflops (the SPEC's
//! matrix-multiply FLOPs over the median), peak_gflops (sgemm with the engine's own
//! matrix multiply, measured in the same process: the best of the measurements at its
//! start and before each workload), peak_fraction, grad_norm (a checksum), nodes
//! (recorded per step: forward, loss and gradient nodes), and for W5 peak_rss_bytes,
//! rss_above_start_bytes and (one graph) peak_value_bytes (`Graph::peak_bytes`: the
//! values held at once), each W5 configuration in a fresh process. A training step
//! replays a graph recorded once (`mode: "replay"`): everything is recomputed from the
//! parameters and the batch; W5 and W6 also report the cost of recording
//! (`mode: "record"`).
//!
//! `--runs` (3 unless given) full runs go back to back, each thread count in a fresh
//! process; with more than one, a `summary` line per measurement ends the output: the
//! median of the runs' medians (and the list of them), the fraction of the best sgemm
//! rate any of the runs measured with that many threads. That is how
//! `bench/peers.md` reports the other systems: the machines are shared, and one run
//! can fall in a slow spell.

#[macro_use]
#[path = "common/out.rs"]
mod out;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use clap::Parser;
use unrolled::autograd::gemm;
use unrolled::autograd::{Graph, NodeId, ParamStore, Reduction, Rng};
use unrolled::layers::{
    recomputed_bptt, AnyOptimizer, AnyRecurrent, CellKind, CharRnn, Optimizer, RecurrentConfig, RunOptions,
};
use unrolled::ndarray::{Array2, ArrayD, IxDyn};

/// Runs the benchmark workloads.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// One workload (W1 … W6); all when absent.
    #[arg(long)]
    workload: Option<String>,
    /// One size (S, M, L); all the SPEC lists when absent.
    #[arg(long)]
    size: Option<String>,
    /// Threads of the matrix multiply; when absent, 2 and then 1 (each in a child process).
    #[arg(long)]
    threads: Option<usize>,
    /// Timed steps (at least 10 per the SPEC).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Warm-up steps.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Also print where a W1–W4 step's time goes, per op (one timed lean replay).
    #[arg(long)]
    profile: bool,
    /// Full runs back to back, each in fresh processes. With more than one, a summary
    /// line per measurement follows them: the median of the runs' medians over the
    /// best sgemm rate of all the runs (the statistic `bench/peers.md` reports).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Internal: this process measures for run number N of its parent's runs.
    #[arg(long, hide = true)]
    run: Option<usize>,
    /// Internal: run one W5 configuration (sequence length) in this process.
    #[arg(long, hide = true)]
    w5: Option<usize>,
    /// Internal: with --w5, truncate every this many steps.
    #[arg(long, hide = true)]
    chunk: Option<usize>,
    /// Internal: with --w5, full BPTT recomputing segments of this many steps.
    #[arg(long, hide = true)]
    recompute: Option<usize>,
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn normal(shape: &[usize], rng: &mut Rng) -> ArrayD<f32> {
    let n = shape.iter().product();
    ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|_| (0.1 * rng.normal()) as f32).collect()).expect("sized")
}

fn params_of(specs: &[unrolled::layers::ParamSpec], seed: u64) -> ParamStore<f32> {
    let mut rng = Rng::new(seed);
    let mut p = ParamStore::new();
    for s in specs {
        p.insert(s.name.clone(), normal(&s.shape, &mut rng));
    }
    p
}

/// The sgemm rate (GFLOP/s) of the engine's matrix multiply on square `n`.
fn sgemm(n: usize) -> f64 {
    let a = Array2::<f32>::from_elem((n, n), 0.5);
    let b = Array2::<f32>::from_elem((n, n), 0.25);
    let mut c = Array2::<f32>::zeros((n, n));
    let reps = if n >= 2048 { 3 } else { 30 };
    gemm::gemm(1.0, &a.view(), &b.view(), 0.0, &mut c.view_mut());
    let t = Instant::now();
    for _ in 0..reps {
        gemm::gemm(1.0, &a.view(), &b.view(), 0.0, &mut c.view_mut());
    }
    2.0 * (n as f64).powi(3) * reps as f64 / t.elapsed().as_secs_f64() / 1e9
}

/// The machine's sgemm peak as this process has measured it: the best rate of every
/// measurement so far. It is measured again before each workload, so a workload run
/// while the (shared) machine is fast is not set against a peak taken while it was
/// slow; taking the best keeps the fraction conservative.
struct Peak(f64);

impl Peak {
    /// Measures square 512 and 2048 again; the best rate so far.
    fn refresh(&mut self) -> f64 {
        self.0 = self.0.max(sgemm(512)).max(sgemm(2048));
        self.0
    }
}

/// The median, min and max of timed steps (ms), and how many there were.
#[derive(Clone, Copy)]
struct Times {
    median: f64,
    min: f64,
    max: f64,
    steps: usize,
}

impl Times {
    fn of(mut ms: Vec<f64>) -> Times {
        ms.sort_by(f64::total_cmp);
        Times { median: ms[ms.len() / 2], min: ms[0], max: ms[ms.len() - 1], steps: ms.len() }
    }

    /// One measurement (W5: one step in a fresh process).
    fn once(ms: f64) -> Times {
        Times { median: ms, min: ms, max: ms, steps: 1 }
    }
}

/// The time the timed steps of a short step fill at least (ms): a slow spell of the
/// shared machine shorter than half of it does not move the median (ten steps of
/// 100 ms, W2-L's, took 95 ms in one run and 110–170 ms in others).
const FILL_MS: f64 = 2000.0;
/// The most timed steps.
const MAX_STEPS: usize = 2000;

/// Runs `step` (which returns its `K` timings in ms) `--warmup` times, then times it:
/// the `--steps` asked for, or for a short step as many more as fill [`FILL_MS`]
/// (at most [`MAX_STEPS`]), so that the median of a short step is not decided by one
/// interruption, or one slow spell, among ten steps. Timings of each kind, as [`Times`].
fn timed<const K: usize>(args: &Args, mut step: impl FnMut() -> Res<[f64; K]>) -> Res<[Times; K]> {
    let mut last = [0.0; K];
    for _ in 0..args.warmup.max(1) {
        last = step()?;
    }
    let n = args.steps.max(1).max(((FILL_MS / last[0].max(1e-3)) as usize).min(MAX_STEPS));
    let mut ms: [Vec<f64>; K] = std::array::from_fn(|_| Vec::with_capacity(n));
    for _ in 0..n {
        for (m, t) in ms.iter_mut().zip(step()?) {
            m.push(t);
        }
    }
    Ok(ms.map(Times::of))
}

/// The milliseconds `f` takes.
fn clock(f: impl FnOnce() -> Res<()>) -> Res<f64> {
    let t0 = Instant::now();
    f()?;
    Ok(t0.elapsed().as_secs_f64() * 1e3)
}

fn grad_norm(g: &Graph<f32>, grads: &[NodeId]) -> Res<f64> {
    let mut s = 0.0;
    for &d in grads {
        s += g.value(d)?.iter().map(|&v| (v as f64).powi(2)).sum::<f64>();
    }
    Ok(s.sqrt())
}

/// Which of the parent's runs this process measures for (printed on every line).
static RUN: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// The parent: `--runs` full runs, each thread count in a fresh process (2 and then 1
/// unless `--threads` picks one), their lines printed as they come; then, with more
/// than one run, the summary lines.
fn runs(args: &Args) -> Res<()> {
    let exe = std::env::current_exe()?;
    let thread_counts = args.threads.map_or(vec![2, 1], |t| vec![t]);
    let mut lines = Vec::new();
    for run in 1..=args.runs.max(1) {
        for &threads in &thread_counts {
            let mut cmd = Command::new(&exe);
            cmd.args(["--threads", &threads.to_string(), "--run", &run.to_string()]);
            cmd.args(["--steps", &args.steps.to_string(), "--warmup", &args.warmup.to_string()]);
            for (flag, v) in [("--workload", &args.workload), ("--size", &args.size)] {
                if let Some(v) = v {
                    cmd.args([flag, v]);
                }
            }
            if args.profile {
                cmd.arg("--profile");
            }
            let mut child = cmd.stdout(Stdio::piped()).spawn()?;
            let out = child.stdout.take().ok_or("no stdout")?;
            for line in BufReader::new(out).lines() {
                let line = line?;
                outln!("{line}");
                lines.push(line);
            }
            if !child.wait()?.success() {
                return Err(format!("run {run} on {threads} thread(s) failed").into());
            }
        }
    }
    if args.runs > 1 {
        for l in summary(&lines) {
            outln!("{l}");
        }
    }
    Ok(())
}

/// One line per measurement over every run: the median of the runs' medians (the
/// middle one; the mean of the middle two for an even count), the lowest min and the
/// highest max, and the fraction of the best sgemm rate any run measured with that
/// many threads; W5's memory and W6's cost per node as the median of the runs'.
fn summary(lines: &[String]) -> Vec<String> {
    type Key = (String, String, u64, String);
    let mut best: std::collections::HashMap<u64, f64> = Default::default();
    let mut groups: Vec<(Key, Vec<serde_json::Value>)> = Vec::new();
    for l in lines {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else { continue };
        let (Some(threads), Some(peak)) = (v["threads"].as_u64(), v["peak_gflops"].as_f64()) else { continue };
        let b = best.entry(threads).or_insert(0.0);
        *b = b.max(peak);
        let Some(mode) = v["mode"].as_str() else { continue };
        let key = (
            v["workload"].as_str().unwrap_or("").into(),
            v["size"].as_str().unwrap_or("").into(),
            threads,
            mode.into(),
        );
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, g)) => g.push(v),
            None => groups.push((key, vec![v])),
        }
    }
    let median = |mut xs: Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        let n = xs.len();
        if n % 2 == 1 {
            xs[n / 2]
        } else {
            (xs[n / 2 - 1] + xs[n / 2]) / 2.0
        }
    };
    let field = |g: &[serde_json::Value], k: &str| g.iter().filter_map(|v| v[k].as_f64()).collect::<Vec<f64>>();
    let mut out = Vec::new();
    for ((workload, size, threads, mode), g) in groups {
        let medians = field(&g, "median_ms");
        let med = median(medians.clone());
        // The SPEC's FLOPs of the step, from any run's rate and time.
        let flops = g[0]["gflops"].as_f64().unwrap_or(0.0) * g[0]["median_ms"].as_f64().unwrap_or(0.0) / 1e3 * 1e9;
        let gflops = flops / (med / 1e3) / 1e9;
        let peak = best[&threads];
        let min = field(&g, "min_ms").into_iter().fold(f64::INFINITY, f64::min);
        let max = field(&g, "max_ms").into_iter().fold(0.0, f64::max);
        let list = medians.iter().map(|m| format!("{m}")).collect::<Vec<_>>().join(",");
        let mut extra = String::new();
        for k in ["us_per_node", "rss_above_start_bytes", "peak_rss_bytes", "peak_value_bytes"] {
            let xs = field(&g, k);
            if !xs.is_empty() {
                extra += &format!(",\"{k}\":{}", median(xs));
            }
        }
        out.push(format!(
            "{{\"summary\":\"median of {} runs\",\"workload\":\"{workload}\",\"size\":\"{size}\",\"threads\":{threads},\"mode\":\"{mode}\",\"median_ms\":{med:.4},\"run_medians_ms\":[{list}],\"min_ms\":{min:.4},\"max_ms\":{max:.4},\"gflops\":{gflops:.3},\"peak_gflops\":{peak:.2},\"peak_fraction\":{:.4},\"grad_norm\":{},\"nodes\":{}{extra}}}",
            g.len(),
            gflops / peak,
            g[0]["grad_norm"],
            g[0]["nodes"],
        ));
    }
    out
}

struct Line<'a> {
    workload: &'a str,
    size: &'a str,
    threads: usize,
    mode: &'a str,
    times: Times,
    flops: f64,
    peak: f64,
    norm: f64,
    nodes: usize,
}

fn print(l: &Line, extra: &str) {
    let t = l.times;
    let gflops = l.flops / (t.median / 1e3) / 1e9;
    outln!(
        "{{\"workload\":\"{}\",\"size\":\"{}\",\"threads\":{},\"mode\":\"{}\",\"run\":{},\"median_ms\":{:.4},\"min_ms\":{:.4},\"max_ms\":{:.4},\"steps\":{},\"gflops\":{:.3},\"peak_gflops\":{:.2},\"peak_fraction\":{:.4},\"grad_norm\":{:.6e},\"nodes\":{}{extra}}}",
        l.workload, l.size, l.threads, l.mode, RUN.get().copied().unwrap_or(1), t.median, t.min, t.max, t.steps, gflops, l.peak, gflops / l.peak, l.norm, l.nodes
    );
}

/// A recurrent training step (W1–W3): the graph recorded once, then replayed.
fn rnn_step(kind: CellKind, t: usize, b: usize, h: usize) -> Res<(Graph<f32>, ParamStore<f32>, Vec<NodeId>)> {
    let w = RnnWork::new(kind, t, b, h);
    let (g, grads) = w.record(false)?;
    Ok((g, w.p, grads))
}

/// A model, its weights and one batch of data: what a step records a graph over.
struct RnnWork {
    m: AnyRecurrent,
    p: ParamStore<f32>,
    x: ArrayD<f32>,
    y: ArrayD<f32>,
}

impl RnnWork {
    fn new(kind: CellKind, t: usize, b: usize, h: usize) -> Self {
        let m = AnyRecurrent::new(kind, "", RecurrentConfig::new(h, h));
        let p = params_of(&m.params::<f32>(), 1);
        let mut rng = Rng::new(2);
        let x = normal(&[t, b, h], &mut rng);
        let y = normal(&[t, b, h], &mut rng);
        RnnWork { m, p, x, y }
    }

    /// Records the step (forward, MSE loss, every weight's gradient); deferred when
    /// `deferred` (bookkeeping only, nothing computed).
    fn record(&self, deferred: bool) -> Res<(Graph<f32>, Vec<NodeId>)> {
        let mut g = Graph::with_capacity(64 * self.x.shape()[0]);
        g.set_deferred(deferred);
        let x = g.input(self.x.clone());
        let y = g.constant(self.y.clone());
        let out = self.m.forward(&mut g, &self.p, x, None, RunOptions::default())?;
        let loss = g.mse_loss(out.output, y)?;
        let grads = g.param_grads(loss)?.into_values().collect();
        Ok((g, grads))
    }
}

/// Times replays of `g` (each followed by `extra`): plain replays, or with `keep`,
/// [`Graph::replay_keeping`] of those nodes.
fn time_replay(
    g: &mut Graph<f32>,
    args: &Args,
    keep: Option<&[NodeId]>,
    mut extra: impl FnMut(&mut Graph<f32>) -> Res<()>,
) -> Res<Times> {
    let mut run = |g: &mut Graph<f32>| -> Res<()> {
        match keep {
            Some(k) => g.replay_keeping(k)?,
            None => g.replay()?,
        }
        extra(g)
    };
    let [t] = timed(args, || Ok([clock(|| run(g))?]))?;
    Ok(t)
}

/// One line per op kind: its share of a replayed step.
fn profile(g: &mut Graph<f32>, keep: &[NodeId], workload: &str, size: &str) -> Res<()> {
    // Warm, as the timed steps are: the lean plan made, the allocator's pools filled.
    for _ in 0..2 {
        g.replay_keeping(keep)?;
    }
    let p = g.replay_keeping_profile(keep)?;
    let total: f64 = p.iter().map(|o| o.time.as_secs_f64()).sum();
    for o in p.iter().take(20) {
        outln!(
            "{{\"profile\":\"{workload}\",\"size\":\"{size}\",\"op\":\"{}\",\"count\":{},\"ms\":{:.3},\"share\":{:.3}}}",
            o.op,
            o.count,
            o.time.as_secs_f64() * 1e3,
            o.time.as_secs_f64() / total
        );
    }
    Ok(())
}

fn sizes(args: &Args, all: &[&'static str]) -> Vec<&'static str> {
    all.iter().copied().filter(|s| args.size.as_deref().is_none_or(|w| w.eq_ignore_ascii_case(s))).collect()
}

fn w1_to_w3(args: &Args, threads: usize, peak: &mut Peak) -> Res<()> {
    for (w, kind, scale) in [("W1", CellKind::Lstm, 1.0), ("W2", CellKind::Rnn, 0.25), ("W3", CellKind::Gru, 0.75)] {
        if args.workload.as_deref().is_some_and(|x| !x.eq_ignore_ascii_case(w)) {
            continue;
        }
        let all: &[&str] = if threads == 1 { &["S", "M"] } else { &["S", "M", "L"] };
        for size in sizes(args, all) {
            let (t, b, h) = match size {
                "S" => (16, 1, 32),
                "M" => (50, 32, 128),
                _ => (100, 64, 512),
            };
            let (mut g, _p, grads) = rnn_step(kind, t, b, h)?;
            let peak = peak.refresh();
            let times = time_replay(&mut g, args, None, |_| Ok(()))?;
            if args.profile {
                profile(&mut g, &grads, w, size)?;
            }
            let flops = scale * 8.0 * (b * h * (2 * h + 3 * h) * t) as f64;
            let norm = grad_norm(&g, &grads)?;
            print(&Line { workload: w, size, threads, mode: "replay", times, flops, peak, norm, nodes: g.len() }, "");
            // The same step keeping only the gradients: unread nodes skipped, values released.
            let lean = time_replay(&mut g, args, Some(&grads), |_| Ok(()))?;
            let norm = grad_norm(&g, &grads)?;
            print(
                &Line {
                    workload: w,
                    size,
                    threads,
                    mode: "lean-replay",
                    times: lean,
                    flops,
                    peak,
                    norm,
                    nodes: g.len(),
                },
                "",
            );
        }
    }
    Ok(())
}

fn w4(args: &Args, threads: usize, peak: &mut Peak) -> Res<()> {
    if threads == 1 || args.workload.as_deref().is_some_and(|x| !x.eq_ignore_ascii_case("W4")) {
        return Ok(());
    }
    let (v, e, h, t, b) = (65, 64, 256, 100, 32);
    let m = CharRnn::new(CellKind::Lstm, v, e, h, 1);
    let mut p = params_of(&m.params::<f32>(), 3);
    let mut rng = Rng::new(4);
    let toks = ArrayD::from_shape_vec(IxDyn(&[t, b]), (0..t * b).map(|_| rng.below(v) as i64).collect())?;
    let tgts = ArrayD::from_shape_vec(IxDyn(&[t, b]), (0..t * b).map(|_| rng.below(v) as i64).collect())?;
    let mut g = Graph::new();
    let ti = g.index_input(toks);
    let yi = g.index_input(tgts);
    let out = m.forward(&mut g, &p, ti, None, RunOptions::default())?;
    let loss = g.cross_entropy(out.logits, yi, Reduction::Mean)?;
    let grads = g.param_grads(loss)?;
    let ids: Vec<NodeId> = grads.values().copied().collect();
    let flops = 8.0 * (b * h * (2 * e + 3 * h) * t) as f64 + 3.0 * 2.0 * (b * t * h * v) as f64;
    let p0 = p.clone();
    for (mode, keep) in [("replay", None), ("lean-replay", Some(&ids[..]))] {
        p = p0.clone();
        g.load_params(&p)?;
        let peak = peak.refresh();
        let mut opt = AnyOptimizer::by_name("adam", 1e-3)?;
        let times = time_replay(&mut g, args, keep, |g| {
            let gv = grads.iter().map(|(k, &id)| Ok((k.clone(), g.value(id)?.to_owned()))).collect::<Res<_>>()?;
            opt.step(&mut p, &gv)?;
            g.load_params(&p)?;
            Ok(())
        })?;
        if args.profile && keep.is_some() {
            profile(&mut g, &ids, "W4", "-")?;
        }
        let norm = grad_norm(&g, &ids)?;
        print(&Line { workload: "W4", size: "-", threads, mode, times, flops, peak, norm, nodes: g.len() }, "");
    }
    Ok(())
}

fn rss() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |k: &str| {
        s.lines().find(|l| l.starts_with(k)).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()).unwrap_or(0)
            * 1024
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

/// W5 in this (fresh) process: one training step over `t` steps, or truncated every `chunk`.
fn w5_child(t: usize, chunk: Option<usize>, threads: usize) -> Res<()> {
    let (b, h) = (8, 128);
    let m = AnyRecurrent::new(CellKind::Lstm, "", RecurrentConfig::new(h, h));
    let p = params_of(&m.params::<f32>(), 5);
    let mut rng = Rng::new(6);
    let len = chunk.unwrap_or(t);
    // The data counts in the memory (it is resident during the step) but is drawn
    // before the clock starts: it is the input, not the training step.
    let (start_rss, _) = rss();
    let data: Vec<(ArrayD<f32>, ArrayD<f32>)> =
        (0..t / len).map(|_| (normal(&[len, b, h], &mut rng), normal(&[len, b, h], &mut rng))).collect();
    let t0 = Instant::now();
    // Recorded deferred (bookkeeping only), then run keeping only the gradients, the loss
    // and the carried state: every other value is released after its last use.
    let mut g = Graph::with_capacity(32 * len);
    g.set_deferred(true);
    let x = g.input(ArrayD::zeros(IxDyn(&[len, b, h])));
    let y = g.input(ArrayD::zeros(IxDyn(&[len, b, h])));
    let h0 = g.scope("tbptt_cut").input_named("h0", ArrayD::zeros(IxDyn(&[1, b, h])));
    let c0 = g.scope("tbptt_cut").input_named("c0", ArrayD::zeros(IxDyn(&[1, b, h])));
    let out = m.forward(&mut g, &p, x, Some(&[h0, c0]), RunOptions::default())?;
    let loss = g.mse_loss(out.output, y)?;
    let grads: Vec<NodeId> = g.param_grads(loss)?.into_values().collect();
    let c_n = out.c_n().ok_or("no c_n")?;
    let mut keep = grads.clone();
    keep.extend([loss, out.h_n(), c_n]);
    let mut values_peak = 0;
    for (k, (xv, yv)) in data.into_iter().enumerate() {
        if k > 0 {
            let (hn, cn) = (g.value(out.h_n())?.to_owned(), g.value(c_n)?.to_owned());
            g.set_value(h0, hn)?;
            g.set_value(c0, cn)?;
        }
        g.set_value(x, xv)?;
        g.set_value(y, yv)?;
        g.replay_keeping(&keep)?;
        values_peak = values_peak.max(g.peak_bytes());
    }
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let (_, hwm) = rss();
    let peak = sgemm(512).max(sgemm(2048)); // after the memory reading: its matrices are not the workload's
    let flops = 8.0 * (b * h * (2 * h + 3 * h) * t) as f64;
    let size = match chunk {
        Some(c) => format!("T={t},chunk={c}"),
        None => format!("T={t}"),
    };
    let extra = format!(
        ",\"peak_rss_bytes\":{hwm},\"rss_above_start_bytes\":{},\"peak_value_bytes\":{values_peak}",
        hwm.saturating_sub(start_rss)
    );
    let norm = grad_norm(&g, &grads)?;
    print(
        &Line {
            workload: "W5",
            size: &size,
            threads,
            mode: "record+replay",
            times: Times::once(ms),
            flops,
            peak,
            norm,
            nodes: g.len(),
        },
        &extra,
    );
    Ok(())
}

/// W5 at full BPTT with recomputed segments ([`recomputed_bptt`]): O(√T) memory.
fn w5_recompute(t: usize, segment: usize, threads: usize) -> Res<()> {
    let (start_rss, _) = rss();
    let (b, h) = (8, 128);
    let m = AnyRecurrent::new(CellKind::Lstm, "", RecurrentConfig::new(h, h));
    let p = params_of(&m.params::<f32>(), 5);
    let mut rng = Rng::new(6);
    let x = normal(&[t, b, h], &mut rng);
    let y = normal(&[t, b, h], &mut rng);
    let n = (t * b * h) as f64;
    let t0 = Instant::now();
    let step = recomputed_bptt(&m, &p, &x, Some(&y), None, segment, |g, out, y| {
        let d = g.sub(out, y.expect("targets"))?;
        let d = g.square(d)?;
        let s = g.sum_all(d)?;
        g.affine(s, 1.0 / n, 0.0)
    })?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let (_, hwm) = rss();
    let peak = sgemm(512).max(sgemm(2048));
    let flops = 8.0 * (b * h * (2 * h + 3 * h) * t) as f64;
    let norm = step.grads.values().flat_map(|g| g.iter()).map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
    let size = format!("T={t},recompute={segment}");
    let extra = format!(",\"peak_rss_bytes\":{hwm},\"rss_above_start_bytes\":{}", hwm.saturating_sub(start_rss));
    print(
        &Line {
            workload: "W5",
            size: &size,
            threads,
            mode: "recompute",
            times: Times::once(ms),
            flops,
            peak,
            norm,
            nodes: 0,
        },
        &extra,
    );
    Ok(())
}

fn w5(args: &Args, threads: usize) -> Res<()> {
    if threads == 1 || args.workload.as_deref().is_some_and(|x| !x.eq_ignore_ascii_case("W5")) {
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    for (t, chunk, segment) in
        [(100, None, None), (1000, None, None), (10000, None, None), (10000, Some(100), None), (10000, None, Some(100))]
    {
        let mut cmd = Command::new(&exe);
        cmd.args(["--threads", &threads.to_string(), "--w5", &t.to_string()]);
        cmd.args(["--run", &RUN.get().copied().unwrap_or(1).to_string()]);
        if let Some(c) = chunk {
            cmd.args(["--chunk", &c.to_string()]);
        }
        if let Some(s) = segment {
            cmd.args(["--recompute", &s.to_string()]);
        }
        let out = cmd.output()?;
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            outln!("{l}");
        }
        if !out.status.success() {
            eprintln!("W5 T={t}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    Ok(())
}

/// W6: the cost of one recorded op, recording (and replaying) a 1000-step tanh RNN.
fn w6(args: &Args, threads: usize, peak: &mut Peak) -> Res<()> {
    if threads != 1 || args.workload.as_deref().is_some_and(|x| !x.eq_ignore_ascii_case("W6")) {
        return Ok(());
    }
    // The model, its weights and the data are made before the clock starts: the step
    // records a graph over them (as a training loop does), it does not draw them.
    let work = RnnWork::new(CellKind::Rnn, 1000, 1, 8);
    let peak = peak.refresh();
    // The graph of the last step is dropped at the next one, outside the clock.
    let mut last = None;
    let [rec] = timed(args, || {
        let t0 = Instant::now();
        let step = work.record(false)?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        last = Some(step);
        Ok([ms])
    })?;
    let (mut g, grads) = last.ok_or("no step")?;
    let n = g.len();
    let flops = 0.25 * 8.0 * (8 * (2 * 8 + 3 * 8) * 1000) as f64;
    let norm = grad_norm(&g, &grads)?;
    let per = |t: Times| format!(",\"us_per_node\":{:.4}", t.median * 1e3 / n as f64);
    print(
        &Line { workload: "W6", size: "-", threads, mode: "record", times: rec, flops, peak, norm, nodes: n },
        &per(rec),
    );
    // Bookkeeping alone: recorded deferred, nothing computed; then the lean run of it.
    let mut lean_norm = 0.0;
    let [d, l] = timed(args, || {
        let t0 = Instant::now();
        let (mut gd, gd_grads) = work.record(true)?;
        let recorded = t0.elapsed().as_secs_f64() * 1e3;
        gd.replay_keeping(&gd_grads)?;
        let total = t0.elapsed().as_secs_f64() * 1e3;
        lean_norm = grad_norm(&gd, &gd_grads)?;
        Ok([recorded, total])
    })?;
    print(
        &Line { workload: "W6", size: "-", threads, mode: "record-deferred", times: d, flops, peak, norm, nodes: n },
        &per(d),
    );
    print(
        &Line {
            workload: "W6",
            size: "-",
            threads,
            mode: "deferred+lean-run",
            times: l,
            flops,
            peak,
            norm: lean_norm,
            nodes: n,
        },
        &per(l),
    );
    let rep = time_replay(&mut g, args, None, |_| Ok(()))?;
    print(
        &Line { workload: "W6", size: "-", threads, mode: "replay", times: rep, flops, peak, norm, nodes: n },
        &per(rep),
    );
    let lr = time_replay(&mut g, args, Some(&grads), |_| Ok(()))?;
    print(
        &Line { workload: "W6", size: "-", threads, mode: "lean-replay", times: lr, flops, peak, norm, nodes: n },
        &per(lr),
    );
    Ok(())
}

/// `Some(s)` as a JSON string, `None` as `null`.
fn json_str(s: Option<&str>) -> String {
    s.map_or_else(|| "null".to_string(), |s| format!("\"{s}\""))
}

fn main() -> Res<()> {
    let args = Args::parse();
    let Some(run) = args.run else {
        return runs(&args);
    };
    let _ = RUN.set(run);
    let threads = args.threads.unwrap_or(2);
    // The matrix multiply reads its thread count once, at its first use.
    std::env::set_var("MATMUL_NUM_THREADS", threads.to_string());
    std::env::set_var("OPENBLAS_NUM_THREADS", threads.to_string());
    // SAFETY: no other thread runs yet (the workers start at the first product).
    let named = unsafe { gemm::name_cpu_for_openblas() };
    if let Some(t) = args.w5 {
        if let Some(s) = args.recompute {
            return w5_recompute(t, s, threads);
        }
        return w5_child(t, args.chunk, threads);
    }
    let (g512, g2048) = (sgemm(512), sgemm(2048));
    let peak = g512.max(g2048);
    outln!(
        "{{\"workload\":\"sgemm\",\"threads\":{threads},\"run\":{run},\"backend\":\"{}\",\"blas_core\":{},\"blas_core_named\":{},\"blas_passed_over\":{},\"gflops_512\":{g512:.2},\"gflops_2048\":{g2048:.2},\"peak_gflops\":{peak:.2}}}",
        gemm::backend(),
        json_str(gemm::openblas_core()),
        named.is_some(),
        json_str(gemm::openblas_passed_over())
    );
    let mut peak = Peak(peak);
    w1_to_w3(&args, threads, &mut peak)?;
    w4(&args, threads, &mut peak)?;
    w5(&args, threads)?;
    w6(&args, threads, &mut peak)?;
    Ok(())
}
