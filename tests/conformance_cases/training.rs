//! Training trajectories: several optimizer steps, against PyTorch's runs.
//! The LM cases record the graph (and its gradient nodes) once and *replay* it for
//! every step with the next batch and the updated parameters.

use std::collections::BTreeMap;

use ndarray::{ArrayD, Axis, Slice};
use unrolled::autograd::{Graph, ParamStore, Reduction};
use unrolled::layers::{
    clip_grad_norm, grad_norm, Adam, Nonlinearity, Optimizer, Recurrent, RecurrentConfig, RunOptions, Sgd,
};

use super::run::{e, R};
use crate::common::fixture::{Compare, Fixture};
use crate::TOL;

fn store_of(f: &Fixture) -> ParamStore<f64> {
    let mut s = ParamStore::new();
    for (n, t) in &f.params {
        s.insert(n.clone(), t.f64());
    }
    s
}

fn compare_params(cmp: &mut Compare, f: &Fixture, section: &str, store: &ParamStore<f64>) -> R<()> {
    for name in f.expected_names(section) {
        let t = f.expected_tensor(section, &name)?;
        let v = store.get(&name).ok_or(format!("{section}: no parameter {name}"))?;
        cmp.tensor(&format!("{section}.{name}"), v, &t);
    }
    Ok(())
}

fn optimizer(f: &Fixture) -> R<Box<dyn Optimizer<f64>>> {
    let lr = f.f64("lr")?;
    Ok(match f.str("optimizer")? {
        "sgd" => {
            let mut o =
                Sgd::new(lr).momentum(f.f64("momentum").unwrap_or(0.0)).nesterov(f.bool("nesterov").unwrap_or(false));
            o.dampening = f.f64("dampening").unwrap_or(0.0);
            o.weight_decay = f.f64("weight_decay").unwrap_or(0.0);
            Box::new(o)
        }
        kind @ ("adam" | "adamw") => {
            let mut o = if kind == "adam" { Adam::new(lr) } else { Adam::adamw(lr) };
            o.betas = (f.f64("beta1")?, f.f64("beta2")?);
            o.eps = f.f64("eps")?;
            o.weight_decay = f.f64("weight_decay")?;
            o.amsgrad = f.bool("amsgrad").unwrap_or(false);
            Box::new(o)
        }
        other => return Err(format!("unknown optimizer {other}")),
    })
}

fn batch(t: &ArrayD<i64>, n: usize) -> ArrayD<i64> {
    t.index_axis(Axis(0), n).to_owned()
}

/// `train_trajectory_sgd`, `_adam`, `_adamw`: a char-level LSTM LM trained for N steps.
pub fn lm_trajectory(f: &Fixture) -> R<Compare> {
    let mut store = store_of(f);
    let tokens = f.input("tokens")?.i64();
    let targets = f.loss_input("targets")?.i64();
    let n_updates = f.usize("num_updates")?;
    let clip = f.bool("grad_clipping")?;
    let lstm = Recurrent::lstm("lstm.", RecurrentConfig::new(f.usize("embedding_dim")?, f.usize("hidden_size")?));

    let mut g = Graph::new();
    let ids = g.index_input(batch(&tokens, 0));
    let tgt = g.index_input(batch(&targets, 0));
    let emb = g.param(&store, "embedding.weight").map_err(e)?;
    let x = g.embedding(emb, ids).map_err(e)?;
    let out = lstm.forward(&mut g, &store, x, None, RunOptions::default()).map_err(e)?;
    let w = g.param(&store, "fc.weight").map_err(e)?;
    let b = g.param(&store, "fc.bias").map_err(e)?;
    let logits = g.linear(out.output, w, Some(b)).map_err(e)?;
    let loss = g.cross_entropy(logits, tgt, Reduction::Mean).map_err(e)?;
    let grad_nodes = g.param_grads(loss).map_err(e)?;

    let mut cmp = Compare::new(TOL);
    let mut opt = optimizer(f)?;
    let (mut losses, mut norms, mut coefs) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..n_updates {
        if n > 0 {
            g.set_index_value(ids, batch(&tokens, n)).map_err(e)?;
            g.set_index_value(tgt, batch(&targets, n)).map_err(e)?;
            g.load_params(&store).map_err(e)?;
            g.replay().map_err(e)?;
        }
        let mut grads: BTreeMap<String, ArrayD<f64>> =
            grad_nodes.iter().map(|(k, &id)| Ok((k.clone(), g.value(id).map_err(e)?.to_owned()))).collect::<R<_>>()?;
        losses.push(g.scalar_value(loss).map_err(e)?);
        if n == 0 {
            cmp.number("loss", losses[0], f.expected_number("loss")?);
            for name in f.expected_names("grads") {
                cmp.tensor(
                    &format!("grads.{name}"),
                    grads.get(&name).ok_or(format!("no grad {name}"))?,
                    &f.expected_tensor("grads", &name)?,
                );
            }
        }
        if clip {
            let total = clip_grad_norm(&mut grads, f.f64("max_norm")?, f.f64("norm_type")?).map_err(e)?;
            norms.push(total);
            coefs.push((f.f64("max_norm")? / (total + f.f64("clip_eps")?)).min(1.0));
        } else {
            norms.push(grad_norm(&grads, 2.0).map_err(e)?);
        }
        opt.step(&mut store, &grads).map_err(e)?;
        if n == 0 {
            compare_params(&mut cmp, f, "params_after_step1", &store)?;
        }
    }
    let vec_cmp = |cmp: &mut Compare, key: &str, v: &[f64]| -> R<()> {
        let t = f.expected_tensor_at(key)?;
        cmp.tensor(key, &ArrayD::from_shape_vec(vec![v.len()], v.to_vec()).map_err(|x| x.to_string())?, &t);
        Ok(())
    };
    vec_cmp(&mut cmp, "losses", &losses)?;
    vec_cmp(&mut cmp, "grad_norms", &norms)?;
    if clip {
        vec_cmp(&mut cmp, "clip_coefs", &coefs)?;
    }
    compare_params(&mut cmp, f, "final_params", &store)?;
    Ok(cmp)
}

/// `train_trajectory_tbptt`: an Elman RNN + linear readout trained with truncated
/// BPTT, one SGD step per chunk; the state carried between chunks as a constant.
pub fn tbptt_trajectory(f: &Fixture) -> R<Compare> {
    let mut store = store_of(f);
    let (k, n_chunks) = (f.usize("chunk_len")?, f.usize("num_chunks")?);
    let x_all = f.input("x")?.f64();
    let y_all = f.loss_input("y")?.f64();
    let rnn = Recurrent::rnn(
        "rnn.",
        RecurrentConfig::new(f.usize("input_size")?, f.usize("hidden_size")?),
        Nonlinearity::Tanh,
    );
    let rows = |a: &ArrayD<f64>, n: usize| a.slice_axis(Axis(0), Slice::from(n * k..(n + 1) * k)).to_owned();

    let mut g = Graph::new();
    let x = g.input_named("x_chunk", rows(&x_all, 0));
    let h_start = g.input_named("h_start", f.input("h0")?.f64());
    let y = g.constant(rows(&y_all, 0));
    let out = rnn.forward(&mut g, &store, x, Some(&[h_start]), RunOptions::default()).map_err(e)?;
    let w = g.param(&store, "fc.weight").map_err(e)?;
    let b = g.param(&store, "fc.bias").map_err(e)?;
    let yhat = g.linear(out.output, w, Some(b)).map_err(e)?;
    let loss = g.mse_loss(yhat, y).map_err(e)?;
    let grad_nodes = g.param_grads(loss).map_err(e)?;
    let input_grads = g.grad(loss, &[x, h_start]).map_err(e)?;

    let mut cmp = Compare::new(TOL);
    let mut opt = Sgd::new(f.f64("lr")?).momentum(f.f64("momentum")?);
    let (mut losses, mut norms, mut hidden) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..n_chunks {
        if n > 0 {
            g.set_value(x, rows(&x_all, n)).map_err(e)?;
            g.set_value(y, rows(&y_all, n)).map_err(e)?;
            g.set_value(h_start, hidden.last().cloned().ok_or("no state")?).map_err(e)?;
            g.load_params(&store).map_err(e)?;
            g.replay().map_err(e)?;
        }
        let grads: BTreeMap<String, ArrayD<f64>> =
            grad_nodes.iter().map(|(k, &id)| Ok((k.clone(), g.value(id).map_err(e)?.to_owned()))).collect::<R<_>>()?;
        losses.push(g.scalar_value(loss).map_err(e)?);
        norms.push(grad_norm(&grads, 2.0).map_err(e)?);
        if n == 0 {
            cmp.number("loss", losses[0], f.expected_number("loss")?);
            let mut gx = ArrayD::zeros(x_all.raw_dim());
            gx.slice_axis_mut(Axis(0), Slice::from(0..k)).assign(&g.value(input_grads[0]).map_err(e)?);
            let mut all = grads.clone();
            all.insert("x".into(), gx);
            all.insert("h0".into(), g.value(input_grads[1]).map_err(e)?.to_owned());
            for name in f.expected_names("grads") {
                cmp.tensor(
                    &format!("grads.{name}"),
                    all.get(&name).ok_or(format!("no grad {name}"))?,
                    &f.expected_tensor("grads", &name)?,
                );
            }
        }
        let h_n = g.value(out.h_n()).map_err(e)?.to_owned();
        hidden.push(h_n);
        opt.step(&mut store, &grads).map_err(e)?;
    }
    let views: Vec<_> = hidden.iter().map(|h| h.view()).collect();
    let stacked = ndarray::concatenate(Axis(0), &views).map_err(|x| x.to_string())?;
    cmp.tensor("hidden_after_chunk", &stacked, &f.expected_tensor_at("hidden_after_chunk")?);
    cmp.tensor(
        "losses",
        &ArrayD::from_shape_vec(vec![losses.len()], losses).map_err(|x| x.to_string())?,
        &f.expected_tensor_at("losses")?,
    );
    cmp.tensor(
        "grad_norms",
        &ArrayD::from_shape_vec(vec![norms.len()], norms).map_err(|x| x.to_string())?,
        &f.expected_tensor_at("grad_norms")?,
    );
    compare_params(&mut cmp, f, "final_params", &store)?;
    Ok(cmp)
}
