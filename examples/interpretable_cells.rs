//! Interpretable cells (Karpathy, Johnson & Fei-Fei, 2016): train a character
//! LSTM on source code (or load a `char_lm` checkpoint), record its hidden and
//! cell activations over held-out text, rank the cells by correlation with
//! properties of the text (inside quotes, inside a comment, position in the
//! line, nesting depth), and write an HTML page colouring the text by the best
//! cell for each property.
//!
//! ```text
//! cargo run --release --example interpretable_cells                       # this repository's Rust sources
//! cargo run --release --example interpretable_cells -- --corpus ~/src/linux/kernel --steps 3000
//! cargo run --release --example interpretable_cells -- --checkpoint out/char_lm.safetensors --corpus some.txt
//! ```
//!
//! Writes `cells.html` and `cells.json` (the ranking) to `--out`, and the
//! training loss curve `training_loss.svg` when it trains.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use unrolled::autograd::{Graph, NodeId, ParamStore, Reduction};
use unrolled::layers::interpret::{activation_html, record_activations, report, text_properties, PropertyReport};
use unrolled::layers::plot::plot_loss_curve;
use unrolled::layers::{clip_grad_norm, AnyOptimizer, CellKind, CharRnn, Checkpoint, Optimizer, RunOptions};
use unrolled::ndarray::{ArrayD, IxDyn};

#[path = "common/text.rs"]
mod text;
use text::{read_corpus, Vocab};

/// Find cells of a character LSTM that track properties of source code.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// A text file, or a directory of text or code read recursively (default: this
    /// repository's `autograd/src` and `layers/src`).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Analyse this `char_lm` checkpoint instead of training (its vocabulary must
    /// cover the analysed text).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Hidden units (when training).
    #[arg(long, default_value_t = 128)]
    hidden: usize,
    /// Training steps.
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    /// Characters per training sequence.
    #[arg(long, default_value_t = 64)]
    seq_len: usize,
    /// Sequences per batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Characters of held-out text to analyse.
    #[arg(long, default_value_t = 4000)]
    analyse: usize,
    /// Cells to report per property.
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to write the page and the ranking.
    #[arg(long, default_value = "out/interpretable_cells")]
    out: PathBuf,
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn default_corpus() -> Res<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut text = read_corpus(&root.join("autograd/src"))?;
    text.push_str(&read_corpus(&root.join("layers/src"))?);
    Ok(text)
}

/// Trains a 1-layer character LSTM with truncated BPTT over `batch` parallel streams.
fn train(args: &Args, data: &[i64], vocab: usize) -> Res<(CharRnn, ParamStore<f32>, Vec<f64>)> {
    let (t, b) = (args.seq_len, args.batch);
    let stream = data.len() / b;
    if stream < t + 2 {
        return Err(format!("the corpus ({} characters) is too short for {b} streams of {t}", data.len()).into());
    }
    let model = CharRnn::new(CellKind::Lstm, vocab, 32, args.hidden, 1);
    let mut params = ParamStore::<f32>::new();
    model.init_params(&mut params, args.seed);
    let mut g = Graph::<f32>::new();
    let tokens = g.index_input(ArrayD::zeros(IxDyn(&[t, b])));
    let targets = g.index_input(ArrayD::zeros(IxDyn(&[t, b])));
    let state: Vec<NodeId> = {
        let mut g = g.scope("tbptt_cut");
        ["h0", "c0"].iter().map(|n| g.input_named(n, ArrayD::zeros(IxDyn(&[1, b, args.hidden])))).collect()
    };
    let out = model.forward(&mut g, &params, tokens, Some(&state), RunOptions::default())?;
    let loss = g.cross_entropy(out.logits, targets, Reduction::Mean)?;
    let grad_nodes = g.param_grads(loss)?;
    let keep: Vec<NodeId> =
        grad_nodes.values().copied().chain([loss]).chain(out.rnn.final_state.iter().copied()).collect();
    let mut opt = AnyOptimizer::by_name("adam", 3e-3)?;
    let mut losses = Vec::with_capacity(args.steps);
    let mut pos = 0;
    let start = Instant::now();
    for step in 0..args.steps {
        if pos + t + 1 > stream {
            pos = 0;
            for &s in &state {
                g.set_value(s, ArrayD::zeros(IxDyn(&[1, b, args.hidden])))?;
            }
        }
        let window = |off: usize| -> Res<ArrayD<i64>> {
            let v = (0..t).flat_map(|i| (0..b).map(move |j| data[j * stream + pos + i + off])).collect();
            Ok(ArrayD::from_shape_vec(IxDyn(&[t, b]), v)?)
        };
        g.set_index_value(tokens, window(0)?)?;
        g.set_index_value(targets, window(1)?)?;
        g.load_params(&params)?;
        g.replay_keeping(&keep)?;
        let mut grads = grad_nodes
            .iter()
            .map(|(k, &id)| Ok((k.clone(), g.value(id)?.to_owned())))
            .collect::<Res<BTreeMap<_, _>>>()?;
        let carried: Vec<ArrayD<f32>> =
            out.rnn.final_state.iter().map(|&s| g.value(s).map(|v| v.to_owned())).collect::<Result<_, _>>()?;
        for (&s, v) in state.iter().zip(carried) {
            g.set_value(s, v)?;
        }
        clip_grad_norm(&mut grads, 5.0, 2.0)?;
        opt.step(&mut params, &grads)?;
        losses.push(g.scalar_value(loss)?);
        pos += t;
        if (step + 1) % 200 == 0 || step + 1 == args.steps {
            let recent = &losses[losses.len().saturating_sub(50)..];
            println!(
                "  step {:5}  loss {:.3}  ({:.0} s)",
                step + 1,
                recent.iter().sum::<f64>() / recent.len() as f64,
                start.elapsed().as_secs_f64()
            );
        }
    }
    Ok((model, params, losses))
}

fn main() -> Res<()> {
    let args = Args::parse();
    if args.steps == 0 || args.hidden == 0 || args.seq_len == 0 || args.batch == 0 || args.analyse == 0 {
        return Err("--steps, --hidden, --seq-len, --batch and --analyse must be at least 1".into());
    }
    let text = match &args.corpus {
        Some(p) => read_corpus(p)?,
        None => default_corpus()?,
    };
    let chars: Vec<char> = text.chars().collect();
    if chars.len() < 200 {
        return Err(format!("the corpus has {} characters; at least 200 are needed", chars.len()).into());
    }
    // The last part of the corpus is held out for the analysis.
    let held = args.analyse.min(chars.len() / 5);
    let (train_text, test_text): (String, String) =
        (chars[..chars.len() - held].iter().collect(), chars[chars.len() - held..].iter().collect());
    std::fs::create_dir_all(&args.out)?;

    let (model, params, vocab) = match &args.checkpoint {
        Some(path) => {
            let ck = Checkpoint::<f32>::load(path)?;
            let get = |k: &str| ck.metadata.get(k).ok_or_else(|| format!("the checkpoint has no `{k}`"));
            let chars: Vec<char> = serde_json::from_str(get("vocab")?)?;
            let model = CharRnn::new(
                get("cell")?.parse()?,
                chars.len(),
                get("embedding")?.parse()?,
                get("hidden")?.parse()?,
                get("layers")?.parse()?,
            );
            println!("loaded {} ({} parameters)", path.display(), ck.params.numel());
            (model, ck.params, Vocab { chars })
        }
        None => {
            let vocab = Vocab::of(&text);
            let data = vocab.encode(&train_text)?;
            println!(
                "training a {}-unit character LSTM on {} characters (vocabulary {}), {} steps of {}x{}:",
                args.hidden,
                data.len(),
                vocab.chars.len(),
                args.steps,
                args.batch,
                args.seq_len
            );
            let (model, params, losses) = train(&args, &data, vocab.chars.len())?;
            plot_loss_curve(args.out.join("training_loss.svg"), "character LSTM: training loss", &losses)?;
            (model, params, vocab)
        }
    };

    let ids = vocab.encode(&test_text)?;
    let acts = record_activations(&model, &params, &ids, 256)?;
    let props = text_properties(&test_text);
    let last = acts.h.len().checked_sub(1).ok_or("the model has no recurrent layer")?;
    let mut reports: Vec<PropertyReport> = Vec::new();
    if let Some(c) = acts.c.get(last) {
        reports.extend(report(&format!("l{last} c"), c, &props, args.top)?);
    }
    reports.extend(report(&format!("l{last} h"), &acts.h[last], &props, args.top)?);
    println!("\ncells most correlated with properties of {} held-out characters:", ids.len());
    let mut sections: Vec<(String, Vec<f64>)> = Vec::new();
    for p in &props {
        let mut best: Option<(&PropertyReport, usize, f64)> = None;
        for r in reports.iter().filter(|r| r.property == p.name) {
            let cells: Vec<String> = r.top.iter().map(|s| format!("{} {:+.3}", s.cell, s.correlation)).collect();
            println!("  {:18} {:5}  {}", p.name, r.activations, cells.join(", "));
            if let Some(s) = r.top.first() {
                if best.is_none_or(|(_, _, c)| s.correlation.abs() > c.abs()) {
                    best = Some((r, s.cell, s.correlation));
                }
            }
        }
        if let Some((r, cell, corr)) = best {
            let m = if r.activations.ends_with(" c") { &acts.c[last] } else { &acts.h[last] };
            sections.push((
                format!("{}: {}[{cell}] (correlation {corr:+.3})", p.name, r.activations),
                m.column(cell).to_vec(),
            ));
        }
    }
    let sections_ref: Vec<(&str, Vec<f64>)> = sections.iter().map(|(c, v)| (c.as_str(), v.clone())).collect();
    std::fs::write(args.out.join("cells.html"), activation_html("interpretable cells", &test_text, &sections_ref))?;
    std::fs::write(args.out.join("cells.json"), serde_json::to_string_pretty(&reports)?)?;
    println!("\nwrote {0}/cells.html and {0}/cells.json", args.out.display());
    Ok(())
}
