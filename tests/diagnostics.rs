//! Gradient-flow diagnostics, fixed points, plots and rendering, with exact
//! expectations on small graphs.

mod common;

use ndarray::{arr2, Array2, ArrayD, IxDyn};
use unrolled::autograd::inspect::{dot_available, render_dot_with};
use unrolled::autograd::{Error, Graph, NodeId, ParamStore, Result, Rng};
use unrolled::layers::diagnostics::{
    eigenvalues, final_state_jacobian_norms, gate_saturation, gradient_flow, jacobian, singular_values, solve,
};
use unrolled::layers::dynamics::{find_fixed_point, fixed_points, iterate, NewtonOptions};
use unrolled::layers::plot::{plot_gradient_flow, plot_loss_curve, plot_panels, Panel, Series};
use unrolled::layers::{orthogonal, split_steps, unroll, Cell, Lstm, State, UnrollOptions};

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1.0)
}

/// `h_t = h_{t-1} Wᵀ + x_t` with `W = γ Q`; returns the graph, `h_0 … h_T` and the loss `Σ h_T`.
fn scaled_orthogonal_rnn(gamma: f64, n: usize, steps: usize) -> Result<(Graph<f64>, Vec<NodeId>, NodeId)> {
    let q = orthogonal(&mut Rng::new(11), n, n);
    let mut g = Graph::new();
    let w = g.constant((q * gamma).into_dyn());
    let mut hs = vec![g.input(common::uniform(&[2, n], 3, -1.0, 1.0))];
    for t in 0..steps {
        let mut g = g.step(t);
        let x = g.constant(common::uniform(&[2, n], 20 + t as u64, -1.0, 1.0));
        let a = g.matmul_t(*hs.last().unwrap(), w, false, true)?;
        hs.push(g.add(a, x)?);
    }
    let loss = g.sum_all(*hs.last().unwrap())?;
    Ok((g, hs, loss))
}

#[test]
fn final_state_jacobian_norms_are_powers_of_the_scale() -> Result<()> {
    for gamma in [0.5, 1.0, 1.7] {
        let (mut g, hs, loss) = scaled_orthogonal_rnn(gamma, 4, 6)?;
        let norms = final_state_jacobian_norms(&mut g, &hs, 1)?;
        assert_eq!(norms.len(), 7);
        for (t, n) in norms.iter().enumerate() {
            let want = gamma.powi(6 - t as i32);
            assert!(close(*n, want, 1e-12), "gamma {gamma} t {t}: {n} vs {want}");
        }
        let flow = gradient_flow(&mut g, loss, &hs)?;
        assert_eq!(flow.final_state_jacobian_norms.len(), 6);
        assert!(close(flow.final_state_jacobian_norms[0], gamma.powi(5), 1e-12));
        assert!(flow.step_singular_values.iter().flatten().all(|s| close(*s, gamma, 1e-12)));
        let back: unrolled::layers::diagnostics::GradientFlow = serde_json::from_str(&flow.to_json()).unwrap();
        assert_eq!(back, flow);
    }
    Ok(())
}

#[test]
fn diagnostics_reject_bad_input() -> Result<()> {
    let (mut g, hs, loss) = scaled_orthogonal_rnn(1.0, 3, 2)?;
    assert!(matches!(gradient_flow(&mut g, loss, &hs[..1]), Err(Error::InvalidInput { op: "gradient_flow", .. })));
    assert!(matches!(
        final_state_jacobian_norms(&mut g, &hs, 5),
        Err(Error::InvalidInput { op: "final_state_jacobian_norms", .. })
    ));
    assert!(matches!(final_state_jacobian_norms(&mut g, &[], 0), Err(Error::InvalidInput { .. })));
    assert!(matches!(jacobian(&mut g, loss, hs[0], 0), Err(Error::InvalidInput { op: "jacobian", .. })));
    Ok(())
}

#[test]
fn eigenvalues_singular_values_and_solve() -> Result<()> {
    let rot = arr2(&[[0.0, -2.0], [2.0, 0.0]]);
    let ev = eigenvalues(&rot)?;
    assert_eq!(ev.len(), 2);
    assert!(ev.iter().all(|e| close(e.re, 0.0, 1e-14) && close(e.im.abs(), 2.0, 1e-14)));
    assert!(ev[0].im > 0.0, "ties put the larger imaginary part first");
    let tri = arr2(&[[0.5, 3.0, 1.0], [0.0, -0.9, 2.0], [0.0, 0.0, 0.2]]);
    let ev: Vec<f64> = eigenvalues(&tri)?.iter().map(|e| e.re).collect();
    assert!(ev.iter().zip([-0.9, 0.5, 0.2]).all(|(a, b)| close(*a, b, 1e-12)), "{ev:?}");
    assert_eq!(singular_values(&arr2(&[[3.0, 0.0], [0.0, -4.0]]))?, vec![4.0, 3.0]);
    // Non-finite entries are a typed error, not an endless iteration.
    let bad = arr2(&[[1.0, f64::NAN, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, f64::INFINITY]]);
    assert!(matches!(singular_values(&bad), Err(Error::InvalidInput { op: "singular_values", .. })));
    assert!(matches!(eigenvalues(&bad), Err(Error::InvalidInput { op: "eigenvalues", .. })));
    assert!(matches!(solve(&bad, &[1.0, 1.0, 1.0]), Err(Error::InvalidInput { .. })));
    let x = solve(&arr2(&[[2.0, 1.0], [1.0, 3.0]]), &[3.0, 5.0])?;
    assert!(close(x[0], 0.8, 1e-14) && close(x[1], 1.4, 1e-14), "{x:?}");
    assert!(matches!(solve(&arr2(&[[1.0, 2.0], [2.0, 4.0]]), &[1.0, 1.0]), Err(Error::InvalidInput { .. })));
    assert!(matches!(eigenvalues(&Array2::zeros((2, 3))), Err(Error::InvalidInput { .. })));
    Ok(())
}

#[test]
fn lstm_gate_saturation_from_the_taps() -> Result<()> {
    // Zero weights and chosen biases: every i is σ(-20), every f σ(20), every o σ(0) = 0.5.
    let h = 3;
    let cell = Lstm::new("lstm.", 0, false, 2, h);
    let mut p = ParamStore::<f64>::new();
    p.insert("lstm.weight_ih_l0", ArrayD::zeros(IxDyn(&[4 * h, 2])));
    p.insert("lstm.weight_hh_l0", ArrayD::zeros(IxDyn(&[4 * h, h])));
    let bias: Vec<f64> = [-20.0, 20.0, 0.3, 0.0].iter().flat_map(|&v| std::iter::repeat_n(v, h)).collect();
    p.insert("lstm.bias_ih_l0", ArrayD::from_shape_vec(IxDyn(&[4 * h]), bias).unwrap());
    p.insert("lstm.bias_hh_l0", ArrayD::zeros(IxDyn(&[4 * h])));
    let mut g = Graph::<f64>::new();
    let x = g.input(common::uniform(&[4, 2, 2], 1, -1.0, 1.0));
    let xs = split_steps(&mut g, x)?;
    let run = unroll(&cell, &mut g, &p, &xs, None, UnrollOptions::default())?;
    let sat = gate_saturation(&g, &run, <Lstm as Cell<f64>>::tap_names(&cell), 0.05)?;
    let by: Vec<(&str, f64, f64)> = sat.iter().map(|s| (s.gate.as_str(), s.total.low, s.total.high)).collect();
    assert_eq!(by, vec![("i", 1.0, 0.0), ("f", 0.0, 1.0), ("o", 0.0, 0.0)]);
    assert!(sat.iter().all(|s| s.per_step.len() == 4));
    assert!(sat.iter().all(|s| s.per_step.iter().all(|p| *p == s.total)));
    for eps in [0.0, 0.5, f64::NAN] {
        assert!(matches!(
            gate_saturation(&g, &run, <Lstm as Cell<f64>>::tap_names(&cell), eps),
            Err(Error::InvalidInput { op: "gate_saturation", .. })
        ));
    }
    Ok(())
}

#[test]
fn lstm_cell_path_jacobian_is_the_product_of_forget_gates() -> Result<()> {
    // With W_hh = 0 the cell state c_T depends on c_t only through the forget gates:
    // ∂c_T/∂c_t = diag(f)^(T-t), f = σ(b_f) at every step.
    let (h, steps, bf) = (3, 5, 1.5f64);
    let cell = Lstm::new("lstm.", 0, false, 2, h);
    let mut p = ParamStore::<f64>::new();
    p.insert("lstm.weight_ih_l0", common::uniform(&[4 * h, 2], 2, -0.5, 0.5));
    p.insert("lstm.weight_hh_l0", ArrayD::zeros(IxDyn(&[4 * h, h])));
    let bias: Vec<f64> = [0.0, bf, 0.0, 0.0].iter().flat_map(|&v| std::iter::repeat_n(v, h)).collect();
    p.insert("lstm.bias_ih_l0", ArrayD::from_shape_vec(IxDyn(&[4 * h]), bias).unwrap());
    p.insert("lstm.bias_hh_l0", ArrayD::zeros(IxDyn(&[4 * h])));
    let mut g = Graph::<f64>::new();
    // Zero inputs keep f = σ(b_f) exactly.
    let x = g.input(ArrayD::zeros(IxDyn(&[steps, 1, 2])));
    let xs = split_steps(&mut g, x)?;
    let (h0, c0) = (g.zeros(&[1, h]), g.zeros(&[1, h]));
    let run = unroll(&cell, &mut g, &p, &xs, Some(State::two(h0, c0)), UnrollOptions::default())?;
    let cs: Vec<NodeId> = std::iter::once(c0).chain(run.states.iter().map(|s| s.parts()[1])).collect();
    let norms = final_state_jacobian_norms(&mut g, &cs, 0)?;
    let f = 1.0 / (1.0 + (-bf).exp());
    for (t, n) in norms.iter().enumerate() {
        assert!(close(*n, f.powi((steps - t) as i32), 1e-12), "t {t}: {n}");
    }
    Ok(())
}

fn affine(a: Array2<f64>, b: Vec<f64>) -> impl FnMut(&mut Graph<f64>, NodeId) -> Result<NodeId> {
    move |g, h| {
        let w = g.constant(a.clone().into_dyn());
        let c = g.constant(ArrayD::from_shape_vec(IxDyn(&[1, b.len()]), b.clone()).unwrap());
        let m = g.matmul_t(h, w, false, true)?;
        g.add(m, c)
    }
}

#[test]
fn fixed_points_of_the_lectures_one_dimensional_maps() -> Result<()> {
    let opts = NewtonOptions::default();
    let fp = find_fixed_point(&mut affine(arr2(&[[0.8]]), vec![1.0]), &[-3.0], opts)?;
    assert!(fp.converged && fp.stable);
    assert!(close(fp.h[0], 5.0, 1e-12) && close(fp.spectral_radius, 0.8, 1e-12));
    let fp = find_fixed_point(&mut affine(arr2(&[[1.4]]), vec![1.0]), &[0.0], opts)?;
    assert!(fp.converged && !fp.stable);
    assert!(close(fp.h[0], -2.5, 1e-12) && close(fp.spectral_radius, 1.4, 1e-12));
    // Iterating: 0.8 h + 1 approaches 5, 1.4 h + 1 runs away from -2.5.
    let path = iterate(&mut affine(arr2(&[[0.8]]), vec![1.0]), &[0.0], 60)?;
    assert!((path[60][0] - 5.0).abs() < 1e-5);
    let path = iterate(&mut affine(arr2(&[[1.4]]), vec![1.0]), &[-2.4], 20)?;
    assert!((path[20][0] + 2.5).abs() > 50.0);
    Ok(())
}

#[test]
fn fixed_point_of_a_linear_map_and_its_eigenvalues() -> Result<()> {
    // h* = (I - W)⁻¹ b, and the Jacobian's eigenvalues are W's: 0.5 ± 0.5i and 0.9.
    let w = arr2(&[[0.5, -0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.9]]);
    let b = vec![1.0, 2.0, 0.3];
    let fp = find_fixed_point(&mut affine(w.clone(), b.clone()), &[0.0; 3], NewtonOptions::default())?;
    let i_w = Array2::eye(3) - &w;
    let want = solve(&i_w, &b)?;
    assert!(fp.h.iter().zip(&want).all(|(a, b)| close(*a, *b, 1e-12)), "{:?} vs {want:?}", fp.h);
    assert!(close(fp.eigenvalues[0].re, 0.9, 1e-12) && close(fp.spectral_radius, 0.9, 1e-12));
    assert!(close(fp.eigenvalues[1].modulus(), 0.5f64.sqrt(), 1e-12));
    assert!(fp.stable);
    Ok(())
}

#[test]
fn fixed_points_of_tanh_2h() -> Result<()> {
    // h = tanh(2h): 0 (f'(0) = 2, unstable) and ±h* with f'(h*) = 2(1 - h*²) < 1 (stable).
    let mut map = |g: &mut Graph<f64>, h: NodeId| -> Result<NodeId> {
        let two = g.scalar(2.0);
        let z = g.mul(h, two)?;
        g.tanh(z)
    };
    let starts = vec![vec![0.1], vec![-1.5], vec![2.0], vec![0.9], vec![-0.05]];
    let mut found = fixed_points(&mut map, &starts, NewtonOptions::default(), 1e-8)?;
    found.sort_by(|a, b| a.h[0].total_cmp(&b.h[0]));
    assert_eq!(found.len(), 3, "{found:?}");
    let hs = found[2].h[0];
    assert!(close(hs, (2.0 * hs).tanh(), 1e-12) && hs > 0.9);
    assert!(close(found[0].h[0], -hs, 1e-10) && found[1].h[0].abs() < 1e-12);
    assert!(found[0].stable && !found[1].stable && found[2].stable);
    assert!(close(found[1].spectral_radius, 2.0, 1e-12));
    assert!(close(found[2].spectral_radius, 2.0 * (1.0 - hs * hs), 1e-10));
    // A map that changes the size is a typed error.
    let mut bad = |g: &mut Graph<f64>, h: NodeId| -> Result<NodeId> { g.concat(&[h, h], 1) };
    assert!(matches!(find_fixed_point(&mut bad, &[0.0], NewtonOptions::default()), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(find_fixed_point(&mut map, &[], NewtonOptions::default()), Err(Error::InvalidInput { .. })));
    assert!(matches!(
        find_fixed_point(&mut map, &[f64::NAN], NewtonOptions::default()),
        Err(Error::InvalidInput { .. })
    ));
    // h = h + 1 has no fixed point: J - I is singular, the result says so and is not "stable".
    let mut shift = |g: &mut Graph<f64>, h: NodeId| -> Result<NodeId> { g.affine(h, 1.0, 1.0) };
    let fp = find_fixed_point(&mut shift, &[0.0], NewtonOptions::default())?;
    assert!(!fp.converged && !fp.stable && fp.iterations == 0);
    Ok(())
}

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("unrolled-test-diagnostics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn plots_are_svg_files() -> Result<()> {
    let (mut g, hs, loss) = scaled_orthogonal_rnn(0.7, 3, 4)?;
    let flow = gradient_flow(&mut g, loss, &hs)?;
    let path = temp("flow.svg");
    plot_gradient_flow(&path, &[("gamma 0.7", &flow)])?;
    let svg = std::fs::read_to_string(&path).unwrap();
    assert_eq!(svg.matches("gamma 0.7").count(), 3, "one legend entry per panel");
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("gamma 0.7") && svg.contains("<polyline"), "{svg}");
    let path = temp("loss.svg");
    plot_loss_curve(&path, "loss", &(1..=100).map(|i| 1.0 / i as f64).collect::<Vec<_>>())?;
    assert!(std::fs::read_to_string(&path).unwrap().contains("mean of 5"));
    // Nothing finite on a log axis still gives a picture; an unwritable path is an Io error.
    let empty = Panel {
        title: "t".into(),
        x_label: "x".into(),
        y_label: "y".into(),
        log_y: true,
        series: vec![Series::indexed("zeros", 0.0, &[0.0, f64::NAN])],
    };
    plot_panels(temp("empty.svg"), std::slice::from_ref(&empty))?;
    let bad = std::path::Path::new("/nonexistent-dir/x.svg");
    assert!(matches!(plot_panels(bad, &[empty]), Err(Error::Io { op: "plot", .. })));
    Ok(())
}

#[test]
fn rendering_says_when_graphviz_is_missing() -> Result<()> {
    let (g, _, _) = scaled_orthogonal_rnn(1.0, 2, 2)?;
    let dot = g.to_dot();
    let err = render_dot_with("unrolled-no-such-dot-program", &dot, temp("g.svg")).unwrap_err();
    assert!(matches!(err, Error::ToolMissing { op: "render_dot", .. }), "{err:?}");
    assert!(err.to_string().contains("apt-get install graphviz"), "{err}");
    assert!(matches!(render_dot_with("dot", &dot, temp("g.txt")), Err(Error::InvalidInput { .. })));
    if dot_available() {
        let path = temp("g.svg");
        render_dot_with("dot", &dot, &path)?;
        assert!(std::fs::read_to_string(&path).unwrap().contains("<svg"));
        let err = render_dot_with("dot", "digraph {", temp("broken.svg")).unwrap_err();
        assert!(matches!(err, Error::ToolFailed { .. }), "{err:?}");
    }
    Ok(())
}
