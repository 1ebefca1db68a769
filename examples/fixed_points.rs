//! Recurrent networks as dynamical systems: fixed points and their stability.
//!
//! For an autonomous map `h(t+1) = f(h(t))`, a fixed point `h* = f(h*)` is found by
//! Newton's method on the graph's own Jacobian, and is stable when every
//! eigenvalue of `∂f/∂h` at `h*` lies inside the unit circle. The lectures' 1-D
//! cases come first: `h(t+1) = 0.8 h(t) + 1` converges to 5 from anywhere, while
//! `h(t+1) = 1.4 h(t) + 1` has the fixed point -2.5 and runs away from it. Then a
//! tanh RNN is trained on the 1-bit flip-flop task (output the sign of the last
//! input pulse), and its fixed points with the input at zero are found: the two
//! memories are stable fixed points, separated by an unstable one.
//!
//! ```text
//! cargo run --release --example fixed_points -- [--hidden 16] [--train-steps 400] [--out out/fixed_points]
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;
use unrolled::autograd::{Graph, NodeId, ParamStore, Rng};
use unrolled::layers::dynamics::{find_fixed_point, fixed_points, iterate, FixedPoint, NewtonOptions};
use unrolled::layers::plot::plot_loss_curve;
use unrolled::layers::{
    init_params, split_steps, unroll, AnyOptimizer, Cell, Elman, Init, Nonlinearity, Optimizer, ParamSpec, Role, State,
    UnrollOptions,
};
use unrolled::ndarray::{ArrayD, Axis, IxDyn};

/// Find the fixed points of recurrent maps and report their stability.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Hidden units of the trained RNN.
    #[arg(long, default_value_t = 16)]
    hidden: usize,
    /// Training steps on the flip-flop task.
    #[arg(long, default_value_t = 400)]
    train_steps: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to write the fixed points (JSON) and the training loss curve (SVG).
    #[arg(long, default_value = "out/fixed_points")]
    out: PathBuf,
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn describe(fp: &FixedPoint) -> String {
    let eig: Vec<String> = fp
        .eigenvalues
        .iter()
        .take(3)
        .map(|e| if e.im.abs() < 1e-12 { format!("{:.4}", e.re) } else { format!("{:.4}{:+.4}i", e.re, e.im) })
        .collect();
    format!(
        "{} (spectral radius {:.4}; leading eigenvalues {}; {} Newton iterations, residual {:.1e})",
        if fp.stable { "stable" } else { "unstable" },
        fp.spectral_radius,
        eig.join(", "),
        fp.iterations,
        fp.residual
    )
}

/// `h ↦ a h + b` in one dimension.
fn affine_1d(a: f64, b: f64) -> impl FnMut(&mut Graph<f64>, NodeId) -> unrolled::autograd::Result<NodeId> {
    move |g, h| {
        let (a, b) = (g.scalar(a), g.scalar(b));
        let ah = g.mul(h, a)?;
        g.add(ah, b)
    }
}

/// One flip-flop batch: pulses of ±1 with probability 0.1 (always one at t = 0), and
/// the target: the sign of the last pulse. Shapes `[T, B, 1]`.
fn flip_flop(steps: usize, batch: usize, rng: &mut Rng) -> (ArrayD<f64>, ArrayD<f64>) {
    let mut x = ArrayD::zeros(IxDyn(&[steps, batch, 1]));
    let mut y = ArrayD::zeros(IxDyn(&[steps, batch, 1]));
    for b in 0..batch {
        let mut last = 0.0;
        for t in 0..steps {
            if t == 0 || rng.uniform() < 0.1 {
                last = if rng.uniform() < 0.5 { -1.0 } else { 1.0 };
                x[[t, b, 0]] = last;
            }
            y[[t, b, 0]] = last;
        }
    }
    (x, y)
}

fn main() -> Res<()> {
    let args = Args::parse();
    if args.hidden == 0 {
        return Err("--hidden must be at least 1".into());
    }
    let opts = NewtonOptions::default();
    let mut report: BTreeMap<String, Vec<FixedPoint>> = BTreeMap::new();

    println!("1-D maps (the lectures' examples):");
    for (a, b) in [(0.8, 1.0), (1.4, 1.0)] {
        let mut map = affine_1d(a, b);
        let fp = find_fixed_point(&mut map, &[0.0], opts)?;
        let path = iterate(&mut map, &[0.0], 10)?;
        let shown: Vec<String> = path.iter().map(|h| format!("{:.3}", h[0])).collect();
        println!("  h(t+1) = {a} h(t) + {b}: fixed point h* = {:.6}, {}", fp.h[0], describe(&fp));
        println!("    iterating from h(0) = 0: {}", shown.join(", "));
        report.insert(format!("{a} h + {b}"), vec![fp]);
    }

    // A tanh RNN trained on the flip-flop task.
    let h = args.hidden;
    let cell = Elman::new("rnn.", 0, false, 1, h, Nonlinearity::Tanh);
    let mut specs = <Elman as Cell<f64>>::params(&cell);
    specs.push(ParamSpec::new("fc.weight", &[1, h], Role::InputWeight, 1, h));
    specs.push(ParamSpec::new("fc.bias", &[1], Role::Bias, 1, h));
    let mut params = ParamStore::<f64>::new();
    init_params(&specs, &mut params, &Init::torch(args.seed));
    let (steps, batch) = (50, 32);
    let mut rng = Rng::new(args.seed + 1);
    let mut g = Graph::<f64>::new();
    let (x0, y0) = flip_flop(steps, batch, &mut rng);
    let x = g.input_named("x", x0);
    let y = g.input_named("y", y0);
    let xs = split_steps(&mut g, x)?;
    let run = unroll(&cell, &mut g, &params, &xs, None, UnrollOptions::default())?;
    let hs = g.stack(&run.outputs, 0)?;
    let (w, b) = (g.param(&params, "fc.weight")?, g.param(&params, "fc.bias")?);
    let out = g.linear(hs, w, Some(b))?;
    let loss = g.mse_loss(out, y)?;
    let grads = g.param_grads(loss)?;
    let mut opt = AnyOptimizer::by_name("adam", 1e-2)?;
    let mut losses = Vec::with_capacity(args.train_steps);
    for step in 0..args.train_steps {
        if step > 0 {
            let (xb, yb) = flip_flop(steps, batch, &mut rng);
            g.set_value(x, xb)?;
            g.set_value(y, yb)?;
            g.load_params(&params)?;
            g.replay()?;
        }
        losses.push(g.scalar_value(loss)?);
        let gv =
            grads.iter().map(|(k, &id)| Ok((k.clone(), g.value(id)?.to_owned()))).collect::<Res<BTreeMap<_, _>>>()?;
        opt.step(&mut params, &gv)?;
    }
    println!(
        "\ntanh RNN (H={h}) trained {} steps on the 1-bit flip-flop task: loss {:.4} -> {:.4}",
        args.train_steps,
        losses.first().copied().unwrap_or(f64::NAN),
        losses.last().copied().unwrap_or(f64::NAN)
    );

    // Fixed points of h ↦ tanh(W_ih·0 + b_ih + b_hh + W_hh h): the network with no input.
    let (fc_w, fc_b) = (params.get("fc.weight").ok_or("no fc.weight")?, params.get("fc.bias").ok_or("no fc.bias")?);
    let readout = |hv: &[f64]| -> f64 { fc_b[0] + hv.iter().enumerate().map(|(k, v)| fc_w[[0, k]] * v).sum::<f64>() };
    let mut starts: Vec<Vec<f64>> = Vec::new();
    for sv in run.states.iter().step_by(3) {
        let v = g.value(sv.h())?;
        for b in 0..4 {
            starts.push(v.index_axis(Axis(0), b).iter().copied().collect());
        }
    }
    starts.push(vec![0.0; h]);
    let mut map = |g: &mut Graph<f64>, hn: NodeId| -> unrolled::autograd::Result<NodeId> {
        let zero = g.zeros(&[1, 1]);
        Ok(cell.step(g, &params, zero, &State::one(hn))?.output)
    };
    let mut found = fixed_points(&mut map, &starts, opts, 1e-6)?;
    found.sort_by(|a, b| readout(&a.h).total_cmp(&readout(&b.h)));
    println!("its fixed points with the input at zero (Newton from {} starts on visited states):", starts.len());
    for fp in &found {
        println!("  readout {:+.3}: {}", readout(&fp.h), describe(fp));
    }
    let stable = found.iter().filter(|f| f.stable).count();
    println!("  {stable} stable, {} unstable", found.len() - stable);
    report.insert("flip-flop RNN".into(), found);

    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("fixed_points.json"), serde_json::to_string_pretty(&report)?)?;
    plot_loss_curve(args.out.join("training_loss.svg"), "flip-flop RNN: training loss", &losses)?;
    println!("\nwrote {0}/fixed_points.json and {0}/training_loss.svg", args.out.display());
    Ok(())
}
