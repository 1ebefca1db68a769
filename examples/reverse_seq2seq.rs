//! Encoder-decoder: reverse a string of five digits.
//!
//! A GRU encoder reads the embedded digits; its final state starts a GRU decoder.
//! Training uses teacher forcing: the decoder reads a start token, then the
//! target (the reversed string) shifted right, and a linear readout of each
//! decoder output is scored with cross-entropy. Evaluation decodes free-running
//! and greedily: at each step the argmax of the readout is read from the graph
//! (`g.value`), recorded as a new index input, embedded, and fed to the next step.
//!
//! ```text
//! cargo run --release --example reverse_seq2seq
//! cargo run --release --example reverse_seq2seq -- --steps 50 --seed 3
//! ```

use std::time::Instant;

use clap::Parser;
use unrolled::autograd::{Graph, NodeId, ParamStore, Reduction, Rng};
use unrolled::layers::{
    clip_grad_norm, init_params, split_steps, Adam, Cell, Gru, GruVariant, Init, Optimizer, ParamSpec, Role, Seq2Seq,
};
use unrolled::ndarray::{s, Array1, Array2, ArrayViewD, Axis};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const LEN: usize = 5;
const DIGITS: usize = 10;
const START: i64 = 10;

/// Train a GRU encoder-decoder to reverse digit strings.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Optimizer steps.
    #[arg(long, default_value_t = 1500)]
    steps: usize,
    /// Seed of the initialization and the data.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Embedding size.
    #[arg(long, default_value_t = 16)]
    embedding: usize,
    /// Hidden units of the encoder and the decoder.
    #[arg(long, default_value_t = 64)]
    hidden: usize,
    /// Strings per batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 5e-3)]
    lr: f64,
}

/// Random strings `[LEN, B]` and their reversals.
fn batch(rng: &mut Rng, b: usize) -> (Array2<i64>, Array2<i64>) {
    let src = Array2::from_shape_fn((LEN, b), |_| rng.below(DIGITS) as i64);
    let mut rev = src.clone();
    rev.invert_axis(Axis(0));
    (src, rev)
}

/// The index of the largest entry of each row of `[B, C]` logits.
fn argmax(logits: ArrayViewD<f32>) -> Vec<i64> {
    logits
        .rows()
        .into_iter()
        .map(|r| {
            let best = r.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1));
            best.map_or(0, |(i, _)| i as i64)
        })
        .collect()
}

/// The model's parameters as nodes of one graph.
struct Nodes {
    emb: NodeId,
    fc_w: NodeId,
    fc_b: NodeId,
}

fn nodes(g: &mut Graph<f32>, p: &ParamStore<f32>) -> Res<Nodes> {
    Ok(Nodes { emb: g.param(p, "embedding.weight")?, fc_w: g.param(p, "fc.weight")?, fc_b: g.param(p, "fc.bias")? })
}

/// Embeds `[LEN, B]` tokens and splits them into per-step `[B, E]` nodes.
fn embed_steps(g: &mut Graph<f32>, n: &Nodes, tokens: Array2<i64>) -> Res<Vec<NodeId>> {
    let idx = g.index_input(tokens.into_dyn());
    let x = g.embedding(n.emb, idx)?;
    Ok(split_steps(g, x)?)
}

/// Greedy free-running decoding: the predicted digits `[LEN, B]`.
fn decode(model: &Seq2Seq<Gru, Gru>, p: &ParamStore<f32>, src: Array2<i64>) -> Res<Array2<i64>> {
    let b = src.ncols();
    let mut g = Graph::<f32>::new();
    let n = nodes(&mut g, p)?;
    let source = embed_steps(&mut g, &n, src)?;
    let encoded = model.encode(&mut g, p, &source, None)?;
    let start = g.index_input(Array1::from_elem(b, START).into_dyn());
    let first = g.embedding(n.emb, start)?;
    let run = model.generate(&mut g, p, &encoded, first, LEN, |g, _, out| {
        let logits = g.linear(out, n.fc_w, Some(n.fc_b))?;
        let best = argmax(g.value(logits)?);
        let idx = g.index_input(Array1::from(best).into_dyn());
        g.embedding(n.emb, idx)
    })?;
    let mut pred = Array2::zeros((LEN, b));
    for (t, &out) in run.outputs.iter().enumerate() {
        let logits = g.linear(out, n.fc_w, Some(n.fc_b))?;
        pred.row_mut(t).assign(&Array1::from(argmax(g.value(logits)?)));
    }
    Ok(pred)
}

fn main() -> Res<()> {
    let args = Args::parse();
    let (e, h) = (args.embedding, args.hidden);
    let model = Seq2Seq {
        encoder: Gru::new("enc.", 0, false, e, h, GruVariant::Torch),
        decoder: Gru::new("dec.", 0, false, e, h, GruVariant::Torch),
    };
    let mut specs = Cell::<f32>::params(&model.encoder);
    specs.extend(Cell::<f32>::params(&model.decoder));
    specs.push(ParamSpec::new("embedding.weight", &[11, e], Role::Embedding, 1, e));
    specs.push(ParamSpec::new("fc.weight", &[DIGITS, h], Role::InputWeight, 1, h));
    specs.push(ParamSpec::new("fc.bias", &[DIGITS], Role::Bias, 1, h));
    let mut params = ParamStore::<f32>::new();
    init_params(&specs, &mut params, &Init::torch(args.seed));
    let mut opt = Adam::new(args.lr);
    let mut rng = Rng::new(args.seed);
    println!(
        "reverse {LEN}-digit strings: GRU({h}) encoder-decoder, embedding {e}, {} parameters, {} steps of {}",
        params.numel(),
        args.steps,
        args.batch
    );

    let start = Instant::now();
    let mut avg = None;
    for step in 1..=args.steps {
        let (src, tgt) = batch(&mut rng, args.batch);
        // Decoder inputs: the start token, then the target shifted right.
        let mut dec_in = Array2::from_elem((LEN, args.batch), START);
        dec_in.slice_mut(s![1.., ..]).assign(&tgt.slice(s![..LEN - 1, ..]));
        let mut g = Graph::<f32>::new();
        let n = nodes(&mut g, &params)?;
        let source = embed_steps(&mut g, &n, src)?;
        let dec_inputs = embed_steps(&mut g, &n, dec_in)?;
        let out = model.teacher_forced(&mut g, &params, &source, None, &dec_inputs)?;
        let hs = g.stack(&out.decoder.outputs, 0)?;
        let logits = g.linear(hs, n.fc_w, Some(n.fc_b))?;
        let targets = g.index_input(tgt.into_dyn());
        let loss = g.cross_entropy(logits, targets, Reduction::Mean)?;
        let mut grads = g.param_grad_values(loss)?;
        clip_grad_norm(&mut grads, 1.0, 2.0)?;
        opt.set_lr(args.lr * (1.0 - 0.9 * step as f64 / args.steps as f64)); // linear decay
        opt.step(&mut params, &grads)?;
        let l = g.scalar_value(loss)?;
        avg = Some(avg.map_or(l, |a: f64| 0.9 * a + 0.1 * l));
        if step % 100 == 0 || step == args.steps {
            println!("step {step:5}  loss {:.4}  ({:.1} s)", avg.unwrap_or(l), start.elapsed().as_secs_f64());
        }
    }

    let (src, tgt) = batch(&mut Rng::new(args.seed ^ 0xE7A1), 1000);
    let pred = decode(&model, &params, src.clone())?;
    let show = |a: &Array2<i64>, j: usize| a.column(j).iter().map(|d| d.to_string()).collect();
    for j in 0..3 {
        let (s, t, p): (String, String, String) = (show(&src, j), show(&tgt, j), show(&pred, j));
        println!("{s} -> {p}  (want {t})");
    }
    let digits = pred.iter().zip(&tgt).filter(|(p, t)| p == t).count();
    let seqs = (0..tgt.ncols()).filter(|&j| pred.column(j) == tgt.column(j)).count();
    println!(
        "free-running on 1000 fresh strings: per-digit accuracy {:.1}%, sequence accuracy {:.1}%",
        100.0 * digits as f64 / tgt.len() as f64,
        100.0 * seqs as f64 / tgt.ncols() as f64
    );
    Ok(())
}
