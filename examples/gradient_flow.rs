//! Vanishing and exploding gradients, measured on the unrolled graph.
//!
//! The lectures' argument: backpropagating through `T - t` steps of a vanilla
//! RNN multiplies the gradient by `T - t` step Jacobians `∂h_k/∂h_{k-1} =
//! diag(tanh') W_hh`, so it shrinks geometrically when the largest singular value
//! of `W_hh` is below 1 and grows when it is above. The LSTM's cell path
//! `c_t = f ⊙ c_{t-1} + i ⊙ g` multiplies it by the forget gate instead, which
//! the network can hold near 1. Gradient clipping bounds an explosion.
//!
//! ```text
//! cargo run --release --example gradient_flow -- [--steps 30] [--hidden 16] [--out out/gradient_flow]
//! ```
//!
//! Writes `gradient_flow.json` (every measurement, serde) and `gradient_flow.svg`
//! (the norms per step, and the SGD loss curves with and without clipping).

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;
use unrolled::autograd::{Graph, NodeId, ParamStore, Rng};
use unrolled::layers::diagnostics::{final_state_jacobian_norms, gradient_flow, singular_values, GradientFlow};
use unrolled::layers::plot::{plot_panels, Panel, Series};
use unrolled::layers::{
    clip_grad_norm, grad_norm, init_params, orthogonal, split_steps, unroll, AnyOptimizer, Cell, Elman, Init, Lstm,
    Nonlinearity, Optimizer, State, UnrollOptions,
};
use unrolled::ndarray::{Array2, ArrayD, IxDyn};

/// Measure how gradients vanish or explode through an unrolled RNN and LSTM.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Time steps.
    #[arg(long, default_value_t = 30)]
    steps: usize,
    /// Hidden units.
    #[arg(long, default_value_t = 16)]
    hidden: usize,
    /// Seed of the weights and inputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to write the JSON and the plot.
    #[arg(long, default_value = "out/gradient_flow")]
    out: PathBuf,
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const INPUT: usize = 4;

/// The graph of a cell unrolled over small random inputs from a zero state, with
/// the loss `½‖h_T - y‖²`. Returns the graph, the states `h_0 … h_T` (and `c_0 … c_T`
/// for an LSTM) and the loss.
fn run(
    cell: &dyn Cell<f64>,
    p: &ParamStore<f64>,
    steps: usize,
    seed: u64,
) -> Res<(Graph<f64>, Vec<Vec<NodeId>>, NodeId)> {
    let h = cell.output_size();
    let mut rng = Rng::new(seed);
    let mut g = Graph::<f64>::new();
    // Inputs small enough that tanh stays near its linear regime: the Jacobians are then close to W_hh.
    let x = g.input_named("x", ArrayD::from_shape_fn(IxDyn(&[steps, 1, INPUT]), |_| 1e-4 * rng.normal()));
    let y = g.input_named("y", ArrayD::from_shape_fn(IxDyn(&[1, h]), |_| rng.uniform_in(-1.0, 1.0)));
    let init: Vec<NodeId> = cell.state_shapes(1).iter().map(|s| g.zeros(s)).collect();
    let xs = split_steps(&mut g, x)?;
    let state = State(init.iter().copied().collect());
    let run = unroll(cell, &mut g, p, &xs, Some(state), UnrollOptions::default())?;
    let parts = init.len();
    let states: Vec<Vec<NodeId>> =
        (0..parts).map(|k| std::iter::once(init[k]).chain(run.states.iter().map(|s| s.parts()[k])).collect()).collect();
    let h_t = states[0][steps];
    let loss = g.mse_loss(h_t, y)?;
    Ok((g, states, loss))
}

/// `steps` SGD steps (lr 0.05) from `p0` on [`run`]'s loss, optionally clipping the
/// gradient norm: the loss and the (unclipped) gradient norm at every step.
fn train_sgd(
    cell: &dyn Cell<f64>,
    p0: &ParamStore<f64>,
    steps: usize,
    seed: u64,
    clip: Option<f64>,
    iters: usize,
) -> Res<(Vec<f64>, Vec<f64>)> {
    let mut p = p0.clone();
    let (mut g, _, loss) = run(cell, &p, steps, seed)?;
    let grad_nodes = g.param_grads(loss)?;
    let mut opt = AnyOptimizer::by_name("sgd", 0.05)?;
    let (mut losses, mut norms) = (Vec::new(), Vec::new());
    for i in 0..iters {
        if i > 0 {
            g.load_params(&p)?;
            g.replay()?;
        }
        losses.push(g.scalar_value(loss)?);
        let mut grads = grad_nodes
            .iter()
            .map(|(k, &id)| Ok((k.clone(), g.value(id)?.to_owned())))
            .collect::<Res<BTreeMap<_, _>>>()?;
        norms.push(match clip {
            Some(c) => clip_grad_norm(&mut grads, c, 2.0)?,
            None => grad_norm(&grads, 2.0)?,
        });
        opt.step(&mut p, &grads)?;
    }
    Ok((losses, norms))
}

fn fmt_every(v: &[f64], every: usize) -> String {
    v.iter()
        .enumerate()
        .filter(|(i, _)| i % every == 0 || *i + 1 == v.len())
        .map(|(_, x)| format!("{x:.2e}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() -> Res<()> {
    let args = Args::parse();
    if args.steps < 2 || args.hidden == 0 {
        return Err("--steps must be at least 2 and --hidden at least 1".into());
    }
    let (t, h) = (args.steps, args.hidden);
    let every = (t / 6).max(1);
    let mut report: BTreeMap<String, GradientFlow> = BTreeMap::new();

    // 1. A tanh RNN with W_hh = γ Q (Q orthogonal): every singular value of W_hh is γ.
    println!("tanh RNN, H={h}, T={t}, W_hh = gamma * orthogonal; |dh_T/dh_t| for t = 1 … T (every {every}th):");
    let cell = Elman::new("rnn.", 0, false, INPUT, h, Nonlinearity::Tanh);
    let mut rng = Rng::new(args.seed);
    let q = orthogonal(&mut rng, h, h);
    let w_ih = Array2::from_shape_fn((h, INPUT), |_| rng.uniform_in(-0.5, 0.5));
    for gamma in [0.8, 1.0, 1.2] {
        let mut p = ParamStore::<f64>::new();
        p.insert("rnn.weight_ih_l0", w_ih.clone().into_dyn());
        p.insert("rnn.weight_hh_l0", (&q * gamma).into_dyn());
        p.insert("rnn.bias_ih_l0", ArrayD::zeros(IxDyn(&[h])));
        p.insert("rnn.bias_hh_l0", ArrayD::zeros(IxDyn(&[h])));
        let w_sv = singular_values(&(&q * gamma))?;
        let (mut g, states, loss) = run(&cell, &p, t, args.seed + 1)?;
        let flow = gradient_flow(&mut g, loss, &states[0])?;
        let step_max = flow.step_singular_values.iter().map(|s| s[0]).fold(0.0, f64::max);
        println!(
            "  gamma {gamma}: sigma_max(W_hh) {:.3}, largest step-Jacobian singular value {:.3}\n    |dh_T/dh_t|: {}\n    |dL/dh_t|:   {}",
            w_sv[0],
            step_max,
            fmt_every(&flow.final_state_jacobian_norms, every),
            fmt_every(&flow.loss_grad_norms, every),
        );
        report.insert(format!("rnn gamma={gamma}"), flow);
    }

    // 2. An LSTM: the cell path multiplies the gradient by the forget gate.
    println!(
        "\nLSTM, H={h}, T={t} (PyTorch's initialization): |dc_T/dc_t| over every path (the cell path's product of \
         forget gates, and the paths through h), by forget-gate bias:"
    );
    let lstm = Lstm::new("lstm.", 0, false, INPUT, h);
    for forget_bias in [0.0, 5.0] {
        let mut p = ParamStore::<f64>::new();
        init_params(&<Lstm as Cell<f64>>::params(&lstm), &mut p, &Init::torch(args.seed));
        // PyTorch's gate order i, f, g, o: rows H..2H of the biases are the forget gate's.
        let mut b = ArrayD::<f64>::zeros(IxDyn(&[4 * h]));
        for k in h..2 * h {
            b[k] = forget_bias;
        }
        p.insert("lstm.bias_ih_l0", b);
        p.insert("lstm.bias_hh_l0", ArrayD::zeros(IxDyn(&[4 * h])));
        let (mut g, states, loss) = run(&lstm, &p, t, args.seed + 1)?;
        let c_norms = final_state_jacobian_norms(&mut g, &states[1][1..], 0)?;
        let mut flow = gradient_flow(&mut g, loss, &states[0])?;
        println!(
            "  forget bias {forget_bias} (f = {:.3}):\n    |dc_T/dc_t|: {}\n    |dh_T/dh_t|: {}",
            1.0 / (1.0 + (-forget_bias).exp()),
            fmt_every(&c_norms, every),
            fmt_every(&flow.final_state_jacobian_norms, every)
        );
        report.insert(format!("lstm forget bias {forget_bias}, h path"), flow.clone());
        flow.final_state_jacobian_norms = c_norms;
        report.insert(format!("lstm forget bias {forget_bias}, c path"), flow);
    }

    // 3. Clipping: SGD on the exploding RNN, with and without clip_grad_norm (PyTorch's clip_grad_norm_).
    println!("\nSGD (lr 0.05) on the exploding RNN (gamma 1.5), loss at steps 0, 1, 2, 5, 10, 30:");
    let mut p = ParamStore::<f64>::new();
    p.insert("rnn.weight_ih_l0", w_ih.clone().into_dyn());
    p.insert("rnn.weight_hh_l0", (&q * 1.5).into_dyn());
    p.insert("rnn.bias_ih_l0", ArrayD::zeros(IxDyn(&[h])));
    p.insert("rnn.bias_hh_l0", ArrayD::zeros(IxDyn(&[h])));
    let mut curves = Vec::new();
    for clip in [None, Some(1.0)] {
        let (losses, norms) = train_sgd(&cell, &p, t, args.seed + 1, clip, 31)?;
        let at: Vec<String> = [0, 1, 2, 5, 10, 30].iter().map(|&i| format!("{:.4}", losses[i])).collect();
        let label = clip.map_or("no clipping".to_string(), |c| format!("clip_grad_norm({c})"));
        println!(
            "  {label:22} loss {}   (first gradient norm {:.3e}, largest step {:.3e})",
            at.join(" "),
            norms[0],
            norms.iter().map(|n| clip.map_or(*n, |c| n.min(c))).fold(0.0, f64::max) * 0.05
        );
        curves.push((label, losses));
    }

    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("gradient_flow.json"), serde_json::to_string_pretty(&report)?)?;
    let series = |f: &dyn Fn(&GradientFlow) -> &Vec<f64>| -> Vec<Series> {
        report.iter().map(|(n, fl)| Series::indexed(n, 1.0, f(fl))).collect()
    };
    plot_panels(
        args.out.join("gradient_flow.svg"),
        &[
            Panel {
                title: "|dh_T/dh_t| (|dc_T/dc_t| for the c path)".into(),
                x_label: "time step t".into(),
                y_label: "spectral norm".into(),
                log_y: true,
                series: series(&|f| &f.final_state_jacobian_norms),
            },
            Panel {
                title: "|dL/dh_t|".into(),
                x_label: "time step t".into(),
                y_label: "norm".into(),
                log_y: true,
                series: series(&|f| &f.loss_grad_norms),
            },
            Panel {
                title: "SGD on the exploding RNN".into(),
                x_label: "SGD step".into(),
                y_label: "loss".into(),
                log_y: false,
                series: curves.iter().map(|(n, l)| Series::indexed(n, 0.0, l)).collect(),
            },
        ],
    )?;
    println!("\nwrote {0}/gradient_flow.json and {0}/gradient_flow.svg", args.out.display());
    Ok(())
}
