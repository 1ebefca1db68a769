//! One-to-many: from a single point on the unit circle, generate a sine wave.
//!
//! Each sequence starts from `x1 = (sin φ, cos φ)` with a random phase φ and must
//! continue with `(sin(φ + ωt), cos(φ + ωt))` for `t = 1..=T` (ω = 0.3, T = 16).
//! An Elman (tanh) cell runs with `one_to_many`: a linear readout of each hidden
//! state is the step's prediction, and it is fed back as the next input, so the
//! loss (MSE over all steps) is differentiated through the feedback loop too.
//!
//! ```text
//! cargo run --release --example sine_generation
//! cargo run --release --example sine_generation -- --steps 50 --seed 3
//! ```

use std::time::Instant;

use clap::Parser;
use unrolled::autograd::{Graph, NodeId, ParamStore, Rng};
use unrolled::layers::{
    clip_grad_norm, init_params, one_to_many, Adam, Cell, Elman, Init, Nonlinearity, Optimizer, ParamSpec, Role,
};
use unrolled::ndarray::{ArrayD, IxDyn};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const OMEGA: f64 = 0.3;

/// Train an Elman RNN to generate a sine wave from one point, feeding back its outputs.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Optimizer steps.
    #[arg(long, default_value_t = 1500)]
    steps: usize,
    /// Seed of the initialization and the data.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Steps to generate.
    #[arg(long, default_value_t = 16)]
    length: usize,
    /// Hidden units.
    #[arg(long, default_value_t = 32)]
    hidden: usize,
    /// Sequences per batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
}

/// Random phases: the start points `[B, 2]` and the targets `[T, B, 2]`.
fn batch(rng: &mut Rng, b: usize, t: usize) -> Res<(ArrayD<f32>, ArrayD<f32>)> {
    let phases: Vec<f64> = (0..b).map(|_| rng.uniform_in(0.0, std::f64::consts::TAU)).collect();
    let point = |p: f64| [p.sin() as f32, p.cos() as f32];
    let x1: Vec<f32> = phases.iter().flat_map(|&p| point(p)).collect();
    let y: Vec<f32> = (1..=t).flat_map(|s| phases.iter().flat_map(move |&p| point(p + OMEGA * s as f64))).collect();
    Ok((ArrayD::from_shape_vec(IxDyn(&[b, 2]), x1)?, ArrayD::from_shape_vec(IxDyn(&[t, b, 2]), y)?))
}

/// Records the free-running generation from `x1` and returns the predictions `[T, B, 2]`.
fn generate(g: &mut Graph<f32>, cell: &Elman, params: &ParamStore<f32>, x1: ArrayD<f32>, steps: usize) -> Res<NodeId> {
    let x1 = g.input(x1);
    let (w, b) = (g.param(params, "out.weight")?, g.param(params, "out.bias")?);
    let (ys, _) = one_to_many(cell, g, params, x1, None, steps, |g, h| g.linear(h, w, Some(b)))?;
    Ok(g.stack(&ys, 0)?)
}

fn main() -> Res<()> {
    let args = Args::parse();
    let (h, t) = (args.hidden, args.length);
    let cell = Elman::new("rnn.", 0, false, 2, h, Nonlinearity::Tanh);
    let mut specs = Cell::<f32>::params(&cell);
    specs.push(ParamSpec::new("out.weight", &[2, h], Role::InputWeight, 1, h));
    specs.push(ParamSpec::new("out.bias", &[2], Role::Bias, 1, h));
    let mut params = ParamStore::<f32>::new();
    init_params(&specs, &mut params, &Init::torch(args.seed));
    let mut opt = Adam::new(args.lr);
    let mut rng = Rng::new(args.seed);
    println!(
        "generate {t} steps of (sin, cos) with ω = {OMEGA} from one point: Elman({h}), {} parameters, {} steps",
        params.numel(),
        args.steps
    );

    let start = Instant::now();
    let mut avg = None;
    for step in 1..=args.steps {
        let (x1, y) = batch(&mut rng, args.batch, t)?;
        let mut g = Graph::<f32>::new();
        let pred = generate(&mut g, &cell, &params, x1, t)?;
        let target = g.input(y);
        let loss = g.mse_loss(pred, target)?;
        let mut grads = g.param_grad_values(loss)?;
        clip_grad_norm(&mut grads, 1.0, 2.0)?;
        // Decay the learning rate linearly to a tenth, to settle the fine phase error.
        opt.set_lr(args.lr * (1.0 - 0.9 * step as f64 / args.steps as f64));
        opt.step(&mut params, &grads)?;
        let l = g.scalar_value(loss)?;
        avg = Some(avg.map_or(l, |a: f64| 0.9 * a + 0.1 * l));
        if step % 100 == 0 || step == args.steps {
            println!("step {step:5}  mse {:.5}  ({:.1} s)", avg.unwrap_or(l), start.elapsed().as_secs_f64());
        }
    }

    // Evaluate on fresh phases; show the first sequence step by step.
    let (x1, y) = batch(&mut Rng::new(args.seed ^ 0xE7A1), 256, t)?;
    let first = [x1[[0, 0]], x1[[0, 1]]];
    let mut g = Graph::<f32>::new();
    let pred = generate(&mut g, &cell, &params, x1, t)?;
    let target = g.input(y.clone());
    let loss = g.mse_loss(pred, target)?;
    let p = g.value(pred)?;
    println!("one sequence, from x1 = ({:+.3}, {:+.3}):", first[0], first[1]);
    println!("{:>4}   {:>8} {:>8}   {:>8} {:>8}", "t", "gen sin", "gen cos", "true sin", "true cos");
    for s in 0..t {
        println!(
            "{:4}   {:+8.3} {:+8.3}   {:+8.3} {:+8.3}",
            s + 1,
            p[[s, 0, 0]],
            p[[s, 0, 1]],
            y[[s, 0, 0]],
            y[[s, 0, 1]]
        );
    }
    println!("evaluation on 256 fresh phases: mse {:.5}", g.scalar_value(loss)?);
    Ok(())
}
