//! Snapshots of small graphs (text form, DOT, summary) and of gradients: the text
//! a user pins with `insta::assert_snapshot!`.

use ndarray::arr2;
use unrolled::autograd::{snapshot, Graph, ParamStore, Result};

/// A two-step tanh RNN with a squared-error loss, under `rnn/t{t}` scopes.
fn two_step_rnn() -> Result<(Graph<f64>, unrolled::autograd::NodeId)> {
    let mut st = ParamStore::new();
    st.insert("rnn.weight_ih_l0", arr2(&[[0.5, -0.25], [0.125, 0.75]]).into_dyn());
    st.insert("rnn.weight_hh_l0", arr2(&[[0.1, 0.2], [-0.3, 0.4]]).into_dyn());
    let mut g = Graph::new();
    let w_ih = g.param(&st, "rnn.weight_ih_l0")?;
    let w_hh = g.param(&st, "rnn.weight_hh_l0")?;
    let xs = [arr2(&[[1.0, 0.0]]), arr2(&[[0.0, -1.0]])];
    let mut h = g.zeros(&[1, 2]);
    let mut g2 = g.scope("rnn");
    for (t, x) in xs.iter().enumerate() {
        let mut g = g2.step(t);
        let x = g.input_named("x", x.clone().into_dyn());
        let a = g.linear(x, w_ih, None)?;
        let b = g.linear(h, w_hh, None)?;
        let s = g.add(a, b)?;
        h = g.tanh(s)?;
    }
    drop(g2);
    let target = g.constant(arr2(&[[0.5, -0.5]]).into_dyn());
    let loss = g.mse_loss(h, target)?;
    Ok((g, loss))
}

#[test]
fn forward_graph_text() -> Result<()> {
    let (g, _) = two_step_rnn()?;
    insta::assert_snapshot!("rnn_forward", g.to_string());
    Ok(())
}

#[test]
fn forward_and_backward_graph_text() -> Result<()> {
    let (mut g, loss) = two_step_rnn()?;
    let _ = g.param_grads(loss)?;
    insta::assert_snapshot!("rnn_forward_backward", g.to_string());
    insta::assert_snapshot!("rnn_summary", g.summary().to_string());
    Ok(())
}

#[test]
fn gradients() -> Result<()> {
    let (mut g, loss) = two_step_rnn()?;
    insta::assert_snapshot!("rnn_param_grads", snapshot::param_grads(&mut g, loss)?);
    Ok(())
}

#[test]
fn dot() -> Result<()> {
    let (g, _) = two_step_rnn()?;
    insta::assert_snapshot!("rnn_dot", g.to_dot());
    Ok(())
}

#[test]
fn number_format_is_stable() {
    assert_eq!(snapshot::format_number(0.1 + 0.2, 6), "0.3");
    assert_eq!(snapshot::format_number(-1.0e-7, 3), "-1.00e-7");
    assert_eq!(snapshot::format_number(123456.7, 6), "123457");
    assert_eq!(snapshot::format_number(1234567.8, 6), "1.23457e6");
    assert_eq!(snapshot::format_number(-0.0, 6), "0");
    assert_eq!(snapshot::format_number(-4.0e-13, 2), "-4.0e-13");
    assert_eq!(snapshot::format_number(0.000123456789, 4), "0.0001235");
}
