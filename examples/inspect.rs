//! Look inside an unrolled recurrent network: record the forward pass, a loss
//! and the reverse sweep of a small (optionally deep and bidirectional) RNN,
//! LSTM or GRU, then print its summary and write every view of it.
//!
//! ```text
//! cargo run --release --example inspect -- --cell lstm --layers 2 --bidirectional --steps 5 --out out/inspect
//! cargo run --release --example inspect -- --help
//! ```
//!
//! Writes to `--out`: `graph.dot` (clusters per layer, direction and time step),
//! `cells.dot` (collapsed: one box per cell), `steps.dot` and `layers.dot`, the
//! SVG of each when Graphviz's `dot` is installed, `graph.json` (the structure as
//! serde data), `step0.txt` (the text of layer 0's first step),
//! `gradient_flow.json` and `gradient_flow.svg` (per layer and direction),
//! and `gate_saturation.json` and `.svg` for gated cells.

use std::path::{Path, PathBuf};

use clap::Parser;
use unrolled::autograd::inspect::render_dot;
use unrolled::autograd::{Collapse, Direction, Error, Graph, ParamStore, Rng};
use unrolled::layers::diagnostics::{gate_saturation, gradient_flow, GateSaturation, GradientFlow};
use unrolled::layers::plot::{plot_gate_saturation, plot_gradient_flow};
use unrolled::layers::{AnyRecurrent, CellKind, Init, RecurrentConfig, RunOptions};
use unrolled::ndarray::{ArrayD, IxDyn};

/// Record a small unrolled network with its backward pass and write every view of it.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The recurrent cell.
    #[arg(long, default_value = "lstm", value_parser = ["rnn", "lstm", "gru"])]
    cell: String,
    /// Stacked layers.
    #[arg(long, default_value_t = 1)]
    layers: usize,
    /// Run every layer in both directions.
    #[arg(long)]
    bidirectional: bool,
    /// Time steps to unroll.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Input features.
    #[arg(long, default_value_t = 3)]
    input: usize,
    /// Hidden units per layer and direction.
    #[arg(long, default_value_t = 4)]
    hidden: usize,
    /// Sequences in the batch.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Seed of the parameters and the data.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to write the files.
    #[arg(long, default_value = "out/inspect")]
    out: PathBuf,
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn random(shape: &[usize], rng: &mut Rng) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(shape), |_| rng.uniform_in(-1.0, 1.0))
}

/// Writes `name.dot`, and `name.svg` when Graphviz is installed (else says how to get it, once).
fn write_dot(dir: &Path, name: &str, dot: &str, warned: &mut bool) -> Res<Vec<String>> {
    std::fs::write(dir.join(format!("{name}.dot")), dot)?;
    let mut written = vec![format!("{name}.dot")];
    match render_dot(dot, dir.join(format!("{name}.svg"))) {
        Ok(()) => written.push(format!("{name}.svg")),
        Err(e @ Error::ToolMissing { .. }) => {
            if !*warned {
                eprintln!("note: {e}");
                *warned = true;
            }
        }
        Err(e) => return Err(e.into()),
    }
    Ok(written)
}

fn main() -> Res<()> {
    let args = Args::parse();
    if args.layers == 0 || args.steps == 0 || args.hidden == 0 || args.input == 0 || args.batch == 0 {
        return Err("--layers, --steps, --input, --hidden and --batch must be at least 1".into());
    }
    let kind: CellKind = args.cell.parse()?;
    let config = RecurrentConfig::new(args.input, args.hidden).layers(args.layers).bidirectional(args.bidirectional);
    let model = AnyRecurrent::new(kind, &format!("{}.", kind.name()), config);
    let mut params = ParamStore::<f64>::new();
    unrolled::layers::init_params(&model.params::<f64>(), &mut params, &Init::torch(args.seed));

    let mut rng = Rng::new(args.seed.wrapping_add(1));
    let d = if args.bidirectional { 2 } else { 1 };
    let mut g = Graph::<f64>::new();
    let x = g.input_named("x", random(&[args.steps, args.batch, args.input], &mut rng));
    let y = g.input_named("y", random(&[args.steps, args.batch, d * args.hidden], &mut rng));
    let out = model.forward(&mut g, &params, x, None, RunOptions::default())?;
    let loss = g.scope("loss").mse_loss(out.output, y)?;
    let forward_nodes = g.len();
    let grads = g.param_grads(loss)?;
    println!(
        "{} {}x{} ({}), {} steps, batch {}: loss {:.6}; {forward_nodes} forward nodes, {} with the backward pass",
        kind.name(),
        args.layers,
        args.hidden,
        if args.bidirectional { "bidirectional" } else { "one direction" },
        args.steps,
        args.batch,
        g.scalar_value(loss)?,
        g.len()
    );
    println!("\n{}", g.summary());
    if let Some(ops) = g.ops_per_step().get(&0) {
        let list: Vec<String> = ops.iter().map(|(op, n)| format!("{op} {n}")).collect();
        println!("forward ops in step 0 (all layers and directions): {}", list.join(", "));
    }
    println!("parameter gradients: {}", grads.keys().cloned().collect::<Vec<_>>().join(", "));

    std::fs::create_dir_all(&args.out)?;
    let dir = args.out.as_path();
    let mut files = Vec::new();
    let mut warned = false;
    eprintln!("rendering the drawings with Graphviz (the full graph of {} nodes takes a while) …", g.len());
    files.extend(write_dot(dir, "graph", &g.to_dot(), &mut warned)?);
    for (name, by) in [("cells", Collapse::Cell), ("steps", Collapse::Step), ("layers", Collapse::Layer)] {
        files.extend(write_dot(dir, name, &g.to_dot_collapsed(by), &mut warned)?);
    }
    std::fs::write(dir.join("graph.json"), g.to_def().to_json())?;
    files.push("graph.json".into());
    let step0 = g.query().step(0).layer(0).direction(Direction::Forward).gradient(false).nodes();
    std::fs::write(dir.join("step0.txt"), g.subgraph_text(&step0))?;
    files.push("step0.txt".into());

    // Gradient flow and gate saturation, per layer and direction.
    let tap_names = model.tap_names();
    let mut flows: Vec<(String, GradientFlow)> = Vec::new();
    let mut saturation: Vec<(String, Vec<GateSaturation>)> = Vec::new();
    for (l, layer) in out.detail.layers.iter().enumerate() {
        for (dir_name, run) in [("fwd", Some(&layer.fwd)), ("bwd", layer.bwd.as_ref())] {
            let Some(run) = run else { continue };
            let name = format!("l{l} {dir_name}");
            // States in the order the run produced them (a backward run goes from T-1 to 0).
            let mut hs: Vec<_> = run.states.iter().map(|s| s.h()).collect();
            if dir_name == "bwd" {
                hs.reverse();
            }
            if hs.len() >= 2 {
                flows.push((name.clone(), gradient_flow(&mut g, loss, &hs)?));
            }
            if !tap_names.is_empty() {
                saturation.push((name, gate_saturation(&g, run, tap_names, 0.05)?));
            }
        }
    }
    if !flows.is_empty() {
        std::fs::write(dir.join("gradient_flow.json"), serde_json::to_string_pretty(&flows)?)?;
        let runs: Vec<(&str, &GradientFlow)> = flows.iter().map(|(n, f)| (n.as_str(), f)).collect();
        plot_gradient_flow(dir.join("gradient_flow.svg"), &runs)?;
        files.extend(["gradient_flow.json".into(), "gradient_flow.svg".into()]);
        println!("\ngradient flow (from each run's first state; t counts the run's steps):");
        let c_fixed = if kind == CellKind::Lstm { " (c held fixed)" } else { "" };
        for (name, f) in &flows {
            let fmt = |v: &[f64]| v.iter().map(|x| format!("{x:.3e}")).collect::<Vec<_>>().join(" ");
            println!("  {name}  |dL/dh_t| {}", fmt(&f.loss_grad_norms));
            println!("  {name}  |dh_T/dh_t| {}", fmt(&f.final_state_jacobian_norms));
            let top: Vec<f64> = f.step_singular_values.iter().map(|s| s.first().copied().unwrap_or(0.0)).collect();
            println!("  {name}  largest singular value of dh_t/dh_(t-1){}: {}", c_fixed, fmt(&top));
        }
    }
    if !saturation.is_empty() {
        std::fs::write(dir.join("gate_saturation.json"), serde_json::to_string_pretty(&saturation)?)?;
        let runs: Vec<(&str, &[GateSaturation])> = saturation.iter().map(|(n, s)| (n.as_str(), s.as_slice())).collect();
        plot_gate_saturation(dir.join("gate_saturation.svg"), &runs)?;
        files.extend(["gate_saturation.json".into(), "gate_saturation.svg".into()]);
        println!("\ngate saturation (fraction of units below 0.05 / above 0.95):");
        for (name, gates) in &saturation {
            let s: Vec<String> =
                gates.iter().map(|gs| format!("{} {:.2}/{:.2}", gs.gate, gs.total.low, gs.total.high)).collect();
            println!("  {name}  {}", s.join("  "));
        }
    }
    println!("\nwrote to {}: {}", dir.display(), files.join(", "));
    Ok(())
}
