//! Bidirectional tagging: a label that needs the context on both sides.
//!
//! Each sequence holds T = 10 random digits; position t is tagged 1 when
//! `x[t-1] + x[t+1] > 9` (a missing neighbour counts as 0), else 0. A
//! bidirectional GRU sees both neighbours at every step; a forward-only GRU with
//! the same settings sees only the left one, so it can do little better than
//! guess from it (about 75%). The first and last tags are always 0 (one
//! neighbour is missing and a digit is at most 9), so both get those right. Both are trained on the same batches, with a linear
//! readout at every step (`g.linear` on `[T, B, D*H]`) and cross-entropy over all
//! positions; their per-position accuracies are printed side by side.
//!
//! ```text
//! cargo run --release --example bidirectional_tagging
//! cargo run --release --example bidirectional_tagging -- --steps 50 --seed 3
//! ```

use std::time::Instant;

use clap::Parser;
use unrolled::autograd::{Graph, NodeId, ParamStore, Reduction, Rng};
use unrolled::layers::{
    clip_grad_norm, init_params, Adam, Gru, GruVariant, Init, Optimizer, ParamSpec, Recurrent, RecurrentConfig, Role,
    RunOptions,
};
use unrolled::ndarray::Array2;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const T: usize = 10;
const DIGITS: usize = 10;

/// Train a bidirectional and a forward-only GRU tagger and compare them.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Optimizer steps (for each model).
    #[arg(long, default_value_t = 800)]
    steps: usize,
    /// Seed of the initialization and the data.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Hidden units per direction.
    #[arg(long, default_value_t = 32)]
    hidden: usize,
    /// Sequences per batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-2)]
    lr: f64,
}

/// Random digits `[T, B]` and their tags `[T, B]`.
fn batch(rng: &mut Rng, b: usize) -> (Array2<i64>, Array2<i64>) {
    let x = Array2::from_shape_fn((T, b), |_| rng.below(DIGITS) as i64);
    let at = |t: Option<usize>, j: usize| t.filter(|&t| t < T).map_or(0, |t| x[[t, j]]);
    let y = Array2::from_shape_fn((T, b), |(t, j)| i64::from(at(t.checked_sub(1), j) + at(Some(t + 1), j) > 9));
    (x, y)
}

/// A GRU tagger: its module, parameters and optimizer.
struct Tagger {
    name: &'static str,
    gru: Recurrent<Gru>,
    params: ParamStore<f32>,
    opt: Adam<f32>,
}

impl Tagger {
    fn new(name: &'static str, bidirectional: bool, args: &Args) -> Self {
        let h = args.hidden;
        let config = RecurrentConfig::new(DIGITS, h).bidirectional(bidirectional);
        let gru = Recurrent::gru("gru.", config, GruVariant::Torch);
        let d = 1 + usize::from(bidirectional);
        let mut specs = gru.params::<f32>();
        specs.push(ParamSpec::new("fc.weight", &[2, d * h], Role::InputWeight, 1, h));
        specs.push(ParamSpec::new("fc.bias", &[2], Role::Bias, 1, h));
        let mut params = ParamStore::new();
        init_params(&specs, &mut params, &Init::torch(args.seed));
        Tagger { name, gru, params, opt: Adam::new(args.lr) }
    }

    /// Records the tagger on one-hot digits: logits `[T, B, 2]`.
    fn logits(&self, g: &mut Graph<f32>, x: &Array2<i64>) -> Res<NodeId> {
        let idx = g.index_input(x.clone().into_dyn());
        let onehot = g.one_hot(idx, DIGITS)?;
        let out = self.gru.forward(g, &self.params, onehot, None, RunOptions::default())?;
        let (w, b) = (g.param(&self.params, "fc.weight")?, g.param(&self.params, "fc.bias")?);
        Ok(g.linear(out.output, w, Some(b))?)
    }

    /// One training step; returns the loss.
    fn train_step(&mut self, x: &Array2<i64>, y: &Array2<i64>) -> Res<f64> {
        let mut g = Graph::<f32>::new();
        let logits = self.logits(&mut g, x)?;
        let targets = g.index_input(y.clone().into_dyn());
        let loss = g.cross_entropy(logits, targets, Reduction::Mean)?;
        let mut grads = g.param_grad_values(loss)?;
        clip_grad_norm(&mut grads, 1.0, 2.0)?;
        self.opt.step(&mut self.params, &grads)?;
        Ok(g.scalar_value(loss)?)
    }

    /// The accuracy at each position.
    fn accuracy(&self, x: &Array2<i64>, y: &Array2<i64>) -> Res<Vec<f64>> {
        let mut g = Graph::<f32>::new();
        let logits = self.logits(&mut g, x)?;
        let l = g.value(logits)?;
        Ok((0..T)
            .map(|t| {
                let right = (0..y.ncols()).filter(|&j| i64::from(l[[t, j, 1]] > l[[t, j, 0]]) == y[[t, j]]).count();
                right as f64 / y.ncols() as f64
            })
            .collect())
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn main() -> Res<()> {
    let args = Args::parse();
    let mut models = [Tagger::new("bidirectional", true, &args), Tagger::new("forward-only", false, &args)];
    println!(
        "tag x[t-1] + x[t+1] > 9 over {T} digits: GRU({}) bidirectional ({} parameters) vs forward-only ({}), {} steps of {}",
        args.hidden,
        models[0].params.numel(),
        models[1].params.numel(),
        args.steps,
        args.batch
    );
    let mut rng = Rng::new(args.seed);
    let (ex, ey) = batch(&mut Rng::new(args.seed ^ 0xE7A1), 1000);
    let start = Instant::now();
    let mut avg = [None; 2];
    for step in 1..=args.steps {
        let (x, y) = batch(&mut rng, args.batch);
        for (m, a) in models.iter_mut().zip(&mut avg) {
            let l = m.train_step(&x, &y)?;
            *a = Some(a.map_or(l, |a: f64| 0.9 * a + 0.1 * l));
        }
        if step % 100 == 0 || step == args.steps {
            println!(
                "step {step:4}  loss: bidirectional {:.4}, forward-only {:.4}  ({:.1} s)",
                avg[0].unwrap_or(0.0),
                avg[1].unwrap_or(0.0),
                start.elapsed().as_secs_f64()
            );
        }
    }

    let accs = [models[0].accuracy(&ex, &ey)?, models[1].accuracy(&ex, &ey)?];
    println!("per-position accuracy on 1000 fresh sequences:");
    println!("   t  {:>14}  {:>14}", models[0].name, models[1].name);
    for (t, (bi, fwd)) in accs[0].iter().zip(&accs[1]).enumerate() {
        println!("{t:4}  {:13.1}%  {:13.1}%", 100.0 * bi, 100.0 * fwd);
    }
    println!(
        "overall accuracy: bidirectional {:.1}%, forward-only {:.1}%",
        100.0 * mean(&accs[0]),
        100.0 * mean(&accs[1])
    );
    Ok(())
}
