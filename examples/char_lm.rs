//! The main job: a character-level language model, trained on Shakespeare's
//! sonnets (embedded in the binary) or on any UTF-8 text, with truncated BPTT
//! over parallel streams, gradient clipping, a progress bar, samples as it
//! trains, and checkpoints.
//!
//! ```text
//! cargo run --release --example char_lm                       # train on the sonnets
//! cargo run --release --example char_lm -- --hello            # the lectures' "hello" example
//! cargo run --release --example char_lm -- --sample out/char_lm.safetensors --prime "Shall I" --temperature 0.7
//! cargo run --release --example char_lm -- --help
//! ```
//!
//! Training records the graph of one step (forward, loss, and the gradient nodes)
//! once, and replays it for every batch with new tokens, the carried state and
//! the updated parameters. The state is carried between batches as a value: the
//! graph starts from leaves named `h0`/`c0` under the scope `tbptt_cut`, which is
//! where truncated BPTT cuts the sequence.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[path = "common/text.rs"]
mod text;
#[macro_use]
#[path = "common/out.rs"]
mod out;
use std::time::Instant;
use text::{read_corpus, Vocab};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use unrolled::autograd::{Graph, NodeId, ParamStore, Reduction, Rng};
use unrolled::layers::{clip_grad_norm, AnyOptimizer, CellKind, CharRnn, Checkpoint, Optimizer, RunOptions};
use unrolled::ndarray::{ArrayD, IxDyn};

const SONNETS: &str = include_str!("data/sonnets.txt");

/// Train a character-level language model, or sample from a saved one.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Train on this UTF-8 text file instead of the built-in sonnets (a file, or a
    /// directory whose files are read and concatenated).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// The recurrent cell.
    #[arg(long, default_value = "lstm", value_parser = ["rnn", "lstm", "gru"])]
    cell: String,
    /// Recurrent layers.
    #[arg(long, default_value_t = 1, value_parser = positive)]
    layers: usize,
    /// Hidden units per layer.
    #[arg(long, default_value_t = 256, value_parser = positive)]
    hidden: usize,
    /// Embedding size.
    #[arg(long, default_value_t = 64, value_parser = positive)]
    embedding: usize,
    /// Characters per sequence (truncated BPTT length).
    #[arg(long, default_value_t = 64, value_parser = positive)]
    seq_len: usize,
    /// Sequences per batch (parallel streams through the text).
    #[arg(long, default_value_t = 32, value_parser = positive)]
    batch: usize,
    /// Optimizer steps.
    #[arg(long, default_value_t = 1500)]
    steps: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    /// sgd, momentum, nesterov, adagrad, rmsprop, adam or adamw.
    #[arg(long, default_value = "adam")]
    optimizer: String,
    /// Clip the global gradient norm to this (0 turns clipping off).
    #[arg(long, default_value_t = 5.0)]
    clip: f64,
    /// Scheduled sampling: the probability of feeding the model's own prediction.
    #[arg(long, default_value_t = 0.0)]
    sampling_prob: f64,
    /// Seed of the initialization, the streams' offsets and the samples.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Resume training from this checkpoint (its model, vocabulary and optimizer
    /// state; --cell, --layers, --hidden, --embedding and --optimizer are then ignored,
    /// and the streams start again from the beginning of the corpus).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Where to save checkpoints (`.safetensors` or `.json`).
    #[arg(long, default_value = "out/char_lm.safetensors")]
    checkpoint: PathBuf,
    /// Print a sample and save a checkpoint every this many steps.
    #[arg(long, default_value_t = 250, value_parser = positive)]
    every: usize,
    /// Generate from this checkpoint instead of training.
    #[arg(long)]
    sample: Option<PathBuf>,
    /// Text to prime generation with.
    #[arg(long, default_value = "Shall I compare thee")]
    prime: String,
    /// Sampling temperature (0 is greedy).
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Sample among the k most likely characters (0 for all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Characters to generate.
    #[arg(long, default_value_t = 300)]
    length: usize,
    /// The lectures' example: vocabulary h, e, l, o; learn to continue "hell" with "o".
    #[arg(long)]
    hello: bool,
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// A whole number of at least 1 (sizes, step counts).
fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(v) => Ok(v),
        Err(e) => Err(e.to_string()),
    }
}

fn model_of(meta: &BTreeMap<String, String>) -> Res<(CharRnn, Vocab)> {
    let get = |k: &str| meta.get(k).ok_or_else(|| format!("the checkpoint has no `{k}`"));
    let chars: Vec<char> = serde_json::from_str(get("vocab")?)?;
    let kind: CellKind = get("cell")?.parse()?;
    let model =
        CharRnn::new(kind, chars.len(), get("embedding")?.parse()?, get("hidden")?.parse()?, get("layers")?.parse()?);
    Ok((model, Vocab { chars }))
}

fn metadata(args: &Args, vocab: &Vocab) -> Res<BTreeMap<String, String>> {
    Ok(BTreeMap::from([
        ("vocab".to_string(), serde_json::to_string(&vocab.chars)?),
        ("cell".to_string(), args.cell.clone()),
        ("embedding".to_string(), args.embedding.to_string()),
        ("hidden".to_string(), args.hidden.to_string()),
        ("layers".to_string(), args.layers.to_string()),
    ]))
}

fn sample(args: &Args, path: &Path) -> Res<()> {
    let ck = Checkpoint::<f32>::load(path)?;
    let (model, vocab) = model_of(&ck.metadata)?;
    let prime = vocab.encode(&args.prime)?;
    let mut rng = Rng::new(args.seed);
    let out = model.generate(&ck.params, &prime, args.length, args.temperature, args.top_k, &mut rng)?;
    outln!("{}{}", args.prime, vocab.decode(&out));
    Ok(())
}

/// The lectures' "hello" example: one sequence, vocabulary h, e, l, o.
fn hello(args: &Args) -> Res<()> {
    let vocab = Vocab::of("helo");
    let model = CharRnn::new(args.cell.parse()?, 4, 4, 8, 1);
    let mut params = ParamStore::<f32>::new();
    model.init_params(&mut params, args.seed);
    let text = vocab.encode("hello")?;
    let mut g = Graph::<f32>::new();
    let inputs = g.index_input(ArrayD::from_shape_vec(IxDyn(&[4, 1]), text[..4].to_vec())?);
    let targets = g.index_input(ArrayD::from_shape_vec(IxDyn(&[4, 1]), text[1..].to_vec())?);
    let out = model.forward(&mut g, &params, inputs, None, RunOptions::default())?;
    let loss = g.cross_entropy(out.logits, targets, Reduction::Mean)?;
    let grads = g.param_grads(loss)?;
    let mut opt = AnyOptimizer::by_name("adam", 0.05)?;
    let show = |g: &Graph<f32>, step: usize| -> Res<()> {
        let logits = g.value(out.logits)?;
        let pred: Vec<i64> = (0..4)
            .map(|t| {
                let row: Vec<f64> = (0..4).map(|v| logits[[t, 0, v]] as f64).collect();
                unrolled::layers::sample_logits(&row, 0.0, 0, &mut Rng::new(0)) as i64
            })
            .collect();
        outln!(
            "step {step:3}  loss {:.4}  input \"hell\" -> predicts \"{}\"",
            g.scalar_value(loss)?,
            vocab.decode(&pred)
        );
        Ok(())
    };
    for step in 0..=120 {
        if step > 0 {
            g.load_params(&params)?;
            g.replay()?;
        }
        if step % 20 == 0 {
            show(&g, step)?;
        }
        let gv =
            grads.iter().map(|(k, &id)| Ok((k.clone(), g.value(id)?.to_owned()))).collect::<Res<BTreeMap<_, _>>>()?;
        opt.step(&mut params, &gv)?;
    }
    let next = model.generate(&params, &vocab.encode("hell")?, 1, 0.0, 0, &mut Rng::new(0))?;
    outln!("after training, \"hell\" continues with {:?}", vocab.decode(&next));
    Ok(())
}

fn main() -> Res<()> {
    // SAFETY: first thing in `main`, before any other thread starts. An OpenBLAS
    // too old to know this CPU is told its kernels (see `gemm::name_cpu_for_openblas`).
    unsafe { unrolled::autograd::gemm::name_cpu_for_openblas() };
    let args = Args::parse();
    if let Some(path) = &args.sample {
        return sample(&args, path);
    }
    if args.hello {
        return hello(&args);
    }
    let text = match &args.corpus {
        Some(p) => read_corpus(p)?,
        None => SONNETS.to_string(),
    };
    let (t, b) = (args.seq_len, args.batch);
    let resumed = args.resume.as_deref().map(Checkpoint::<f32>::load).transpose()?;
    let (model, vocab) = match &resumed {
        Some(ck) => model_of(&ck.metadata)?,
        None => {
            let v = Vocab::of(&text);
            (CharRnn::new(args.cell.parse()?, v.chars.len(), args.embedding, args.hidden, args.layers), v)
        }
    };
    let data = vocab.encode(&text)?;
    let stream = data.len() / b;
    if stream < t + 2 {
        return Err(format!(
            "the corpus ({} characters) is too short for {b} streams of {t}-character sequences",
            data.len()
        )
        .into());
    }
    let meta = match &resumed {
        Some(ck) => ck.metadata.clone(),
        None => metadata(&args, &vocab)?,
    };
    let (mut params, mut opt, mut step) = match resumed {
        Some(ck) => (ck.params, ck.optimizer.ok_or("the checkpoint has no optimizer state")?, ck.step as usize),
        None => {
            let mut p = ParamStore::<f32>::new();
            model.init_params(&mut p, args.seed);
            (p, AnyOptimizer::by_name(&args.optimizer, args.lr)?, 0)
        }
    };
    if let Some(dir) = args.checkpoint.parent() {
        std::fs::create_dir_all(dir)?;
    }
    outln!(
        "{} characters, vocabulary {}, {} {}x{} (embedding {}), {} parameters; {} steps of {b}x{t} characters",
        data.len(),
        vocab.chars.len(),
        model.rnn.kind().name(),
        model.rnn.config().num_layers,
        model.hidden(),
        model.embedding_dim,
        params.numel(),
        args.steps
    );

    // One step's graph, recorded once: tokens, targets and the carried state are leaves.
    let (l, h) = (model.rnn.config().num_layers, model.hidden());
    let mut g = Graph::<f32>::new();
    let tokens = g.index_input(ArrayD::zeros(IxDyn(&[t, b])));
    let targets = g.index_input(ArrayD::zeros(IxDyn(&[t, b])));
    let state: Vec<NodeId> = {
        let mut g = g.scope("tbptt_cut");
        ["h0", "c0"]
            .iter()
            .take(model.rnn.state_parts())
            .map(|n| g.input_named(n, ArrayD::zeros(IxDyn(&[l, b, h]))))
            .collect()
    };
    let out = model.forward(&mut g, &params, tokens, Some(&state), RunOptions::default())?;
    let loss = g.cross_entropy(out.logits, targets, Reduction::Mean)?;
    let grad_nodes = g.param_grads(loss)?;
    // A step computes only what these need, releasing every other value after its last use.
    let keep: Vec<NodeId> =
        grad_nodes.values().copied().chain([loss]).chain(out.rnn.final_state.iter().copied()).collect();

    let mut rng = Rng::new(args.seed);
    let mut pos = 0usize;
    let bar = ProgressBar::new(args.steps as u64);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")?);
    let start = Instant::now();
    let mut smooth = None;
    let first_step = step;
    while step < first_step + args.steps {
        if pos + t + 1 > stream {
            pos = 0;
            for &s in &state {
                g.set_value(s, ArrayD::zeros(IxDyn(&[l, b, h])))?;
            }
        }
        let window = |off: usize| -> Res<ArrayD<i64>> {
            let v = (0..t)
                .flat_map(|i| (0..b).map(move |j| (i, j)))
                .map(|(i, j)| data[j * stream + pos + i + off])
                .collect();
            Ok(ArrayD::from_shape_vec(IxDyn(&[t, b]), v)?)
        };
        let (x, y) = (window(0)?, window(1)?);
        let (loss_value, mut grads) = if args.sampling_prob > 0.0 {
            // Scheduled sampling records a fresh graph: each input depends on the previous step's prediction.
            let mut g2 = Graph::<f32>::new();
            let logits = model.forward_scheduled(&mut g2, &params, &x, args.sampling_prob, &mut rng)?;
            let yt = g2.index_input(y);
            let l2 = g2.cross_entropy(logits, yt, Reduction::Mean)?;
            (g2.scalar_value(l2)?, g2.param_grad_values(l2)?)
        } else {
            g.set_index_value(tokens, x)?;
            g.set_index_value(targets, y)?;
            g.load_params(&params)?;
            g.replay_keeping(&keep)?;
            let gv = grad_nodes
                .iter()
                .map(|(k, &id)| Ok((k.clone(), g.value(id)?.to_owned())))
                .collect::<Res<BTreeMap<_, _>>>()?;
            // Carry the final state into the next batch as a value: the truncation.
            let carried: Vec<ArrayD<f32>> =
                out.rnn.final_state.iter().map(|&s| g.value(s).map(|v| v.to_owned())).collect::<Result<_, _>>()?;
            for (&s, v) in state.iter().zip(carried) {
                g.set_value(s, v)?;
            }
            (g.scalar_value(loss)?, gv)
        };
        if args.clip > 0.0 {
            clip_grad_norm(&mut grads, args.clip, 2.0)?;
        }
        opt.step(&mut params, &grads)?;
        pos += t;
        step += 1;
        smooth = Some(smooth.map_or(loss_value, |s: f64| 0.95 * s + 0.05 * loss_value));
        let done = step - first_step;
        let rate = (done * t * b) as f64 / start.elapsed().as_secs_f64();
        bar.set_message(format!("step {step}  loss {:.3}  {:.0} chars/s", smooth.unwrap_or(loss_value), rate));
        bar.inc(1);
        if step % args.every == 0 || step == first_step + args.steps {
            let ck = Checkpoint {
                step: step as u64,
                params: params.clone(),
                optimizer: Some(opt.clone()),
                metadata: meta.clone(),
            };
            ck.save(&args.checkpoint)?;
            let prime = vocab.encode(&args.prime).unwrap_or_else(|_| vec![0]);
            let s = model.generate(&params, &prime, 200, args.temperature, args.top_k, &mut rng)?;
            let msg = format!(
                "--- step {step}, loss {:.3}:\n{}{}\n",
                smooth.unwrap_or(loss_value),
                vocab.decode(&prime),
                vocab.decode(&s)
            );
            if bar.is_hidden() {
                outln!("{msg}");
            } else {
                bar.println(msg);
            }
        }
    }
    bar.finish();
    outln!(
        "trained {} steps in {:.1} s; checkpoint {} (sample with --sample {} --prime TEXT)",
        args.steps,
        start.elapsed().as_secs_f64(),
        args.checkpoint.display(),
        args.checkpoint.display()
    );
    Ok(())
}
