//! Queries, collapsed views and gradient-flow diagnostics, with exact expectations.

mod common;

use ndarray::{arr1, Array2, ArrayD};
use unrolled::autograd::{Collapse, Direction, Graph, NodeId, ParamStore, Result, Rng};
use unrolled::layers::diagnostics::{gradient_flow, jacobian, loss_grad_norms, saturation, singular_values};
use unrolled::layers::{orthogonal, Init, Recurrent, RecurrentConfig, RunOptions, Tbptt};

/// A linear RNN `h_t = h_{t-1} Wᵀ + x_t`; returns the graph, `h_0 … h_T` and `W`'s node.
fn linear_rnn(w: Array2<f64>, steps: usize, b: usize) -> Result<(Graph<f64>, Vec<NodeId>, NodeId)> {
    let n = w.nrows();
    let mut g = Graph::new();
    let wn = g.input_named("W", w.into_dyn());
    let mut hs = vec![g.input_named("h0", common::uniform(&[b, n], 1, -1.0, 1.0))];
    for t in 0..steps {
        let mut g = g.step(t);
        let x = g.constant(common::uniform(&[b, n], 10 + t as u64, -1.0, 1.0));
        let a = g.matmul_t(*hs.last().unwrap(), wn, false, true)?;
        hs.push(g.add(a, x)?);
    }
    Ok((g, hs, wn))
}

#[test]
fn step_jacobian_singular_values_of_a_linear_rnn_are_those_of_w() -> Result<()> {
    let mut rng = Rng::new(4);
    let (q, r) = (orthogonal(&mut rng, 3, 3), orthogonal(&mut rng, 3, 3));
    let w = q.dot(&Array2::from_diag(&arr1(&[2.0, 0.5, 0.1]))).dot(&r.t());
    let (mut g, hs, _) = linear_rnn(w.clone(), 4, 2)?;
    let j = jacobian(&mut g, hs[3], hs[2], 1)?;
    assert!(j.iter().zip(w.iter()).all(|(a, b)| (a - b).abs() < 1e-14), "∂h_t/∂h_(t-1) = W");
    let sv = singular_values(&j)?;
    for (a, b) in sv.iter().zip([2.0, 0.5, 0.1]) {
        assert!((a - b).abs() < 1e-12, "{sv:?}");
    }
    Ok(())
}

#[test]
fn loss_gradient_norms_shrink_and_grow_as_the_scale_of_w() -> Result<()> {
    for s in [0.5, 1.5] {
        let (mut g, hs, _) = linear_rnn(Array2::eye(3) * s, 5, 1)?;
        let wl = g.constant(ArrayD::from_elem(vec![1, 3], 2.0));
        let p = g.mul(*hs.last().unwrap(), wl)?;
        let loss = g.sum_all(p)?;
        let norms = loss_grad_norms(&mut g, loss, &hs[1..])?;
        let w_norm = (3.0f64 * 4.0).sqrt();
        for (t, n) in norms.iter().enumerate() {
            let want = w_norm * s.powi(4 - t as i32);
            assert!((n - want).abs() < 1e-12, "s={s} t={t}: {n} vs {want}");
        }
        let flow = gradient_flow(&mut g, loss, &hs)?;
        assert_eq!(flow.step_singular_values.len(), 5);
        assert!(flow.step_singular_values.iter().flatten().all(|v| (v - s).abs() < 1e-12));
        let json = serde_json::to_string(&flow).unwrap();
        assert!(json.contains("loss_grad_norms"));
    }
    Ok(())
}

#[test]
fn gate_saturation() -> Result<()> {
    let mut g = Graph::<f64>::new();
    let a = g.input(arr1(&[0.01, 0.5, 0.99, 0.97]).into_dyn());
    let s = saturation(&g, &[a], 0.05, 0.95)?;
    assert_eq!((s.low, s.high), (0.25, 0.5));
    Ok(())
}

fn bi_stack() -> Result<(Graph<f64>, unrolled::layers::RecurrentOutput, ParamStore<f64>)> {
    let lstm = Recurrent::lstm("lstm.", RecurrentConfig::new(2, 3).layers(2).bidirectional(true));
    let mut p = ParamStore::new();
    lstm.init_params(&mut p, &Init::torch(1));
    let mut g = Graph::new();
    let x = g.input_named("x", common::uniform(&[4, 1, 2], 2, -1.0, 1.0));
    let out = lstm.forward(&mut g, &p, x, None, RunOptions::default())?;
    Ok((g, out, p))
}

#[test]
fn queries_by_step_layer_direction_and_gate() -> Result<()> {
    let (mut g, out, _) = bi_stack()?;
    let f = g.query().step(2).layer(1).direction(Direction::Backward).gate("forget_gate").gradient(false).nodes();
    assert_eq!(f.len(), 1);
    assert_eq!(g.node(f[0])?.op().name(), "narrow", "the gate is a named slice of the fused step");
    assert_eq!(g.node(g.node(f[0])?.inputs()[0])?.op().name(), "lstm_cell");
    assert_eq!(f[0], out.detail.layers[1].bwd.as_ref().unwrap().taps[2][1], "the query finds the tap");
    assert_eq!(g.query().op("lstm_cell").layer(0).nodes().len(), 2 * 4, "2 directions × 4 steps, one node each");
    let per_step = g.ops_per_step();
    assert_eq!(per_step.len(), 4);
    assert!(per_step.values().all(|ops| ops == &per_step[&0]), "every step records the same ops");

    let loss = g.sum_all(out.output)?;
    let w = g.params()["lstm.weight_hh_l0"];
    let path = g.paths_between(w, loss);
    assert_eq!(path.first(), Some(&w));
    assert_eq!(path.last(), Some(&loss));
    let anc = g.ancestors(loss);
    assert!(path[1..].iter().all(|n| anc.contains(n) || *n == loss));
    let d = g.descendants(w);
    assert!(path[1..].iter().all(|n| d.contains(n)));
    let unrelated = g.input(arr1(&[1.0]).into_dyn());
    assert!(g.paths_between(unrelated, loss).is_empty());
    assert!(g.paths_between(loss, w).is_empty());
    let t1 = g.query().step(1).layer(0).direction(Direction::Forward).nodes();
    let text = g.subgraph_text(&t1);
    assert_eq!(text.lines().count(), t1.len());
    assert!(text.lines().all(|l| l.contains("# lstm/l0/fwd/t1")), "{text}");
    let _ = g.grad(loss, &[w])?;
    assert!(!g.query().gradient(true).step(3).nodes().is_empty(), "gradient nodes keep their step");
    Ok(())
}

#[test]
fn where_truncated_bptt_cut_the_graph() -> Result<()> {
    let mut g = Graph::<f64>::new();
    let h = g.input(arr1(&[0.5]).into_dyn());
    let a = g.tanh(h)?;
    let cut = Tbptt::cut(&mut g, &[a])?;
    let _ = g.tanh(cut[0])?;
    assert_eq!(g.cuts(), cut);
    assert_eq!(g.detached(), cut);
    Ok(())
}

#[test]
fn collapsed_views() -> Result<()> {
    let (g, _, _) = bi_stack()?;
    insta::assert_snapshot!("collapsed_by_layer", g.to_dot_collapsed(Collapse::Layer));
    insta::assert_snapshot!("collapsed_by_step", g.to_dot_collapsed(Collapse::Step));
    let by_cell = g.to_dot_collapsed(Collapse::Cell);
    insta::assert_snapshot!("collapsed_by_cell", by_cell);
    // Per layer: 2 directions × 4 steps of cells, 4 merges (l{l}_t{t}), 2 input projections
    // (l{l}_fwd, l{l}_bwd); then the input's 4 per-step slices (t0..t3) and `outside`.
    let boxes = by_cell.lines().filter(|l| l.contains("nodes\\n")).count();
    assert_eq!(boxes, 2 * (2 * 4 + 4 + 2) + 4 + 1);
    assert!(by_cell.contains("l1_bwd_t2 [label=\"l1_bwd_t2\\n"), "{by_cell}");
    // A thousand steps stay a thousand boxes in a chain.
    let rnn = Recurrent::rnn("", RecurrentConfig::new(1, 2), unrolled::layers::Nonlinearity::Tanh);
    let mut p = ParamStore::<f64>::new();
    rnn.init_params(&mut p, &Init::torch(0));
    let mut g2 = Graph::new();
    let x = g2.input(ArrayD::zeros(vec![1000, 1, 1]));
    rnn.forward(&mut g2, &p, x, None, RunOptions::default())?;
    let dot = g2.to_dot_collapsed(Collapse::Step);
    assert_eq!(dot.lines().filter(|l| l.contains("nodes\\n")).count(), 1001);
    // In blocks of 100 steps: 10 boxes in a chain, and the box outside the steps.
    let blocks = g2.to_dot_collapsed(Collapse::Steps(100));
    assert_eq!(blocks.lines().filter(|l| l.contains("nodes\\n")).count(), 11, "{blocks}");
    assert!(blocks.contains("t0_99 -> t100_199 [label=\"1\"]"), "{blocks}");
    assert!(blocks.contains("t900_999 [label=\"t900_999\\n"), "{blocks}");
    insta::assert_snapshot!("collapsed_t1000_blocks_of_100", blocks);
    Ok(())
}
