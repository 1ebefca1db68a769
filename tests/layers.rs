//! Layer semantics: a stepwise loop equals the layer, variable lengths equal
//! separate runs (PyTorch's packed sequences), errors, initializers, dropout.

mod common;

use ndarray::{s, ArrayD, ArrayViewD, Axis, IxDyn};
use unrolled::autograd::{Error, Graph, ParamStore, Result};
use unrolled::layers::{
    orthogonal, split_steps, Cell, GruVariant, Init, Lstm, Nonlinearity, Recurrent, RecurrentConfig, RunOptions, State,
    WeightInit,
};

fn lstm_params(cfg: &RecurrentConfig, seed: u64) -> (Recurrent<Lstm>, ParamStore<f64>) {
    let m = Recurrent::lstm("lstm.", cfg.clone());
    let mut p = ParamStore::new();
    m.init_params(&mut p, &Init::torch(seed));
    (m, p)
}

#[test]
fn stepwise_cell_loop_equals_the_layer() -> Result<()> {
    let cfg = RecurrentConfig::new(3, 4);
    let (lstm, p) = lstm_params(&cfg, 1);
    let x = common::uniform(&[5, 2, 3], 2, -1.0, 1.0);

    let mut g1 = Graph::new();
    let x1 = g1.input(x.clone());
    let out = lstm.forward(&mut g1, &p, x1, None, RunOptions::default())?;
    let l1 = g1.sum_all(out.output)?;
    let d1 = g1.param_grad_values(l1)?;

    let cell = Lstm::new("lstm.", 0, false, 3, 4);
    let mut g2 = Graph::new();
    let x2 = g2.input(x);
    let mut state = cell.zero_state(&mut g2, 2);
    let mut hs = Vec::new();
    for t in 0..5 {
        let xt = g2.select(x2, 0, t)?;
        let step = cell.step(&mut g2, &p, xt, &state)?;
        hs.push(step.output);
        state = step.state;
    }
    let h = g2.stack(&hs, 0)?;
    let l2 = g2.sum_all(h)?;
    let d2 = g2.param_grad_values(l2)?;
    // The layer computes every step's input projection in one matrix multiply (and the
    // weight gradient of it in one), the loop one per step: the same sums, grouped
    // differently, so they agree to rounding.
    let rel = |a: ArrayViewD<f64>, b: ArrayViewD<f64>| {
        a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs() / x.abs().max(1.0)).fold(0.0, f64::max)
    };
    let out_err = rel(g1.value(out.output)?.view(), g2.value(h)?.view());
    let grad_err = d1.iter().map(|(k, v)| rel(v.view(), d2[k].view())).fold(0.0, f64::max);
    eprintln!("stepwise vs layer: outputs {out_err:e}, gradients {grad_err:e}");
    assert!(out_err <= 1e-14 && grad_err <= 1e-14, "outputs {out_err:e}, gradients {grad_err:e}");
    assert_eq!(d1.keys().collect::<Vec<_>>(), d2.keys().collect::<Vec<_>>());
    Ok(())
}

/// Each sequence of a padded batch, run with lengths, equals that sequence run
/// alone at its own length: outputs (zero past the end), final states, and the
/// backward direction starting at the sequence's own end.
#[test]
fn variable_lengths_match_separate_runs() -> Result<()> {
    let cfg = RecurrentConfig::new(2, 3).layers(2).bidirectional(true);
    let (lstm, p) = lstm_params(&cfg, 3);
    let lengths = [4, 1, 3];
    let x = common::uniform(&[4, 3, 2], 4, -1.0, 1.0);
    let mut g = Graph::new();
    let xb = g.input(x.clone());
    let out = lstm.forward(&mut g, &p, xb, None, RunOptions { lengths: Some(&lengths), ..Default::default() })?;
    let batch_out = g.value(out.output)?.to_owned();
    let batch_h = g.value(out.h_n())?.to_owned();
    let batch_c = g.value(out.c_n().unwrap())?.to_owned();
    for (b, &len) in lengths.iter().enumerate() {
        let mut g1 = Graph::new();
        let xs = g1.input(x.slice(s![0..len, b..b + 1, ..]).to_owned().into_dyn());
        let o = lstm.forward(&mut g1, &p, xs, None, RunOptions::default())?;
        let alone = g1.value(o.output)?;
        for t in 0..4 {
            let got = batch_out.slice(s![t, b, ..]);
            if t < len {
                let want = alone.slice(s![t, 0, ..]);
                assert!(got.iter().zip(want.iter()).all(|(a, b)| (a - b).abs() < 1e-14), "b={b} t={t}");
            } else {
                assert!(got.iter().all(|&v| v == 0.0), "padding is zero: b={b} t={t}");
            }
        }
        let (h1, c1) = (g1.value(o.h_n())?, g1.value(o.c_n().unwrap())?);
        let close = |a: ndarray::ArrayViewD<f64>, b: ndarray::ArrayViewD<f64>| {
            a.iter().zip(b.iter()).all(|(x, y)| (x - y).abs() < 1e-14)
        };
        assert!(
            close(batch_h.index_axis(Axis(1), b).into_dyn(), h1.index_axis(Axis(1), 0).into_dyn()),
            "h_n of sequence {b}"
        );
        assert!(
            close(batch_c.index_axis(Axis(1), b).into_dyn(), c1.index_axis(Axis(1), 0).into_dyn()),
            "c_n of sequence {b}"
        );
    }
    Ok(())
}

#[test]
fn errors_name_the_problem() {
    let cfg = RecurrentConfig::new(3, 4);
    let (lstm, p) = lstm_params(&cfg, 5);
    let mut g = Graph::<f64>::new();
    let wrong = g.input(ArrayD::zeros(IxDyn(&[5, 2, 7])));
    let e = lstm.forward(&mut g, &p, wrong, None, RunOptions::default()).unwrap_err();
    assert_eq!(e.to_string(), "shape mismatch in recurrent input at lstm: lhs [5, 2, 3], rhs [5, 2, 7]");

    let x = g.input(ArrayD::zeros(IxDyn(&[5, 2, 3])));
    let h0 = g.input(ArrayD::zeros(IxDyn(&[1, 3, 4])));
    let c0 = g.input(ArrayD::zeros(IxDyn(&[1, 3, 4])));
    let e = lstm.forward(&mut g, &p, x, Some(&[h0, c0]), RunOptions::default()).unwrap_err();
    assert_eq!(e.to_string(), "shape mismatch in recurrent state at lstm: lhs [1, 2, 4], rhs [1, 3, 4]");

    let h0 = g.input(ArrayD::zeros(IxDyn(&[1, 2, 4])));
    let e = lstm.forward(&mut g, &p, x, Some(&[h0]), RunOptions::default()).unwrap_err();
    assert!(matches!(e, Error::InvalidInput { op: "state", .. }), "{e}");

    let e = lstm.forward(&mut g, &p, x, None, RunOptions { lengths: Some(&[6, 2]), ..Default::default() }).unwrap_err();
    assert_eq!(e.to_string(), "invalid input to unroll at lstm/l0: length 6 is not in 1..=5; input shapes []");
    let e = lstm.forward(&mut g, &p, x, None, RunOptions { lengths: Some(&[0, 2]), ..Default::default() }).unwrap_err();
    assert!(e.to_string().contains("length 0 is not in 1..=5"), "{e}");
    let e = lstm.forward(&mut g, &p, x, None, RunOptions { lengths: Some(&[2]), ..Default::default() }).unwrap_err();
    assert!(e.to_string().contains("1 lengths for a batch of 2"), "{e}");

    let empty = g.input(ArrayD::zeros(IxDyn(&[0, 2, 3])));
    let e = lstm.forward(&mut g, &p, empty, None, RunOptions::default()).unwrap_err();
    assert!(e.to_string().contains("at least one step"), "{e}");

    let e = lstm.forward(&mut g, &ParamStore::new(), x, None, RunOptions::default()).unwrap_err();
    assert_eq!(e.to_string(), "unknown parameter `lstm.weight_ih_l0` in param");
}

#[test]
fn initializers() {
    let gru = Recurrent::gru("gru.", RecurrentConfig::new(3, 5).layers(2), GruVariant::Torch);
    let mut a = ParamStore::<f64>::new();
    let mut b = ParamStore::<f64>::new();
    gru.init_params(&mut a, &Init::torch(7));
    gru.init_params(&mut b, &Init::torch(7));
    assert_eq!(a, b, "seeded and reproducible");
    let names: Vec<&str> = a.names().collect();
    assert_eq!(
        names,
        [
            "gru.bias_hh_l0",
            "gru.bias_hh_l1",
            "gru.bias_ih_l0",
            "gru.bias_ih_l1",
            "gru.weight_hh_l0",
            "gru.weight_hh_l1",
            "gru.weight_ih_l0",
            "gru.weight_ih_l1"
        ]
    );
    assert_eq!(a.get("gru.weight_ih_l1").unwrap().shape(), &[15, 5]);
    let k = 1.0 / 5f64.sqrt();
    assert!(a.iter().all(|(_, v)| v.iter().all(|x| x.abs() <= k)), "PyTorch's bound 1/sqrt(H)");

    let lstm = Recurrent::lstm("", RecurrentConfig::new(3, 4));
    let mut p = ParamStore::<f64>::new();
    lstm.init_params(&mut p, &Init::xavier_orthogonal(1));
    let w = p.get("weight_hh_l0").unwrap().clone().into_dimensionality::<ndarray::Ix2>().unwrap();
    for gate in 0..4 {
        let blk = w.slice(s![gate * 4..(gate + 1) * 4, ..]);
        let qtq = blk.t().dot(&blk);
        assert!(
            qtq.indexed_iter().all(|((i, j), &v)| (v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12),
            "orthogonal block {gate}"
        );
    }
    let bias = p.get("bias_ih_l0").unwrap();
    assert_eq!(
        bias.iter().copied().collect::<Vec<_>>(),
        [0., 0., 0., 0., 1., 1., 1., 1., 0., 0., 0., 0., 0., 0., 0., 0.],
        "forget-gate bias"
    );
    assert!(p.get("bias_hh_l0").unwrap().iter().all(|&v| v == 0.0));

    let rnn = Recurrent::rnn("", RecurrentConfig::new(2, 3), Nonlinearity::Relu);
    let mut q = ParamStore::<f64>::new();
    rnn.init_params(&mut q, &Init::irnn(0));
    let w = q.get("weight_hh_l0").unwrap();
    assert_eq!(w, &ndarray::Array2::<f64>::eye(3).into_dyn(), "IRNN: identity recurrent matrix");
    let init = Init { recurrent: WeightInit::Identity(0.5), ..Init::irnn(0) };
    rnn.init_params(&mut q, &init);
    assert_eq!(q.get("weight_hh_l0").unwrap()[[1, 1]], 0.5);

    let wide = orthogonal(&mut unrolled::autograd::Rng::new(3), 2, 5);
    let wwt = wide.dot(&wide.t());
    assert!((wwt[[0, 0]] - 1.0).abs() < 1e-12 && wwt[[0, 1]].abs() < 1e-12, "orthonormal rows when wide");
}

#[test]
fn dropout_between_layers_only_in_training() -> Result<()> {
    let cfg = RecurrentConfig::new(2, 8).layers(3).dropout(0.5);
    let (lstm, p) = lstm_params(&cfg, 9);
    let x = common::uniform(&[3, 2, 2], 10, -1.0, 1.0);
    let run = |train: bool, seed: u64| -> Result<(ArrayD<f64>, usize)> {
        let mut g = Graph::new();
        let xi = g.input(x.clone());
        let o = lstm.forward(&mut g, &p, xi, None, RunOptions { train, seed, lengths: None })?;
        let masks = g.nodes().iter().filter(|n| n.op().name() == "dropout_mask").count();
        Ok((g.value(o.output)?.to_owned(), masks))
    };
    let (eval, m0) = run(false, 0)?;
    let (eval2, _) = run(false, 1)?;
    let (train, m1) = run(true, 0)?;
    let (train_again, _) = run(true, 0)?;
    let (train_other, _) = run(true, 1)?;
    assert_eq!(m0, 0);
    assert_eq!(m1, 2 * 3, "between 3 layers: 2 gaps × 3 steps, none after the last");
    assert_eq!(eval, eval2);
    assert_ne!(eval, train);
    assert_eq!(train, train_again, "seeded");
    assert_ne!(train, train_other);
    Ok(())
}

#[test]
fn scopes_of_a_bidirectional_stack() -> Result<()> {
    let cfg = RecurrentConfig::new(2, 3).layers(2).bidirectional(true);
    let (lstm, p) = lstm_params(&cfg, 11);
    let mut g = Graph::new();
    let x = g.input(common::uniform(&[3, 1, 2], 12, -1.0, 1.0));
    let out = lstm.forward(&mut g, &p, x, None, RunOptions::default())?;
    let f = out.detail.layers[1].bwd.as_ref().unwrap().taps[2][1];
    let info = g.scope_info(g.node(f)?.scope());
    assert_eq!(info.path, "lstm/l1/bwd/t2/forget_gate");
    assert_eq!((info.layer, info.step), (Some(1), Some(2)));
    let s = g.summary();
    assert_eq!(s.param_fanout["lstm.weight_hh_l1_reverse"], 3, "one use per step");
    Ok(())
}

#[test]
fn a_given_state_is_checked() {
    let cell = Lstm::new("", 0, false, 2, 3);
    let mut g = Graph::<f64>::new();
    let x = g.input(ArrayD::zeros(IxDyn(&[2, 1, 2])));
    let xs = split_steps(&mut g, x).unwrap();
    let h = g.input(ArrayD::zeros(IxDyn(&[1, 3])));
    let c = g.input(ArrayD::zeros(IxDyn(&[1, 4])));
    let e =
        unrolled::layers::unroll(&cell, &mut g, &ParamStore::new(), &xs, Some(State::two(h, c)), Default::default())
            .unwrap_err();
    assert_eq!(e.to_string(), "shape mismatch in state at <root>: lhs [1, 3], rhs [1, 4]");
}

type ValuesAndGrads = (Vec<ArrayD<f64>>, Vec<ArrayD<f64>>);

/// One fused node per step gives the primitive ops' values, taps and gradients
/// (second order included), for the LSTM and both GRU paths; at a size where the
/// state blocks are read in place from the previous step's fused output (strided
/// views, `[B, H]` rows `kH` apart) as at one where they are copied.
#[test]
fn fused_cells_equal_their_primitive_ops() -> Result<()> {
    // (input, hidden, batch, whether the fused outputs are large enough to be viewed)
    for (input, hidden, batch, viewed) in [(3, 4, 2, false), (5, 128, 8, true)] {
        fused_cells_equal_their_primitive_ops_at(input, hidden, batch, viewed)?;
    }
    Ok(())
}

fn fused_cells_equal_their_primitive_ops_at(input: usize, hidden: usize, batch: usize, viewed: bool) -> Result<()> {
    use unrolled::layers::{unroll, Gru, UnrollOptions};
    let lstm = Lstm::new("lstm.", 0, false, input, hidden);
    let gru = Gru::new("gru.", 0, false, input, hidden, GruVariant::Torch);
    let cells: [(&dyn Cell<f64>, &dyn Cell<f64>); 2] =
        [(&lstm, &lstm.clone().unfused()), (&gru, &gru.clone().unfused())];
    for (k, (fused, plain)) in cells.into_iter().enumerate() {
        let mut p = ParamStore::new();
        unrolled::layers::init_params(&fused.params(), &mut p, &Init::torch(3 + k as u64));
        let x = common::uniform(&[4, batch, input], 5, -1.0, 1.0);
        let run = |cell: &dyn Cell<f64>, blocks: usize| -> Result<ValuesAndGrads> {
            let mut g = Graph::new();
            let xi = g.input(x.clone());
            let xs = split_steps(&mut g, xi)?;
            let u = unroll(cell, &mut g, &p, &xs, None, UnrollOptions::default())?;
            if viewed && blocks > 0 {
                let strides = g.value(u.outputs[1])?.strides().to_vec();
                assert_eq!(strides, [(blocks * hidden) as isize, 1], "h is a view of the fused output");
            }
            let ys = g.stack(&u.outputs, 0)?;
            let sq = g.square(ys)?;
            let taps: Vec<_> = u.taps.iter().flatten().copied().collect();
            let tap_sum = g.stack(&taps, 0)?;
            let tap_sum = g.sum_all(tap_sum)?;
            let l = g.sum_all(sq)?;
            let l = g.add(l, tap_sum)?;
            let w = g.params().values().copied().collect::<Vec<_>>();
            let dw = g.grad(l, &w)?;
            // Second order: the gradient norm's gradient (through the fused gradient nodes).
            let n2: Vec<_> = dw.iter().map(|&d| g.square(d)).collect::<Result<_>>()?;
            let n2: Vec<_> = n2.into_iter().map(|d| g.sum_all(d)).collect::<Result<_>>()?;
            let n2 = g.add_n(&n2)?;
            let ddw = g.grad(n2, &w)?;
            let mut vals = vec![g.value(ys)?.to_owned(), g.value(l)?.to_owned()];
            vals.extend(taps.iter().map(|&t| g.value(t).map(|v| v.to_owned())).collect::<Result<Vec<_>>>()?);
            let grads = dw.iter().chain(&ddw).map(|&d| g.value(d).map(|v| v.to_owned())).collect::<Result<Vec<_>>>()?;
            Ok((vals, grads))
        };
        let (v1, g1) = run(fused, if k == 0 { 6 } else { 4 })?;
        let (v2, g2) = run(plain, 0)?;
        assert_eq!(v1.len(), v2.len());
        for (a, b) in v1.iter().chain(&g1).zip(v2.iter().chain(&g2)) {
            let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            let err = a.iter().zip(b.iter()).fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
            assert!(err <= 1e-12 * scale, "cell {k} at H={hidden}: fused and primitive differ by {err}");
        }
    }
    Ok(())
}
