//! `second_order`: gradients and Hessian-vector products by differentiating the
//! recorded backward pass (reverse over reverse), against PyTorch's double backward.

use unrolled::autograd::NodeId;
use unrolled::layers::{Nonlinearity, Recurrent, RecurrentConfig, RunOptions};

use super::run::{e, Run, R};
use crate::common::fixture::{Compare, Fixture};

pub fn second_order(f: &Fixture) -> R<Compare> {
    let c = RecurrentConfig::new(f.usize("input_size")?, f.usize("hidden_size")?);
    let lstm = f.str("cell")? == "lstm";
    let mut r = Run::new(f);
    let (x, h0) = (r.input("x")?, r.input("h0")?);
    let (out, loss) = if lstm {
        let c0 = r.input("c0")?;
        let out =
            Recurrent::lstm("", c).forward(&mut r.g, &r.store, x, Some(&[h0, c0]), RunOptions::default()).map_err(e)?;
        let a = r.weighted(out.output, "w_h")?;
        let b = r.weighted(out.c_n().ok_or("no c_n")?, "w_c")?;
        let l = r.add(a, b)?;
        r.output("c_n", out.c_n().ok_or("no c_n")?)?;
        (out, l)
    } else {
        let out = Recurrent::rnn("", c, Nonlinearity::Tanh)
            .forward(&mut r.g, &r.store, x, Some(&[h0]), RunOptions::default())
            .map_err(e)?;
        let l = r.weighted(out.output, "w_h")?;
        (out, l)
    };
    r.output("h", out.output)?;
    r.output("h_n", out.h_n())?;

    let w = r.g.param(&r.store, "weight_hh_l0").map_err(e)?;
    let d = r.g.grad(loss, &[w, x]).map_err(e)?;
    let v_w = r.loss_const("v_weight_hh_l0")?;
    let v_x = r.loss_const("v_x")?;
    let dot = |r: &mut Run, a: NodeId, b: NodeId| -> R<NodeId> {
        let p = r.g.mul(a, b).map_err(e)?;
        r.g.sum_all(p).map_err(e)
    };
    let s_w = dot(&mut r, d[0], v_w)?;
    let s_x = dot(&mut r, d[1], v_x)?;
    let joint = r.add(s_w, s_x)?;
    r.cmp.number(
        "grad_dot_v.weight_hh_l0",
        r.g.scalar_value(s_w).map_err(e)?,
        f.expected.pointer("/grad_dot_v/weight_hh_l0").and_then(|v| v.as_f64()).ok_or("grad_dot_v")?,
    );
    r.cmp.number(
        "grad_dot_v.x",
        r.g.scalar_value(s_x).map_err(e)?,
        f.expected.pointer("/grad_dot_v/x").and_then(|v| v.as_f64()).ok_or("grad_dot_v")?,
    );
    let h_w = r.g.grad(s_w, &[w]).map_err(e)?[0];
    let h_x = r.g.grad(s_x, &[x]).map_err(e)?[0];
    let hj = r.g.grad(joint, &[w, x]).map_err(e)?;
    for (section, name, id) in [
        ("hvp", "weight_hh_l0", h_w),
        ("hvp", "x", h_x),
        ("hvp_joint", "weight_hh_l0", hj[0]),
        ("hvp_joint", "x", hj[1]),
    ] {
        let v = r.g.value(id).map_err(e)?.to_owned();
        let t = f.expected_tensor(section, name)?;
        r.cmp.tensor(&format!("{section}.{name}"), &v, &t);
    }
    r.finish(loss)
}
