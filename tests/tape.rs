//! The tape itself: replay, fan-out, pruning, long unrolls, f32, scopes.

mod common;

use ndarray::{ArrayD, IxDyn};
use unrolled::autograd::{Direction, Graph, NodeId, Op, ParamStore, Result};

/// A tanh RNN `h_t = tanh(x_t W + h_{t-1} U)` unrolled over `xs`, loss = Σ h_T.
fn rnn(g: &mut Graph<f64>, store: &ParamStore<f64>, xs: &[NodeId], h0: NodeId) -> Result<NodeId> {
    let w = g.param(store, "w")?;
    let u = g.param(store, "u")?;
    let mut h = h0;
    for (t, &x) in xs.iter().enumerate() {
        let mut g = g.step(t);
        let a = g.matmul(x, w)?;
        let b = g.matmul(h, u)?;
        let s = g.add(a, b)?;
        h = g.tanh(s)?;
    }
    g.sum_all(h)
}

fn store(i: usize, h: usize, seed: u64) -> ParamStore<f64> {
    let mut s = ParamStore::new();
    s.insert("w", common::uniform(&[i, h], seed, -0.5, 0.5));
    s.insert("u", common::uniform(&[h, h], seed + 1, -0.5, 0.5));
    s
}

#[test]
fn replay_matches_a_fresh_recording() -> Result<()> {
    let (t, b, i, h) = (4, 2, 3, 5);
    let mut st = store(i, h, 1);
    let xs1: Vec<ArrayD<f64>> = (0..t).map(|k| common::uniform(&[b, i], 10 + k as u64, -1.0, 1.0)).collect();
    let xs2: Vec<ArrayD<f64>> = (0..t).map(|k| common::uniform(&[b, i], 20 + k as u64, -1.0, 1.0)).collect();

    let mut g = Graph::new();
    let xs: Vec<NodeId> = xs1.iter().map(|x| g.input(x.clone())).collect();
    let h0 = g.zeros(&[b, h]);
    let loss = rnn(&mut g, &st, &xs, h0)?;
    let grads = g.param_grads(loss)?;
    let n = g.len();

    // New inputs and new parameter values, same graph: replay.
    for (id, x) in xs.iter().zip(&xs2) {
        g.set_value(*id, x.clone())?;
    }
    st.get_mut("w").unwrap().mapv_inplace(|v| v * 0.5 + 0.1);
    g.load_params(&st)?;
    g.replay()?;
    assert_eq!(g.len(), n, "replay records nothing new");

    let mut fresh = Graph::new();
    let fxs: Vec<NodeId> = xs2.iter().map(|x| fresh.input(x.clone())).collect();
    let fh0 = fresh.zeros(&[b, h]);
    let floss = rnn(&mut fresh, &st, &fxs, fh0)?;
    let fgrads = fresh.param_grads(floss)?;
    assert_eq!(g.scalar_value(loss)?, fresh.scalar_value(floss)?);
    for (name, id) in &grads {
        assert_eq!(g.value(*id)?, fresh.value(fgrads[name])?, "{name}");
    }
    Ok(())
}

#[test]
fn fan_out_gradient_is_the_sum_over_steps() -> Result<()> {
    // y = Σ_t x_t · w with the same w at every step: dy/dw = Σ_t x_t.
    let mut st = ParamStore::new();
    st.insert("w", ArrayD::from_elem(IxDyn(&[1, 1]), 0.7));
    let mut g = Graph::<f64>::new();
    let w = g.param(&st, "w")?;
    assert_eq!(g.param(&st, "w")?, w, "one leaf per parameter and graph");
    let mut acc = g.zeros(&[1, 1]);
    let vals = [0.5, -1.25, 2.0];
    for (t, v) in vals.iter().enumerate() {
        let mut g = g.step(t);
        let x = g.constant(ArrayD::from_elem(IxDyn(&[1, 1]), *v));
        let p = g.matmul(x, w)?;
        acc = g.add(acc, p)?;
    }
    let l = g.sum_all(acc)?;
    let d = g.param_grad_values(l)?;
    assert_eq!(d["w"][[0, 0]], vals.iter().sum::<f64>());
    assert_eq!(g.summary().param_fanout["w"], 3);
    Ok(())
}

#[test]
fn a_weight_shared_by_many_rows_gets_its_gradient_in_bounded_products() -> Result<()> {
    // y = Σ_t sum(x_t wᵀ) over 10 steps of 4,096 rows: dy/dw[i, j] = Σ_t Σ_r x_t[r, j].
    // The steps' pairs (g_t, x_t) are summed as one product once they pass 32,768
    // rows, and the rest when the sweep reaches w: two products, not one over all
    // 40,960 rows (which would hold every step's g and x until the end).
    let (rows, steps) = (4096, 10);
    let mut st = ParamStore::new();
    st.insert("w", ArrayD::from_shape_fn(IxDyn(&[2, 3]), |i| 0.1 * (i[0] + 2 * i[1]) as f64));
    let mut g = Graph::<f64>::new();
    let w = g.param(&st, "w")?;
    let mut want = [0.0; 3];
    let mut terms = Vec::new();
    for t in 0..steps {
        let x = ArrayD::from_shape_fn(IxDyn(&[rows, 3]), |i| ((i[0] * 7 + i[1] * 3 + t) % 11) as f64 / 11.0 - 0.4);
        for (j, w) in want.iter_mut().enumerate() {
            *w += x.index_axis(ndarray::Axis(1), j).sum();
        }
        let mut g = g.step(t);
        let x = g.constant(x);
        let y = g.matmul_t(x, w, false, true)?;
        terms.push(g.sum_all(y)?);
    }
    let l = g.add_n(&terms)?;
    let before = g.len();
    let dw = g.grad(l, &[w])?[0];
    let products = g.nodes()[before..].iter().filter(|n| matches!(n.op(), Op::MatMul(_))).count();
    assert_eq!(products, 2);
    let got = g.value(dw)?;
    for i in 0..2 {
        for (j, w) in want.iter().enumerate() {
            assert!((got[[i, j]] - w).abs() <= 1e-12 * w.abs().max(1.0), "dw[{i}, {j}] = {} against {w}", got[[i, j]]);
        }
    }
    Ok(())
}

#[test]
fn branches_off_the_path_cost_nothing() -> Result<()> {
    let build = |with_branch: bool| -> Result<(usize, usize)> {
        let mut g = Graph::<f64>::new();
        let x = g.input(ArrayD::from_elem(IxDyn(&[3]), 0.3));
        let a = g.exp(x)?;
        if with_branch {
            let mut b = g.tanh(x)?;
            for _ in 0..50 {
                b = g.sigmoid(b)?;
            }
        }
        let y = g.input(ArrayD::from_elem(IxDyn(&[3]), 0.1));
        let unrelated = g.tanh(y)?;
        let s = g.sum_all(a)?;
        let s2 = g.sum_all(unrelated)?;
        let l = g.add(s, s2)?;
        let before = g.len();
        let _ = g.grad(l, &[x])?;
        Ok((before, g.len() - before))
    };
    let (_, plain) = build(false)?;
    let (_, branched) = build(true)?;
    assert_eq!(plain, branched, "the unused branch records no gradient nodes");
    assert!(plain <= 6, "only the x → exp → sum path is differentiated ({plain} nodes)");
    Ok(())
}

#[test]
fn ten_thousand_steps_do_not_overflow_the_stack() -> Result<()> {
    let st = store(2, 3, 5);
    let mut g = Graph::with_capacity(100_000);
    let xs: Vec<NodeId> = (0..10_000).map(|k| g.input(common::uniform(&[1, 2], k, -1.0, 1.0))).collect();
    let h0 = g.zeros(&[1, 3]);
    let loss = rnn(&mut g, &st, &xs, h0)?;
    let d = g.param_grad_values(loss)?;
    assert!(d["u"].iter().all(|v| v.is_finite()));
    assert_eq!(g.summary().by_step.len(), 10_000);
    Ok(())
}

#[test]
fn f32_agrees_with_f64() -> Result<()> {
    let st = store(3, 4, 9);
    let x = common::uniform(&[2, 3], 3, -1.0, 1.0);
    let mut g64 = Graph::<f64>::new();
    let x64 = g64.input(x.clone());
    let h64 = g64.zeros(&[2, 4]);
    let l64 = rnn(&mut g64, &st, &[x64, x64], h64)?;
    let d64 = g64.param_grad_values(l64)?;

    let st32 = st.cast::<f32>();
    let mut g32 = Graph::<f32>::new();
    let x32 = g32.input(x.mapv(|v| v as f32));
    let h32 = g32.zeros(&[2, 4]);
    let w = g32.param(&st32, "w")?;
    let u = g32.param(&st32, "u")?;
    let mut h = h32;
    for _ in 0..2 {
        let a = g32.matmul(x32, w)?;
        let b = g32.matmul(h, u)?;
        let s = g32.add(a, b)?;
        h = g32.tanh(s)?;
    }
    let l32 = g32.sum_all(h)?;
    let d32 = g32.param_grad_values(l32)?;
    assert!((g32.scalar_value(l32)? - g64.scalar_value(l64)?).abs() < 1e-5);
    for (k, v) in &d64 {
        for (a, b) in v.iter().zip(d32[k].iter()) {
            assert!((a - *b as f64).abs() < 1e-5, "{k}: {a} vs {b}");
        }
    }
    Ok(())
}

#[test]
fn scopes_annotate_steps_layers_directions_and_gradients() -> Result<()> {
    let mut g = Graph::<f64>::new();
    let x = g.input(ArrayD::from_elem(IxDyn(&[2]), 0.5));
    let y = {
        let mut g = g.scope("lstm");
        let mut g = g.layer(1);
        let mut g = g.direction(Direction::Backward);
        let mut g = g.step(7);
        let mut g = g.scope("forget_gate");
        g.sigmoid(x)?
    };
    let info = g.scope_info(g.node(y)?.scope());
    assert_eq!(info.path, "lstm/l1/bwd/t7/forget_gate");
    assert_eq!(
        (info.step, info.layer, info.direction, info.gradient),
        (Some(7), Some(1), Some(Direction::Backward), false)
    );
    assert_eq!(info.name, "forget_gate");
    let l = g.sum_all(y)?;
    let before = g.len();
    let dx = g.grad(l, &[x])?[0];
    let ginfo = g.scope_info(g.node(dx)?.scope());
    assert!(ginfo.gradient, "gradient nodes are marked");
    assert_eq!(ginfo.path, "lstm/l1/bwd/t7/forget_gate/grad");
    assert_eq!(ginfo.step, Some(7));
    assert!(g.nodes()[before..].iter().all(|n| g.scope_info(n.scope()).gradient));
    assert_eq!(g.scope_info(g.current_scope()).path, "", "guards restore the scope");
    assert!(matches!(g.node(y)?.op(), Op::Sigmoid(_)));
    // The whole table, written out at once, says what each scope says on its own.
    let all = g.scope_infos();
    for n in g.nodes() {
        assert_eq!(all[n.scope().index()], g.scope_info(n.scope()));
    }
    assert_eq!(all[g.node(dx)?.scope().index()].name, "grad");
    // A scope named "" adds nothing to its children's paths, whichever way they are read,
    // and the graph's definition loads back.
    let z = {
        let mut g = g.scope("");
        let mut g = g.step(0);
        g.tanh(x)?
    };
    let s = g.node(z)?.scope();
    assert_eq!(g.scope_info(s).path, "t0");
    assert_eq!(g.scope_infos()[s.index()], g.scope_info(s));
    let loaded = Graph::<f64>::from_def(&g.to_def(), &ParamStore::new())?;
    assert_eq!(loaded.scope_info(s).path, "t0");
    Ok(())
}

#[test]
fn petgraph_view_matches_the_arena() -> Result<()> {
    let st = store(2, 2, 3);
    let mut g = Graph::new();
    let x = g.input(common::uniform(&[1, 2], 1, -1.0, 1.0));
    let h0 = g.zeros(&[1, 2]);
    let loss = rnn(&mut g, &st, &[x, x], h0)?;
    let pg = g.to_petgraph();
    assert_eq!(pg.node_count(), g.len());
    let edges: usize = g.nodes().iter().map(|n| n.inputs().len()).sum();
    assert_eq!(pg.edge_count(), edges);
    let w = g.params()["w"];
    let path = petgraph::algo::has_path_connecting(
        &pg,
        petgraph::graph::NodeIndex::new(w.index()),
        petgraph::graph::NodeIndex::new(loss.index()),
        None,
    );
    assert!(path);
    assert_eq!(pg[petgraph::graph::NodeIndex::new(loss.index())].op, "sum");
    Ok(())
}

/// A 2-layer LSTM (fused steps, the engine's special cases for narrow and linear
/// matmul), its loss and every parameter gradient.
fn lstm_step(g: &mut Graph<f64>, seed: u64) -> Result<(NodeId, Vec<NodeId>, NodeId)> {
    use unrolled::layers::{Init, Recurrent, RecurrentConfig, RunOptions};
    let lstm = Recurrent::lstm("lstm.", RecurrentConfig::new(3, 4).layers(2));
    let mut p = ParamStore::<f64>::new();
    lstm.init_params(&mut p, &Init::torch(seed));
    let x = g.input(common::uniform(&[6, 2, 3], seed + 1, -1.0, 1.0));
    let y = g.input(common::uniform(&[6, 2, 4], seed + 2, -1.0, 1.0));
    let out = lstm.forward(g, &p, x, None, RunOptions::default())?;
    let loss = g.mse_loss(out.output, y)?;
    let grads: Vec<NodeId> = g.param_grads(loss)?.into_values().collect();
    Ok((loss, grads, out.output))
}

#[test]
fn deferred_recording_and_lean_replay_give_the_same_values() -> Result<()> {
    for limit in BOTH_LOOPS {
        deferred_and_lean_agree(limit)?;
    }
    Ok(())
}

fn deferred_and_lean_agree(limit: usize) -> Result<()> {
    let mut eager = Graph::<f64>::new();
    let (loss_e, grads_e, _) = lstm_step(&mut eager, 5)?;
    let mut g = Graph::<f64>::new();
    g.set_deferred(true);
    g.set_small_graph_limit(limit);
    let (loss, grads, output) = lstm_step(&mut g, 5)?;
    assert_eq!(g.len(), eager.len(), "the same nodes are recorded");
    assert!(matches!(g.value(loss), Err(unrolled::autograd::Error::NotComputed { .. })));
    assert!(!g.has_value(output)?);
    let mut keep = grads.clone();
    keep.push(loss);
    g.replay_keeping(&keep)?;
    assert_eq!(g.value(loss)?, eager.value(loss_e)?);
    for (a, b) in grads.iter().zip(&grads_e) {
        assert_eq!(g.value(*a)?, eager.value(*b)?, "lean values are the eager values, bit for bit");
    }
    // Everything not kept was released; reading it, or building on it, is a typed error.
    only_kept_values_held(&g, &keep, &format!("limit {limit}"))?;
    assert!(matches!(g.value(output), Err(unrolled::autograd::Error::NotComputed { op: "value", .. })));
    g.set_deferred(false);
    assert!(matches!(g.tanh(output), Err(unrolled::autograd::Error::NotComputed { op: "tanh", .. })));
    // A plain replay computes every value again.
    g.replay()?;
    assert_eq!(g.value(output)?, eager.value(output_of(&eager, output))?);
    // Shape errors are still reported while recording deferred.
    g.set_deferred(true);
    let a = g.input(ArrayD::zeros(IxDyn(&[2, 3])));
    let b = g.input(ArrayD::zeros(IxDyn(&[4, 5])));
    assert!(matches!(g.matmul(a, b), Err(unrolled::autograd::Error::ShapeMismatch { .. })));
    assert!(matches!(
        g.replay_keeping(&[Graph::<f64>::new().scalar(1.0)]),
        Err(unrolled::autograd::Error::ForeignNode { .. })
    ));
    Ok(())
}

/// After a lean replay keeping `keep`, no computed node but those holds a value.
fn only_kept_values_held<T: unrolled::autograd::Float>(g: &Graph<T>, keep: &[NodeId], case: &str) -> Result<()> {
    for id in g.ids() {
        if !keep.contains(&id) && !g.node(id)?.op().is_leaf() {
            assert!(!g.has_value(id)?, "{case}: {id:?} still held");
        }
    }
    Ok(())
}

/// The same node in another recording of the same program (ids are dense per graph).
fn output_of(g: &Graph<f64>, id: NodeId) -> NodeId {
    g.id(id.index()).expect("same recording")
}

#[test]
fn fused_steps_take_their_state_gradients_without_a_join() -> Result<()> {
    use unrolled::autograd::ops::LstmCellGrad;
    let mut g = Graph::<f64>::new();
    let (_, _, _) = lstm_step(&mut g, 7)?;
    let grads: Vec<&LstmCellGrad> = g
        .ids()
        .filter_map(|id| match g.node(id).ok()?.op() {
            Op::LstmCellGrad(k) => Some(k),
            _ => None,
        })
        .collect();
    // 2 layers × 6 steps: each step's gates gradient, and all but the first step's c.
    assert_eq!(grads.len(), 2 * (6 + 5));
    assert!(grads.iter().all(|k| k.state_only), "the taps receive no gradient: no [B, 6H] gradient is built");
    // Nothing concatenates gradients of a step's output, nor the gate gradients again for
    // W_hh's gradient (it reads them as stacked for the input projection's): one concat
    // per layer, of the states W_hh's gradient multiplies.
    let concats = g.ids().filter(|&id| g.node(id).is_ok_and(|n| n.op().name() == "concat")).count();
    assert_eq!(concats, 2, "per layer: the states of W_hh's gradient");
    Ok(())
}

/// The small-graph limits under which a lean replay runs the full loop (0) and the
/// small graph's loop (any graph), in that order ([`Graph::set_small_graph_limit`]).
const BOTH_LOOPS: [usize; 2] = [0, usize::MAX];

#[test]
fn lean_replay_adds_into_a_dying_operand_with_the_same_values() -> Result<()> {
    // Both operand orders, a bias on the last axis and a column broadcast (no fast path).
    let mut g = Graph::<f64>::new();
    let x = g.input(common::uniform(&[4, 3], 3, -1.0, 1.0));
    let bias = g.input(common::uniform(&[3], 4, -1.0, 1.0));
    let col = g.input(common::uniform(&[4, 1], 5, -1.0, 1.0));
    let y = g.mul_scalar(x, 2.0)?;
    let a = g.add(y, bias)?; // y dies here: a takes its buffer
    let z = g.tanh(x)?;
    let b = g.add(col, z)?; // z dies here, on the right
    let s = g.add(a, b)?;
    let loss = g.sum_all(s)?;
    let dx = g.grad(loss, &[x])?[0];
    g.replay()?;
    let (want_s, want_dx) = (g.value(s)?.to_owned(), g.value(dx)?.to_owned());
    for limit in BOTH_LOOPS {
        g.set_small_graph_limit(limit);
        g.replay_keeping(&[s, dx])?;
        assert_eq!(g.value(s)?, &want_s, "limit {limit}");
        assert_eq!(g.value(dx)?, &want_dx, "limit {limit}");
        assert!(!g.has_value(y)? && !g.has_value(z)?, "the operands' buffers moved into the sums");
    }
    Ok(())
}

#[test]
fn lean_replay_computes_elementwise_ops_in_place_with_the_same_values() -> Result<()> {
    // Operands dying on either side of non-commutative ops, broadcast partners, unary
    // maps and the activations' gradients (in the reverse sweep).
    let mut g = Graph::<f64>::new();
    let x = g.input(common::uniform(&[4, 3], 6, -1.0, 1.0));
    let bias = g.input(common::uniform(&[3], 7, -1.0, 1.0));
    let col = g.input(common::uniform(&[4, 1], 8, 1.0, 2.0));
    let y1 = g.affine(x, 2.0, 0.5)?;
    let y2 = g.sub(bias, y1)?; // y1 dies on the right of a subtraction
    let y3 = g.div(y2, col)?; // y2 dies on the left of a division
    let y4 = g.sigmoid(y3)?;
    let y5 = g.mul(x, y4)?;
    let y6 = g.tanh(y5)?;
    let y7 = g.exp(y6)?;
    let loss = g.sum_all(y7)?;
    let dx = g.grad(loss, &[x, bias, col])?;
    let keep = [loss, dx[0], dx[1], dx[2]];
    g.replay()?;
    let want: Vec<ArrayD<f64>> = keep.iter().map(|&k| g.value(k).map(|v| v.to_owned())).collect::<Result<_>>()?;
    for limit in BOTH_LOOPS {
        g.set_small_graph_limit(limit);
        g.replay_keeping(&keep)?;
        for (k, w) in keep.iter().zip(&want) {
            assert_eq!(g.value(*k)?, w, "bit for bit (limit {limit})");
        }
        assert!(![y1, y2, y3, y4].iter().any(|&y| g.has_value(y).unwrap()));
    }
    Ok(())
}

#[test]
fn replays_read_a_weight_packed_once_and_see_it_change() -> Result<()> {
    // f32 steps `h W_hhᵀ` and their gradients `g W_hh` read the weight from a copy
    // packed at the first replay (on CPUs with AVX-512); setting the weight again must
    // reach every later replay, and the values must match the eagerly recorded ones.
    for limit in BOTH_LOOPS {
        packed_weight_changes(limit)?;
    }
    Ok(())
}

fn packed_weight_changes(limit: usize) -> Result<()> {
    let (b, h, steps) = (8, 40, 5);
    let mut g = Graph::<f32>::new();
    g.set_small_graph_limit(limit);
    let w = g.input(common::uniform(&[3 * h, h], 11, -0.3, 0.3).mapv(|v| v as f32));
    let mut x = g.input(common::uniform(&[b, h], 12, -1.0, 1.0).mapv(|v| v as f32));
    for _ in 0..steps {
        let y = g.matmul_t(x, w, false, true)?; // [b, 3h]
        let y = g.narrow(y, 1, h, h)?;
        x = g.tanh(y)?;
    }
    let loss = g.sum_all(x)?;
    let dw = g.grad(loss, &[w])?[0];
    let eager = (g.value(loss)?.to_owned(), g.value(dw)?.to_owned());
    let close =
        |a: &ArrayD<f32>, b: &ArrayD<f32>| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()));
    for _ in 0..2 {
        g.replay()?;
        assert!(close(&g.value(loss)?.to_owned(), &eager.0) && close(&g.value(dw)?.to_owned(), &eager.1));
    }
    let w2 = common::uniform(&[3 * h, h], 13, -0.3, 0.3).mapv(|v| v as f32);
    g.set_value(w, w2.clone())?;
    g.replay_keeping(&[loss, dw])?;
    let after = (g.value(loss)?.to_owned(), g.value(dw)?.to_owned());
    // The same graph recorded afresh with the new weight.
    let mut f = Graph::<f32>::new();
    let w = f.input(w2);
    let mut x = f.input(common::uniform(&[b, h], 12, -1.0, 1.0).mapv(|v| v as f32));
    for _ in 0..steps {
        let y = f.matmul_t(x, w, false, true)?;
        let y = f.narrow(y, 1, h, h)?;
        x = f.tanh(y)?;
    }
    let loss = f.sum_all(x)?;
    let dw = f.grad(loss, &[w])?[0];
    assert!(!close(&after.0, &eager.0), "the new weight changes the loss");
    assert!(close(&after.0, &f.value(loss)?.to_owned()) && close(&after.1, &f.value(dw)?.to_owned()));
    Ok(())
}

#[test]
fn a_short_sequences_input_projection_reads_its_weight_packed() -> Result<()> {
    // `[T, B, I]` = `[4, 3, 24]` projected by `W [40, 24]` (`x Wᵀ`): 12 rows, which
    // f32 replays read as one `[12, 24]` matrix with the weight packed (on CPUs with
    // AVX-512). The values agree with the f64 product to f32 rounding, and a weight set
    // again reaches the next replay.
    let (t, b, i, n) = (4, 3, 24, 40);
    let x64 = common::uniform(&[t, b, i], 31, -1.0, 1.0);
    let mut g = Graph::<f32>::new();
    let x = g.input(x64.mapv(|v| v as f32));
    let w = g.input(common::uniform(&[n, i], 32, -0.5, 0.5).mapv(|v| v as f32));
    let y = g.matmul_t(x, w, false, true)?;
    for seed in [32, 33] {
        let w64 = common::uniform(&[n, i], seed, -0.5, 0.5);
        g.set_value(w, w64.mapv(|v| v as f32))?;
        g.replay()?;
        let rows = x64.to_shape((t * b, i)).expect("row-major");
        let w2 = w64.view().into_dimensionality::<ndarray::Ix2>().expect("a matrix");
        let want = rows.dot(&w2.t()).into_shape_with_order((t, b, n)).expect("sized").into_dyn();
        let got = g.value(y)?.to_owned();
        assert_eq!(got.shape(), want.shape());
        for (a, e) in got.iter().zip(&want) {
            assert!((f64::from(*a) - e).abs() <= 1e-5 * (1.0 + e.abs()), "seed {seed}: {a} against {e}");
        }
    }
    Ok(())
}

#[test]
fn fused_cells_split_over_threads_match_row_by_row() -> Result<()> {
    // A batch large enough for the fused kernels to split its rows over the workers,
    // against the same cells run one row at a time (never split): bit for bit.
    let (b, h) = (48, 96);
    let rows = |g: &mut Graph<f64>, lstm: bool, r: Option<usize>| -> Result<Vec<ArrayD<f64>>> {
        let take = |a: ArrayD<f64>| match r {
            Some(r) => a.slice_axis(ndarray::Axis(0), (r..r + 1).into()).to_owned(),
            None => a,
        };
        let k = if lstm { 4 } else { 3 };
        let xp = g.input(take(common::uniform(&[b, k * h], 21, -2.0, 2.0)));
        let hh = g.input(take(common::uniform(&[b, k * h], 22, -2.0, 2.0)));
        let s = g.input(take(common::uniform(&[b, h], 23, -1.0, 1.0)));
        let out = if lstm { g.lstm_cell(xp, hh, s)? } else { g.gru_cell(xp, hh, s)? };
        let w = g.input(take(common::uniform(&[b, (k + 2) * h], 24, -1.0, 1.0)));
        let w = if lstm { w } else { g.narrow(w, 1, 0, 4 * h)? };
        let y = g.mul(out, w)?;
        let loss = g.sum_all(y)?;
        let grads = g.grad(loss, &[xp, hh, s])?;
        let mut vals = vec![g.value(out)?.to_owned()];
        for d in grads {
            vals.push(g.value(d)?.to_owned());
        }
        Ok(vals)
    };
    for lstm in [true, false] {
        let whole = rows(&mut Graph::new(), lstm, None)?;
        for r in [0, 17, b - 1] {
            let one = rows(&mut Graph::new(), lstm, Some(r))?;
            for (w, o) in whole.iter().zip(&one) {
                assert_eq!(w.slice_axis(ndarray::Axis(0), (r..r + 1).into()), o.view(), "lstm={lstm} row {r}");
            }
        }
    }
    Ok(())
}

/// A lean replay releases a large copy of part of a leaf after each reader and copies
/// it again for the next, rather than holding it in between; `peak_bytes` counts the
/// values held at once.
#[test]
fn lean_replays_copy_large_leaf_slices_again_instead_of_holding_them() -> Result<()> {
    let data: Vec<f32> = (0..4 * 65536).map(|i| (i % 97) as f32 / 97.0).collect();
    let x = ArrayD::from_shape_vec(IxDyn(&[4, 65536]), data).expect("sized"); // 1 MiB
    let record = |deferred: bool| -> Result<(Graph<f32>, NodeId, [NodeId; 3])> {
        let mut g = Graph::<f32>::new();
        g.set_deferred(deferred);
        let x = g.input(x.clone());
        let n = g.narrow(x, 0, 0, 2)?; // 512 KiB: a copy of part of a leaf
        let a = g.tanh(n)?;
        let s1 = g.sum_all(a)?;
        let b = g.exp(x)?; // 1 MiB
        let s2 = g.sum_all(b)?;
        let m = g.mul(n, n)?; // `n` read again
        let s3 = g.sum_all(m)?;
        Ok((g, n, [s1, s2, s3]))
    };
    let (eager, _, want) = record(false)?;
    let (mut g, n, sums) = record(true)?;
    g.replay_keeping(&sums)?;
    for (s, w) in sums.into_iter().zip(want) {
        assert_eq!(g.value(s)?, eager.value(w)?);
    }
    // At `exp`: x and its exponential (1 MiB each) and two scalars; `n` is not held
    // there (it would add 512 KiB), and copying it again for `mul` peaks no higher.
    assert_eq!(g.peak_bytes(), 2 * 1_048_576 + 2 * 4);
    assert!(!g.has_value(n)?);
    Ok(())
}

/// A reshape, or a slice along the first axis, of a large row-major value is the same
/// memory (no copy, no bytes of its own in `peak_bytes`), and a lean replay never
/// computes into a buffer a view still reads.
#[test]
fn large_reshapes_and_leading_slices_are_views_of_their_input() -> Result<()> {
    let x = ArrayD::from_shape_fn(IxDyn(&[8, 4096]), |i| ((i[0] * 4096 + i[1]) % 101) as f32 / 101.0); // 128 KiB
    let record = |deferred: bool| -> Result<(Graph<f32>, [NodeId; 3], [NodeId; 3])> {
        let mut g = Graph::<f32>::new();
        g.set_deferred(deferred);
        let x = g.input(x.clone());
        let y = g.tanh(x)?;
        let r = g.reshape(y, &[4, 8192])?;
        let sr = g.sum_all(r)?;
        let s = g.select(y, 0, 3)?;
        // `y`'s last reader: without the view `s` it would be computed into `y`'s buffer.
        let z = g.exp(y)?;
        let sz = g.sum_all(z)?;
        let w = g.mul(s, s)?;
        let sw = g.sum_all(w)?;
        Ok((g, [y, r, s], [sr, sz, sw]))
    };
    let (eager, [y, r, s], want) = record(false)?;
    let base = eager.value(y)?.as_ptr();
    assert_eq!(eager.value(r)?.as_ptr(), base, "the reshape is y's memory");
    assert_eq!(eager.value(s)?.as_ptr(), base.wrapping_add(3 * 4096), "row 3 is y's memory");
    let row3 = x.index_axis(ndarray::Axis(0), 3).mapv(f32::tanh);
    assert!(eager.value(s)?.iter().zip(&row3).all(|(a, b)| (a - b).abs() < 1e-6), "row 3 of tanh(x)");
    let (mut g, _, sums) = record(true)?;
    for _ in 0..2 {
        g.replay_keeping(&sums)?;
        for (&s, &w) in sums.iter().zip(&want) {
            assert_eq!(g.value(s)?, eager.value(w)?);
        }
    }
    // Held at once at `exp`: x, y and exp(y) (128 KiB each) and the three sums (kept
    // from the replay before); the views of y add nothing.
    assert_eq!(g.peak_bytes(), 3 * 131_072 + 3 * 4);
    Ok(())
}

/// A parameter that a view reads gets its new value from `load_params`, and the view
/// follows at the next replay.
#[test]
fn a_viewed_parameter_takes_new_values() -> Result<()> {
    let (rows, cols) = (96, 256);
    let mut store = ParamStore::<f64>::new();
    store.insert("w", common::uniform(&[rows, cols], 3, -1.0, 1.0));
    let mut g = Graph::<f64>::new();
    let w = g.param(&store, "w")?;
    let top = g.narrow(w, 0, 0, 64)?;
    let loss = g.sum_all(top)?;
    let first = g.scalar_value(loss)?;
    store.insert("w", common::uniform(&[rows, cols], 4, -1.0, 1.0));
    g.load_params(&store)?;
    g.replay()?;
    let want: f64 = store.get("w").expect("inserted").rows().into_iter().take(64).flatten().sum();
    let got = g.scalar_value(loss)?;
    assert!((got - want).abs() < 1e-9 && (got - first).abs() > 1e-3, "{got} against {want} (was {first})");
    assert_eq!(g.value(w)?, store.get("w").expect("inserted").view());
    Ok(())
}

/// A deferred graph with one `[8, 4096]` f32 input (128 KiB) of values `(j % m) / m`.
fn deferred_with_128k_input(m: usize) -> (Graph<f32>, NodeId) {
    let mut g = Graph::<f32>::new();
    g.set_deferred(true);
    let x = g.input(ArrayD::from_shape_fn(IxDyn(&[8, 4096]), |i| (i[1] % m) as f32 / m as f32));
    (g, x)
}

/// `peak_bytes` counts a shared buffer until its last holder is released: a view
/// that outlives the value it views keeps the whole buffer counted.
#[test]
fn a_view_keeps_its_buffer_counted_after_its_source_is_released() -> Result<()> {
    for limit in BOTH_LOOPS {
        let (mut g, x) = deferred_with_128k_input(13);
        g.set_small_graph_limit(limit);
        let y = g.tanh(x)?;
        let s = g.select(y, 0, 3)?; // `y`'s last reader: `y` is released, its buffer lives on in `s`
        let z = g.exp(x)?;
        let sz = g.sum_all(z)?;
        let w = g.mul(s, s)?;
        let sw = g.sum_all(w)?;
        g.replay_keeping(&[sz, sw])?;
        assert!(!g.has_value(y)? && !g.has_value(s)?);
        // At the first sum: x, y's buffer (held by `s`), exp(x) and the sum.
        assert_eq!(g.peak_bytes(), 3 * 131_072 + 4, "limit {limit}");
    }
    Ok(())
}

/// A replay computes a large value (32 MiB and more) into the buffer of the value it
/// replaces instead of a fresh allocation, and gets the new values.
#[test]
fn a_replay_reuses_the_buffer_of_a_large_value() -> Result<()> {
    let n = 1 << 23; // 32 MiB of f32
    let data = |k: f32| ArrayD::from_shape_fn(IxDyn(&[2, n / 2]), |i| k * ((i[1] % 89) as f32 / 89.0 - 0.5));
    let mut g = Graph::<f32>::new();
    let x = g.input(data(1.0));
    let y = g.tanh(x)?;
    let first = g.value(y)?.as_ptr();
    g.set_value(x, data(3.0))?;
    g.replay()?;
    assert_eq!(g.value(y)?.as_ptr(), first, "tanh wrote into its old buffer");
    let want = data(3.0).mapv(f32::tanh);
    assert!(g.value(y)?.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6));
    Ok(())
}

/// A value recomputed while views of its old buffer live on frees none of it: the
/// buffer stays counted until its last view is released, and no byte is subtracted
/// twice (the unread gate taps of a fused step are such views).
#[test]
fn a_recomputed_value_that_views_still_hold_is_counted_once() -> Result<()> {
    for limit in BOTH_LOOPS {
        let x = ArrayD::from_shape_fn(IxDyn(&[8, 768]), |i| (i[1] % 7) as f32 / 7.0); // 24 KiB
        let bytes = 8 * 768 * 4;
        let mut g = Graph::<f32>::new();
        g.set_small_graph_limit(limit);
        let x = g.input(x);
        let mut sums = Vec::new();
        for _ in 0..3 {
            let y = g.tanh(x)?;
            let _unread = g.narrow(y, 1, 0, 128)?; // a view of y's buffer
            sums.push(g.sum_all(y)?);
        }
        g.replay_keeping(&sums)?;
        // At the first tanh: x, the three old buffers (held by the views) and the new one.
        assert_eq!(g.peak_bytes(), 5 * bytes + 3 * 4, "limit {limit}");
        g.replay_keeping(&sums)?;
        assert_eq!(g.peak_bytes(), 2 * bytes + 3 * 4, "limit {limit}: x, one tanh at a time, the sums");
    }
    Ok(())
}

/// A kept view whose source was released is counted at the next run's start: it is
/// the last holder of its buffer.
#[test]
fn a_kept_view_counts_its_buffer_in_the_next_run() -> Result<()> {
    for limit in BOTH_LOOPS {
        let (mut g, x) = deferred_with_128k_input(11);
        g.set_small_graph_limit(limit);
        let y = g.tanh(x)?;
        let h = g.narrow(y, 1, 0, 64)?;
        g.replay_keeping(&[h])?;
        assert_eq!(g.peak_bytes(), 2 * 131_072, "limit {limit}: x and y");
        g.replay_keeping(&[h])?;
        assert_eq!(g.peak_bytes(), 3 * 131_072, "limit {limit}: x, the buffer h still holds, and the new y");
    }
    Ok(())
}

#[test]
fn graphs_can_be_shared_and_sent_between_threads() {
    fn shareable<G: Send + Sync>() {}
    shareable::<Graph<f32>>();
    shareable::<Graph<f64>>();
}

/// One training step of a `kind` network of `layers` layers over `[T, B, I, H]`: MSE
/// loss and every weight's gradient.
fn sized_step<T: unrolled::autograd::Float>(
    g: &mut Graph<T>,
    kind: unrolled::layers::CellKind,
    [t, b, i, h]: [usize; 4],
    layers: usize,
) -> Result<(NodeId, Vec<NodeId>)> {
    use unrolled::layers::{init_params, AnyRecurrent, Init, RecurrentConfig, RunOptions};
    let m = AnyRecurrent::new(kind, "", RecurrentConfig::new(i, h).layers(layers));
    let mut p = ParamStore::<T>::new();
    init_params(&m.params::<T>(), &mut p, &Init::torch(11));
    let cast = |a: ArrayD<f64>| a.mapv(T::of);
    let x = g.input(cast(common::uniform(&[t, b, i], 12, -1.0, 1.0)));
    let y = g.constant(cast(common::uniform(&[t, b, h], 13, -1.0, 1.0)));
    let out = m.forward(g, &p, x, None, RunOptions::default())?;
    let loss = g.mse_loss(out.output, y)?;
    Ok((loss, g.param_grads(loss)?.into_values().collect()))
}

/// A lean replay computes some nodes differently from eager recording: a join's parts
/// in the join's buffer (`placed`: an LSTM's and a GRU's stacked and concatenated step
/// gradients, an Elman network's activation gradients, and the LSTM and GRU steps'
/// states, written there by their steps, the given state copied), a step's sibling gradient
/// nodes in one pass (`paired`: an LSTM's gates and cell state, a GRU's projected input
/// and state), and an Elman step's sums read only by its activation or by the gradient
/// through it, which are not made (`folded`; the gradients are written into the join's
/// rows in a build with debug assertions, which lays out every join). Every value is
/// still the eager one, bit for bit, in both precisions, in a first replay and in the
/// next (which reuses the buffers of the first), in the full loop and in the small
/// graph's (`small`: the same nodes, the pairs, none of the others). A layer of
/// `[T, B, I, H]` = `[16, 16, 136, 136]` has weight gradients of more than 16,384 elements:
/// an Elman network's and an LSTM's are computed two at a time (`products`).
fn lean_replay_is_eager<T: unrolled::autograd::Float + std::fmt::Debug>() -> Result<()> {
    use unrolled::layers::CellKind;
    let sizes = [([7, 3, 3, 5], 2), ([16, 16, 136, 136], 1)];
    let kinds = [CellKind::Rnn, CellKind::Lstm, CellKind::Gru];
    for (kind, (size, layers), limit) in
        kinds.into_iter().flat_map(|k| sizes.into_iter().flat_map(move |s| BOTH_LOOPS.map(|l| (k, s, l))))
    {
        let mut eager = Graph::<T>::new();
        let (loss_e, grads_e) = sized_step(&mut eager, kind, size, layers)?;
        let mut g = Graph::<T>::new();
        g.set_deferred(true);
        g.set_small_graph_limit(limit);
        let (loss, grads) = sized_step(&mut g, kind, size, layers)?;
        let mut keep = grads.clone();
        keep.push(loss);
        for _ in 0..2 {
            g.replay_keeping(&keep)?;
            assert_eq!(g.value(loss)?, eager.value(loss_e)?, "{kind:?}");
            for (a, b) in grads.iter().zip(&grads_e) {
                assert_eq!(g.value(*a)?, eager.value(*b)?, "{kind:?}: lean values are the eager values");
                assert!(g.value(*a)?.iter().all(|v| v.is_finite()), "{kind:?}: every element written");
            }
        }
    }
    Ok(())
}

#[test]
fn lean_replays_of_every_cell_kind_give_the_eager_values() -> Result<()> {
    lean_replay_is_eager::<f64>()?;
    lean_replay_is_eager::<f32>()
}

/// Two steps of `h = act(x W + s)`. Stacked, the outputs are read by the loss as one
/// tensor; else each is read twice, so each one's gradient is a sum of two. With
/// `strided`, the added term is a view of a wider input's columns: not row-major.
fn sums_through_activations(g: &mut Graph<f32>, act: &str, stacked: bool, strided: bool) -> Result<Vec<NodeId>> {
    let mut store = ParamStore::<f32>::new();
    store.insert("w", common::uniform(&[64, 64], 21, -0.5, 0.5).mapv(|v| v as f32));
    let w = g.param(&store, "w")?;
    let x = g.input(common::uniform(&[2, 32, 64], 22, -1.0, 1.0).mapv(|v| v as f32));
    let s = g.input(common::uniform(&[32, 128], 23, -1.0, 1.0).mapv(|v| v as f32));
    let a = g.constant(common::uniform(&[32, 64], 24, -1.0, 1.0).mapv(|v| v as f32));
    let (c, half) = (g.constant(common::uniform(&[32, 64], 25, -1.0, 1.0).mapv(|v| v as f32)), g.scalar(0.5));
    let mut hs = Vec::new();
    for t in 0..2 {
        let xt = g.select(x, 0, t)?;
        let p = g.matmul(xt, w)?;
        let term = g.narrow(s, 1, 64 * t, 64)?;
        let term = if strided { term } else { g.mul(term, half)? };
        let z = g.add(p, term)?;
        hs.push(match act {
            "tanh" => g.tanh(z)?,
            "sigmoid" => g.sigmoid(z)?,
            _ => g.relu(z)?,
        });
    }
    let mut terms = Vec::new();
    if stacked {
        let h = g.stack(&hs, 0)?;
        let ha = g.mul(h, a)?;
        terms.push(g.sum_all(ha)?);
    } else {
        for &h in &hs {
            for k in [a, c] {
                let hk = g.mul(h, k)?;
                terms.push(g.sum_all(hk)?);
            }
        }
    }
    let loss = g.add_n(&terms)?;
    let mut keep = g.grad(loss, &[w])?;
    keep.push(loss);
    Ok(keep)
}

/// A sum read only by an activation, or by the gradient through one, is not made by a
/// lean replay: its reader computes through it in one pass (`folded`), in place of a
/// term that dies there or into a new buffer (into its rows of a join: the Elman
/// network's case in `lean_replays_of_every_cell_kind_give_the_eager_values`). The
/// values are the eager ones, bit for bit, in a first replay and the next; where a term
/// is not row-major the sum is made as usual.
#[test]
fn a_lean_replay_computes_an_activation_of_a_sum_in_one_pass() -> Result<()> {
    let sums = |ops: &[unrolled::autograd::OpTime]| {
        ops.iter().filter(|o| o.op == "add" || o.op == "add_n").map(|o| o.count).sum::<usize>()
    };
    for act in ["tanh", "sigmoid", "relu"] {
        for (stacked, strided) in [(true, false), (false, false), (false, true)] {
            let mut eager = Graph::<f32>::new();
            let want = sums_through_activations(&mut eager, act, stacked, strided)?;
            let mut g = Graph::<f32>::new();
            g.set_deferred(true);
            let grads = sums_through_activations(&mut g, act, stacked, strided)?;
            let every = sums(&g.replay_profile()?);
            let loss = *grads.last().expect("the loss");
            // Keeping the loss alone, the forward's two sums fold (with row-major
            // terms). Keeping the gradient too, relu's do not (its gradient reads the
            // sum), and the outputs' gradients fold when each is a sum.
            let forward = if strided { 0 } else { 2 };
            let backward = if stacked || act == "relu" { 0 } else { 2 };
            // (The loss alone reads the two steps' sums, and its own of four terms.)
            let cases = [
                (vec![loss], 2 + usize::from(!stacked), forward),
                (grads.clone(), every, if act == "relu" { 0 } else { forward } + backward),
            ];
            for (keep, read, folded) in cases {
                // Run 2 is the small graph's loop: it makes every sum, with the same values.
                for run in 0..3 {
                    g.set_small_graph_limit(if run == 2 { usize::MAX } else { 0 });
                    let lean = sums(&g.replay_keeping_profile(&keep)?);
                    let want_folded = if run == 2 { 0 } else { folded };
                    assert_eq!(
                        read - lean,
                        want_folded,
                        "{act}, stacked {stacked}, strided {strided} run {run}: folded"
                    );
                    for k in &keep {
                        let e = want[grads.iter().position(|x| x == k).expect("kept")];
                        assert_eq!(g.value(*k)?, eager.value(e)?, "{act} {stacked} {strided} run {run}: eager values");
                    }
                    // Both loops release every value but the kept ones, a folded sum's
                    // terms included (the small loop makes the sum and then drops them).
                    only_kept_values_held(&g, &keep, &format!("{act} {stacked} {strided} run {run}"))?;
                }
            }
        }
    }
    Ok(())
}
