//! `gradcheck_sanity`: a tiny composite of elementary ops, with every intermediate.

use unrolled::autograd::{Graph, NodeId, ParamStore};

use crate::common::fixture::{Compare, Fixture};
use crate::TOL;

fn err(e: unrolled::autograd::Error) -> String {
    e.to_string()
}

pub fn gradcheck_sanity(f: &Fixture) -> Result<Compare, String> {
    let mut store = ParamStore::<f64>::new();
    for (name, t) in &f.params {
        store.insert(name.clone(), t.f64());
    }
    let mut g = Graph::<f64>::new();
    let w = g.param(&store, "W").map_err(err)?;
    let c = g.param(&store, "c").map_err(err)?;
    let a = g.input_named("A", f.input("A")?.f64());
    let gw = g.constant(f.loss_input("G")?.f64());

    let p = g.matmul(a, w).map_err(err)?;
    let q = g.add(p, c).map_err(err)?;
    let u = g.sigmoid(q).map_err(err)?;
    let qs = g.narrow(q, 1, 1, 2).map_err(err)?;
    let v = g.tanh(qs).map_err(err)?;
    let wc = g.concat(&[u, v], 1).map_err(err)?;
    let e = g.exp(wc).map_err(err)?;
    let lg = g.log(u).map_err(err)?;
    let sm = g.softmax(wc, 1).map_err(err)?;
    let t1 = g.mul(gw, sm).map_err(err)?;
    let t1 = g.sum_all(t1).map_err(err)?;
    let t2 = g.mean_all(lg).map_err(err)?;
    let t3 = g.sum_all(e).map_err(err)?;
    let t3 = g.mul_scalar(t3, 0.1).map_err(err)?;
    let loss = g.add(t1, t2).map_err(err)?;
    let loss = g.add(loss, t3).map_err(err)?;

    let mut cmp = Compare::new(TOL);
    let named: [(&str, NodeId); 8] =
        [("P", p), ("Q", q), ("u", u), ("v", v), ("w", wc), ("e", e), ("lg", lg), ("sm", sm)];
    for name in f.expected_names("outputs") {
        let id = named.iter().find(|(n, _)| *n == name).map(|(_, id)| *id).ok_or(format!("unknown output {name}"))?;
        cmp.tensor(&format!("outputs.{name}"), &g.value(id).map_err(err)?, &f.expected_tensor("outputs", &name)?);
    }
    cmp.number("loss", g.scalar_value(loss).map_err(err)?, f.expected_number("loss")?);

    let leaves = [("W", w), ("c", c), ("A", a)];
    let ids: Vec<NodeId> = leaves.iter().map(|l| l.1).collect();
    let grads = g.grad(loss, &ids).map_err(err)?;
    for name in f.expected_names("grads") {
        let k = leaves.iter().position(|(n, _)| *n == name).ok_or(format!("unknown grad {name}"))?;
        cmp.tensor(&format!("grads.{name}"), &g.value(grads[k]).map_err(err)?, &f.expected_tensor("grads", &name)?);
    }
    let inter: Vec<NodeId> = named.iter().map(|n| n.1).collect();
    let igrads = g.grad(loss, &inter).map_err(err)?;
    for name in f.expected_names("intermediate_grads") {
        let k = named.iter().position(|(n, _)| *n == name).ok_or(format!("unknown intermediate {name}"))?;
        cmp.tensor(
            &format!("intermediate_grads.{name}"),
            &g.value(igrads[k]).map_err(err)?,
            &f.expected_tensor("intermediate_grads", &name)?,
        );
    }
    Ok(cmp)
}
