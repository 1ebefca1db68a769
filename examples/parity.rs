//! Many-to-one: is the number of ones in a bit string even?
//!
//! Bit strings of variable length (2 to `--max-len`, 8 by default) are padded to
//! the longest of their batch and run through a GRU with per-sequence lengths, so
//! each string's final state is its state at its own last bit. `many_to_one`
//! with `Pool::Last` picks that state and a linear layer classifies it. A fresh
//! graph is recorded for every step (define-by-run); accuracy is measured on a
//! fresh evaluation batch.
//!
//! ```text
//! cargo run --release --example parity
//! cargo run --release --example parity -- --steps 50 --seed 3
//! ```

use std::time::Instant;

use clap::Parser;
use unrolled::autograd::{Graph, NodeId, ParamStore, Reduction, Rng};
use unrolled::layers::{
    clip_grad_norm, init_params, many_to_one, Adam, GruVariant, Init, Optimizer, ParamSpec, Pool, Recurrent,
    RecurrentConfig, Role, RunOptions,
};
use unrolled::ndarray::{ArrayD, ArrayViewD, IxDyn};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Train a GRU to tell whether a bit string has an even number of ones.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Optimizer steps.
    #[arg(long, default_value_t = 600)]
    steps: usize,
    /// Seed of the initialization and the data.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Longest bit string (lengths are drawn from 2..=max-len).
    #[arg(long, default_value_t = 8)]
    max_len: usize,
    /// Hidden units.
    #[arg(long, default_value_t = 32)]
    hidden: usize,
    /// Strings per batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-2)]
    lr: f64,
}

/// A batch: one-hot bits `[T, B, 2]` (zeros past each string's end), lengths, labels.
struct Batch {
    x: ArrayD<f32>,
    lengths: Vec<usize>,
    labels: Vec<i64>,
}

fn batch(rng: &mut Rng, b: usize, max_len: usize) -> Batch {
    let lengths: Vec<usize> = (0..b).map(|_| 2 + rng.below(max_len - 1)).collect();
    let t = lengths.iter().copied().max().unwrap_or(2);
    let mut x = ArrayD::zeros(IxDyn(&[t, b, 2]));
    let mut labels = Vec::with_capacity(b);
    for (j, &len) in lengths.iter().enumerate() {
        let mut ones = 0;
        for i in 0..len {
            let bit = rng.below(2);
            ones += bit;
            x[[i, j, bit]] = 1.0;
        }
        labels.push(i64::from(ones % 2 == 0));
    }
    Batch { x, lengths, labels }
}

/// Records the model on a batch: the logits `[B, 2]` and the label node.
fn forward(
    g: &mut Graph<f32>,
    gru: &Recurrent<unrolled::layers::Gru>,
    params: &ParamStore<f32>,
    data: &Batch,
) -> Res<(NodeId, NodeId)> {
    let x = g.input(data.x.clone());
    let opts = RunOptions { lengths: Some(&data.lengths), ..Default::default() };
    let out = gru.forward(g, params, x, None, opts)?;
    let last = many_to_one(g, &out.detail.outputs, Some(&data.lengths), Pool::Last)?;
    let (w, b) = (g.param(params, "fc.weight")?, g.param(params, "fc.bias")?);
    let logits = g.linear(last, w, Some(b))?;
    let labels = ArrayD::from_shape_vec(IxDyn(&[data.labels.len()]), data.labels.clone())?;
    Ok((logits, g.index_input(labels)))
}

/// The fraction of rows of `logits [B, 2]` whose larger entry is the label.
fn accuracy(logits: ArrayViewD<f32>, labels: &[i64]) -> f64 {
    let right = labels.iter().enumerate().filter(|&(j, &y)| i64::from(logits[[j, 1]] > logits[[j, 0]]) == y).count();
    right as f64 / labels.len() as f64
}

fn main() -> Res<()> {
    let args = Args::parse();
    if args.max_len < 2 {
        return Err("--max-len must be at least 2".into());
    }
    let h = args.hidden;
    let gru = Recurrent::gru("gru.", RecurrentConfig::new(2, h), GruVariant::Torch);
    let mut params = ParamStore::<f32>::new();
    gru.init_params(&mut params, &Init::torch(args.seed));
    let fc = [
        ParamSpec::new("fc.weight", &[2, h], Role::InputWeight, 1, h),
        ParamSpec::new("fc.bias", &[2], Role::Bias, 1, h),
    ];
    init_params(&fc, &mut params, &Init::torch(args.seed + 1));
    let mut opt = Adam::new(args.lr);
    let mut rng = Rng::new(args.seed);
    println!(
        "parity of bit strings of length 2..={}: GRU({h}), {} parameters, {} steps of {}",
        args.max_len,
        params.numel(),
        args.steps,
        args.batch
    );

    let start = Instant::now();
    let (mut avg_loss, mut avg_acc) = (None, None);
    for step in 1..=args.steps {
        let data = batch(&mut rng, args.batch, args.max_len);
        let mut g = Graph::<f32>::new();
        let (logits, labels) = forward(&mut g, &gru, &params, &data)?;
        let loss = g.cross_entropy(logits, labels, Reduction::Mean)?;
        let acc = accuracy(g.value(logits)?, &data.labels);
        let mut grads = g.param_grad_values(loss)?;
        clip_grad_norm(&mut grads, 1.0, 2.0)?;
        opt.step(&mut params, &grads)?;
        let ema = |s: Option<f64>, v: f64| Some(s.map_or(v, |s| 0.9 * s + 0.1 * v));
        avg_loss = ema(avg_loss, g.scalar_value(loss)?);
        avg_acc = ema(avg_acc, acc);
        if step % 50 == 0 || step == args.steps {
            println!(
                "step {step:4}  loss {:.4}  train accuracy {:5.1}%  ({:.1} s)",
                avg_loss.unwrap_or(0.0),
                100.0 * avg_acc.unwrap_or(0.0),
                start.elapsed().as_secs_f64()
            );
        }
    }

    let mut eval_rng = Rng::new(args.seed ^ 0xE7A1);
    let data = batch(&mut eval_rng, 1000, args.max_len);
    let mut g = Graph::<f32>::new();
    let (logits, _) = forward(&mut g, &gru, &params, &data)?;
    println!("evaluation on 1000 fresh strings: accuracy {:.1}%", 100.0 * accuracy(g.value(logits)?, &data.labels));
    Ok(())
}
