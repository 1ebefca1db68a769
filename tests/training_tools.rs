//! Sampling, truncated-BPTT windows, warm-start generation, scheduled sampling.

mod common;

use ndarray::ArrayD;
use unrolled::autograd::{Graph, ParamStore, Result, Rng};
use unrolled::layers::{sample_logits, CellKind, CharRnn, RunOptions, Tbptt, Window};

#[test]
fn sampling_with_temperature_and_top_k() {
    let logits = [0.1, 2.0, -1.0, 1.9];
    let mut rng = Rng::new(1);
    assert_eq!(sample_logits(&logits, 0.0, 0, &mut rng), 1, "temperature 0 is greedy");
    assert_eq!(sample_logits(&logits, 5.0, 1, &mut rng), 1, "top-1 is greedy");
    let mut counts = [0usize; 4];
    for _ in 0..4000 {
        counts[sample_logits(&logits, 1.0, 2, &mut rng)] += 1;
    }
    assert_eq!(counts[0] + counts[2], 0, "top-2 keeps indices 1 and 3 only");
    let p1 = counts[1] as f64 / 4000.0;
    let want = 1.0 / (1.0 + (-0.1f64).exp());
    assert!((p1 - want).abs() < 0.03, "softmax over the kept logits: {p1} vs {want}");
    let mut cold = [0usize; 4];
    for _ in 0..2000 {
        cold[sample_logits(&logits, 0.05, 0, &mut rng)] += 1;
    }
    let p_cold = cold[1] as f64 / 2000.0;
    let want_cold = 1.0 / (1.0 + (-0.1f64 / 0.05).exp()); // 0.881: logits 2.0 and 1.9 at T = 0.05
    assert!(cold[0] + cold[2] == 0 && (p_cold - want_cold).abs() < 0.03, "{cold:?}");
}

#[test]
fn tbptt_windows() {
    let w = Tbptt { k1: 3, k2: 3 }.windows(8);
    assert_eq!(
        w,
        vec![
            Window { start: 0, loss_from: 0, end: 3 },
            Window { start: 3, loss_from: 3, end: 6 },
            Window { start: 6, loss_from: 6, end: 8 }
        ]
    );
    let w = Tbptt { k1: 2, k2: 5 }.windows(6);
    assert_eq!(
        w,
        vec![
            Window { start: 0, loss_from: 0, end: 2 },
            Window { start: 0, loss_from: 2, end: 4 },
            Window { start: 1, loss_from: 4, end: 6 }
        ]
    );
}

#[test]
fn the_cut_is_visible_and_stops_gradients() -> Result<()> {
    let mut g = Graph::<f64>::new();
    let h = g.input(ArrayD::from_elem(vec![1, 2], 0.5));
    let cut = Tbptt::cut(&mut g, &[h])?;
    let y = g.tanh(cut[0])?;
    let l = g.sum_all(y)?;
    let d = g.grad(l, &[h])?[0];
    assert!(g.value(d)?.iter().all(|&v| v == 0.0));
    assert_eq!(g.scope_info(g.node(cut[0])?.scope()).path, "tbptt_cut");
    assert_eq!(g.node(cut[0])?.op().name(), "detach");
    Ok(())
}

fn model() -> (CharRnn, ParamStore<f64>) {
    let m = CharRnn::new(CellKind::Gru, 5, 3, 4, 2);
    let mut p = ParamStore::new();
    m.init_params(&mut p, 3);
    (m, p)
}

/// Generation replays one step at a time; it must agree with one forward pass
/// over the whole generated text (greedy, so the choices are reproducible).
#[test]
fn generation_agrees_with_a_full_forward_pass() -> Result<()> {
    let (m, p) = model();
    let prime = [1i64, 4, 2];
    let out = m.generate(&p, &prime, 6, 0.0, 0, &mut Rng::new(0))?;
    assert_eq!(out.len(), 6);
    let text: Vec<i64> = prime.iter().chain(&out).copied().collect();
    let mut g = Graph::new();
    let toks = g.index_input(ArrayD::from_shape_vec(vec![text.len(), 1], text.clone()).unwrap());
    let o = m.forward(&mut g, &p, toks, None, RunOptions::default())?;
    let logits = g.value(o.logits)?;
    for (k, &tok) in out.iter().enumerate() {
        let t = prime.len() - 1 + k;
        let row: Vec<f64> = (0..5).map(|v| logits[[t, 0, v]]).collect();
        assert_eq!(sample_logits(&row, 0.0, 0, &mut Rng::new(0)) as i64, tok, "step {t}");
    }
    assert!(m.generate(&p, &[], 3, 0.0, 0, &mut Rng::new(0)).is_err(), "an empty prime is an error");
    assert!(m.generate(&p, &[9], 3, 0.0, 0, &mut Rng::new(0)).is_err(), "an out-of-range prime is an error");
    Ok(())
}

#[test]
fn scheduled_sampling_at_zero_is_teacher_forcing() -> Result<()> {
    let (m, p) = model();
    let toks = ArrayD::from_shape_vec(vec![4, 2], vec![0i64, 1, 2, 3, 4, 0, 1, 2]).unwrap();
    let mut g = Graph::new();
    let tf = g.index_input(toks.clone());
    let o = m.forward(&mut g, &p, tf, None, RunOptions::default())?;
    let mut g2 = Graph::new();
    let s = m.forward_scheduled(&mut g2, &p, &toks, 0.0, &mut Rng::new(0))?;
    let (a, b) = (g.value(o.logits)?, g2.value(s)?);
    assert!(a.iter().zip(b.iter()).all(|(x, y)| (x - y).abs() < 1e-14));
    // With probability 1 every input after the first is the model's own greedy choice.
    let mut g3 = Graph::new();
    let s3 = m.forward_scheduled(&mut g3, &p, &toks, 1.0, &mut Rng::new(0))?;
    let gen = m.generate(&p, &[0], 3, 0.0, 0, &mut Rng::new(0))?;
    let mut g4 = Graph::new();
    let own: Vec<i64> = std::iter::once(0).chain(gen).collect();
    let t4 = g4.index_input(ArrayD::from_shape_vec(vec![4, 1], own).unwrap());
    let o4 = m.forward(&mut g4, &p, t4, None, RunOptions::default())?;
    let (x, y) = (g3.value(s3)?, g4.value(o4.logits)?);
    for t in 0..4 {
        for v in 0..5 {
            assert!((x[[t, 0, v]] - y[[t, 0, v]]).abs() < 1e-14);
        }
    }
    Ok(())
}

/// TBPTT(k1 = 2, k2 = 4) over 6 steps: each update's graph runs the whole prefix,
/// cuts the state at `start` (visible as a detach under `tbptt_cut`), and counts the
/// loss from `loss_from`. Its gradients equal those of a graph that starts at
/// `start` from the state as a constant, and nothing flows into earlier inputs.
#[test]
fn tbptt_windows_with_k2_longer_than_k1() -> Result<()> {
    use unrolled::layers::{split_steps, unroll, Elman, Nonlinearity, State, UnrollOptions};
    let cell = Elman::new("", 0, false, 2, 3, Nonlinearity::Tanh);
    let mut p = ParamStore::<f64>::new();
    unrolled::layers::init_params(
        &unrolled::layers::Cell::<f64>::params(&cell),
        &mut p,
        &unrolled::layers::Init::torch(2),
    );
    let x = common::uniform(&[6, 1, 2], 3, -1.0, 1.0);
    for w in (Tbptt { k1: 2, k2: 4 }).windows(6) {
        // The whole prefix, cut at `start`.
        let mut g = Graph::new();
        let xi = g.input(x.clone());
        let steps = split_steps(&mut g, xi)?;
        let before = unroll(&cell, &mut g, &p, &steps[..w.start.max(1)], None, UnrollOptions::default())?;
        let h_start =
            if w.start == 0 { None } else { Some(State(Tbptt::cut(&mut g, before.final_state.parts())?.into())) };
        let win = unroll(&cell, &mut g, &p, &steps[w.start..w.end], h_start.clone(), UnrollOptions::default())?;
        let counted: Vec<_> = win.outputs[w.loss_from - w.start..].to_vec();
        let h = g.stack(&counted, 0)?;
        let loss = g.sum_all(h)?;
        let grads = g.param_grad_values(loss)?;
        let dx = g.grad(loss, &[xi])?[0];
        let dx = g.value(dx)?.to_owned();
        assert!(dx.outer_iter().take(w.start).all(|r| r.iter().all(|&v| v == 0.0)), "no gradient before the cut");
        let cuts = g.nodes().iter().filter(|n| g.scope_info(n.scope()).path == "tbptt_cut").count();
        assert_eq!(cuts, if w.start == 0 { 0 } else { 1 });

        // The same window from the state as a constant.
        let mut g2 = Graph::new();
        let xs: Vec<_> = (w.start..w.end).map(|t| g2.input(x.index_axis(ndarray::Axis(0), t).to_owned())).collect();
        let init = match &h_start {
            None => None,
            Some(s) => Some(State::one(g2.constant(g.value(s.h())?.to_owned()))),
        };
        let win2 = unroll(&cell, &mut g2, &p, &xs, init, UnrollOptions::default())?;
        let h2 = g2.stack(&win2.outputs[w.loss_from - w.start..], 0)?;
        let loss2 = g2.sum_all(h2)?;
        assert_eq!(g.scalar_value(loss)?, g2.scalar_value(loss2)?);
        let grads2 = g2.param_grad_values(loss2)?;
        for (k, v) in &grads {
            assert!(v.iter().zip(grads2[k].iter()).all(|(a, b)| (a - b).abs() < 1e-14), "{k} in {w:?}");
        }
    }
    Ok(())
}

#[test]
fn edge_cases_found_in_review() -> Result<()> {
    // TBPTT with k2 > k1 backpropagates k2 steps at the tail too.
    let w = Tbptt { k1: 4, k2: 6 }.windows(10);
    assert_eq!(w.last(), Some(&Window { start: 4, loss_from: 8, end: 10 }));
    // Non-finite logits fall back to the greedy choice.
    let mut rng = Rng::new(0);
    assert_eq!(sample_logits(&[0.0, f64::NAN, 1.0], 1.0, 0, &mut rng), 2);
    assert_eq!(sample_logits(&[0.0, 3.0], f64::NAN, 0, &mut rng), 1);
    // A state with no parts is an error, not a panic.
    let cell = unrolled::layers::Elman::new("", 0, false, 1, 2, unrolled::layers::Nonlinearity::Tanh);
    let mut g = Graph::<f64>::new();
    let x = g.input(ArrayD::zeros(vec![1, 1]));
    let e = unrolled::layers::Cell::step(
        &cell,
        &mut g,
        &ParamStore::new(),
        x,
        &unrolled::layers::State(Default::default()),
    );
    assert!(e.is_err());
    // A module with no layers is an error.
    let none = unrolled::layers::Recurrent::lstm("", unrolled::layers::RecurrentConfig::new(1, 2).layers(0));
    assert!(none.forward(&mut g, &ParamStore::new(), x, None, RunOptions::default()).is_err());
    Ok(())
}

/// Recomputed (checkpointed) BPTT gives full BPTT's loss, gradients and final state,
/// whatever the segment length (including one that does not divide T).
#[test]
fn recomputed_bptt_equals_full_bptt() -> unrolled::autograd::Result<()> {
    use unrolled::layers::{recomputed_bptt, AnyRecurrent, CellKind, Init, RecurrentConfig, RunOptions};
    for kind in [CellKind::Lstm, CellKind::Gru, CellKind::Rnn] {
        let m = AnyRecurrent::new(kind, "m.", RecurrentConfig::new(3, 4).layers(2));
        let mut p = unrolled::autograd::ParamStore::<f64>::new();
        unrolled::layers::init_params(&m.params::<f64>(), &mut p, &Init::torch(7));
        let x = common::uniform(&[7, 2, 3], 8, -1.0, 1.0);
        let y = common::uniform(&[7, 2, 4], 9, -1.0, 1.0);
        let parts = if kind == CellKind::Lstm { 2 } else { 1 };
        let init: Vec<_> = (0..parts).map(|k| common::uniform(&[2, 2, 4], 10 + k, -0.5, 0.5)).collect();
        let n = (7 * 2 * 4) as f64;
        let mse = |g: &mut unrolled::autograd::Graph<f64>, out, y: Option<_>| {
            let d = g.sub(out, y.expect("targets given"))?;
            let d = g.square(d)?;
            let s = g.sum_all(d)?;
            g.affine(s, 1.0 / n, 0.0)
        };
        // Full BPTT on one graph.
        let mut g = unrolled::autograd::Graph::new();
        let xi = g.input(x.clone());
        let yi = g.input(y.clone());
        let st: Vec<_> = init.iter().map(|s| g.input(s.clone())).collect();
        let out = m.forward(&mut g, &p, xi, Some(&st), RunOptions::default())?;
        let l = mse(&mut g, out.output, Some(yi))?;
        let want = g.param_grad_values(l)?;
        let want_loss = g.value(l)?.iter().sum::<f64>();
        for segment in [1, 3, 7, 10] {
            let step = recomputed_bptt(&m, &p, &x, Some(&y), Some(&init), segment, mse)?;
            assert!((step.loss - want_loss).abs() <= 1e-14 * want_loss.abs(), "{kind:?} segment {segment}: loss");
            assert_eq!(step.grads.len(), want.len());
            for (name, w) in &want {
                let got = &step.grads[name];
                let scale = w.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
                let err = got.iter().zip(w.iter()).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
                assert!(err <= 1e-12 * scale, "{kind:?} segment {segment} {name}: {err:e} of {scale:e}");
            }
            for (k, &f) in out.final_state.iter().enumerate() {
                assert_eq!(&step.final_state[k], g.value(f)?, "{kind:?} segment {segment}: final state");
            }
        }
        assert!(recomputed_bptt(&m, &p, &x, Some(&y), None, 0, mse).is_err(), "segment 0 is refused");
    }
    Ok(())
}

/// A sequence whose input projection exceeds one product's rows (16,384 steps × batch)
/// is projected a segment at a time: the same loss and gradients as short graphs
/// (recomputed in segments of 100 steps), each segment's projection recorded just
/// before its first step, and the gradient of every stacked step selected only when
/// the sweep reaches it.
#[test]
fn long_sequences_project_their_inputs_in_segments() -> unrolled::autograd::Result<()> {
    use unrolled::autograd::{Graph, Op};
    use unrolled::layers::{recomputed_bptt, AnyRecurrent, CellKind, Init, RecurrentConfig, RunOptions};
    let (t, b) = (1050, 8); // 8,400 rows: segments of 1,024 and 26 steps
    for kind in [CellKind::Lstm, CellKind::Gru, CellKind::Rnn] {
        let m = AnyRecurrent::new(kind, "m.", RecurrentConfig::new(2, 3));
        let mut p = unrolled::autograd::ParamStore::<f64>::new();
        unrolled::layers::init_params(&m.params::<f64>(), &mut p, &Init::torch(3));
        let x = common::uniform(&[t, b, 2], 4, -1.0, 1.0);
        let y = common::uniform(&[t, b, 3], 5, -1.0, 1.0);
        let n = (t * b * 3) as f64;
        let mse = |g: &mut Graph<f64>, out, y: Option<_>| {
            let d = g.sub(out, y.expect("targets given"))?;
            let d = g.square(d)?;
            let s = g.sum_all(d)?;
            g.affine(s, 1.0 / n, 0.0)
        };
        let mut g = Graph::new();
        g.set_deferred(true);
        let xi = g.input(x.clone());
        let yi = g.input(y.clone());
        let out = m.forward(&mut g, &p, xi, None, RunOptions::default())?;
        let l = mse(&mut g, out.output, Some(yi))?;
        let forward_end = g.len();
        let grads = g.param_grads(l)?;
        let keep: Vec<_> = grads.values().copied().chain([l]).collect();
        g.replay_keeping(&keep)?;

        let want = recomputed_bptt(&m, &p, &x, Some(&y), None, 100, mse)?;
        assert!((g.value(l)?.sum() - want.loss).abs() <= 1e-14 * want.loss.abs(), "{kind:?}: loss");
        for (name, &id) in &grads {
            let (got, w) = (g.value(id)?, &want.grads[name]);
            let scale = w.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
            let err = got.iter().zip(w.iter()).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(err <= 1e-12 * scale, "{kind:?} {name}: {err:e} of {scale:e}");
        }

        // Two projection products, the second recorded after the first segment's steps.
        let nodes = g.nodes();
        let path = |i: usize| g.scope_info(nodes[i].scope()).path;
        let projections: Vec<usize> = (0..forward_end)
            .filter(|&i| matches!(nodes[i].op(), Op::MatMul(_)) && path(i).ends_with("input_projection"))
            .collect();
        assert_eq!(projections.len(), 2, "{kind:?}: one product per segment");
        let step_1023 = (0..forward_end).find(|&i| path(i).contains("/t1023")).expect("step 1023 recorded");
        assert!(projections[1] > step_1023, "{kind:?}: the second segment is projected after the first one's steps");
        // W_hh's gradient reads each segment's stacked gate gradients (the projection's
        // gradient) instead of concatenating every step's again. (A GRU's hidden product
        // gets gradients of its own, which are concatenated.)
        if kind != CellKind::Gru {
            let joined_all = (forward_end..nodes.len())
                .any(|i| matches!(nodes[i].op(), Op::Concat(_)) && nodes[i].inputs().len() >= t);
            assert!(!joined_all, "{kind:?}: a concat of every step's gradient");
        }
        // Each step's share of the output gradient is selected when its step is reached:
        // the selects of the stacked output's gradient are not recorded all together.
        let stack = (0..forward_end).rev().find(|&i| matches!(nodes[i].op(), Op::Stack(_))).expect("stacked outputs");
        let stack_grad_selects: Vec<usize> = (forward_end..nodes.len())
            .filter(|&i| matches!(nodes[i].op(), Op::Select(_)) && path(i) == path(stack) + "/grad")
            .collect();
        assert_eq!(stack_grad_selects.len(), t);
        assert!(stack_grad_selects.windows(2).all(|w| w[1] > w[0] + 1), "{kind:?}: selects recorded in one run");
    }
    Ok(())
}
