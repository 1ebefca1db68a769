//! A tour of the recorded graph: a small tanh RNN unrolled over five steps.
//!
//! It records the forward pass and the reverse sweep (BPTT) into one graph,
//! prints the summary (nodes per op and per step, parameter fan-out), the
//! gradients as the stable text a snapshot test pins, the first lines of the
//! SSA text form, and writes the graph as Graphviz DOT and as JSON.
//!
//! `cargo run --release --example tour -- [OUT_DIR]` (default `out/tour`).

use std::path::PathBuf;

use unrolled::autograd::{snapshot, Graph, ParamStore};
use unrolled::ndarray::{ArrayD, IxDyn};

fn seeded(shape: &[usize], seed: u64, scale: f64) -> ArrayD<f64> {
    let mut s = seed;
    let n = shape.iter().product();
    let v = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), v).expect("sized")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "out/tour".into()));
    let (steps, batch, input, hidden) = (5, 2, 3, 4);

    // Parameters live outside the graph, named as in a PyTorch state_dict.
    let mut params = ParamStore::<f64>::new();
    params.insert("rnn.weight_ih_l0", seeded(&[hidden, input], 1, 0.5));
    params.insert("rnn.weight_hh_l0", seeded(&[hidden, hidden], 2, 0.5));
    params.insert("rnn.bias_ih_l0", seeded(&[hidden], 3, 0.1));
    params.insert("rnn.bias_hh_l0", seeded(&[hidden], 4, 0.1));

    let mut g = Graph::new();
    let w_ih = g.param(&params, "rnn.weight_ih_l0")?;
    let w_hh = g.param(&params, "rnn.weight_hh_l0")?;
    let b_ih = g.param(&params, "rnn.bias_ih_l0")?;
    let b_hh = g.param(&params, "rnn.bias_hh_l0")?;
    let x = g.input_named("x", seeded(&[steps, batch, input], 5, 1.0));
    let target = g.input_named("y", seeded(&[steps, batch, hidden], 6, 0.8));

    // h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), one scope per step.
    let mut h = g.zeros(&[batch, hidden]);
    let mut hs = Vec::new();
    {
        let mut g = g.scope("rnn");
        let mut g = g.layer(0);
        for t in 0..steps {
            let mut g = g.step(t);
            let xt = g.select(x, 0, t)?;
            let a = g.linear(xt, w_ih, Some(b_ih))?;
            let b = g.linear(h, w_hh, Some(b_hh))?;
            let s = g.add(a, b)?;
            h = g.tanh(s)?;
            hs.push(h);
        }
    }
    let hseq = g.stack(&hs, 0)?;
    let loss = g.mse_loss(hseq, target)?;
    println!("loss = {:.6}", g.scalar_value(loss)?);

    // BPTT is the ordinary reverse sweep; the gradients are nodes of the same graph.
    let grads = snapshot::param_grads(&mut g, loss)?;
    println!("\n{}", g.summary());
    println!("gradients (the text a snapshot test pins):\n{grads}");
    println!("first lines of the graph's text form:");
    for line in g.to_string().lines().take(16) {
        println!("  {line}");
    }

    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("rnn.dot"), g.to_dot())?;
    std::fs::write(out.join("rnn.json"), g.to_def().to_json())?;
    std::fs::write(out.join("rnn.txt"), g.to_string())?;
    println!("\nwrote {0}/rnn.dot, {0}/rnn.json and {0}/rnn.txt", out.display());
    println!("render the drawing with: dot -Tsvg {}/rnn.dot -o rnn.svg", out.display());
    Ok(())
}
