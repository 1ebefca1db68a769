//! `safetensors_state_dict`: a PyTorch `state_dict` saved with safetensors, loaded
//! by name into a 2-layer bidirectional LSTM and a GRU, run in f32 and f64.

use std::collections::BTreeMap;

use ndarray::ArrayD;
use unrolled::autograd::{Float, Graph, ParamStore};
use unrolled::layers::{load_safetensors, load_state_dict, GruVariant, Recurrent, RecurrentConfig, RunOptions};

use super::run::{e, R};
use crate::common::fixture::{Compare, Fixture};

fn run<T: Float>(f: &Fixture, loaded: &ParamStore<T>, tol: f64, section: &str) -> R<Compare> {
    let (i, h, l) = (f.usize("input_size")?, f.usize("hidden_size")?, f.usize("num_layers")?);
    let lstm = Recurrent::lstm("lstm.", RecurrentConfig::new(i, h).layers(l).bidirectional(f.bool("bidirectional")?));
    let gru = Recurrent::gru(
        "gru.",
        RecurrentConfig::new(i, f.usize("gru_hidden_size")?).layers(f.usize("gru_num_layers")?),
        GruVariant::Torch,
    );
    let mut store = ParamStore::<T>::new();
    let specs: Vec<_> = lstm.params::<T>().into_iter().chain(gru.params::<T>()).collect();
    load_state_dict(&mut store, &specs, loaded, true).map_err(e)?;

    let cast = |a: ArrayD<f64>| a.mapv(T::of);
    let mut g = Graph::<T>::new();
    let x = g.input(cast(f.input("x")?.f64()));
    let h0 = g.input(cast(f.input("lstm_h0")?.f64()));
    let c0 = g.input(cast(f.input("lstm_c0")?.f64()));
    let gh0 = g.input(cast(f.input("gru_h0")?.f64()));
    let lo = lstm.forward(&mut g, &store, x, Some(&[h0, c0]), RunOptions::default()).map_err(e)?;
    let go = gru.forward(&mut g, &store, x, Some(&[gh0]), RunOptions::default()).map_err(e)?;
    let mut cmp = Compare::new(tol);
    let outs = [
        ("lstm_h", lo.output),
        ("lstm_h_n", lo.h_n()),
        ("lstm_c_n", lo.c_n().ok_or("no c_n")?),
        ("gru_h", go.output),
        ("gru_h_n", go.h_n()),
    ];
    for name in f.expected_names(section) {
        let id = outs.iter().find(|o| o.0 == name).ok_or(format!("{section}.{name} not produced"))?.1;
        let v = g.value(id).map_err(e)?.mapv(|x| x.f64());
        cmp.tensor(&format!("{section}.{name}"), &v, &f.expected_tensor(section, &name)?);
    }
    Ok(cmp)
}

pub fn safetensors_state_dict(f: &Fixture) -> R<Compare> {
    let path = f.path.parent().ok_or("no folder")?.join(f.str("safetensors_file")?);
    let (st64, meta) = load_safetensors::<f64>(&path).map_err(e)?;
    // The file holds exactly the names and shapes of `expected.state_dict`.
    let want: BTreeMap<String, Vec<usize>> =
        serde_json::from_value(f.expected.get("state_dict").cloned().ok_or("no state_dict")?)
            .map_err(|x| x.to_string())?;
    let got: BTreeMap<String, Vec<usize>> = st64.iter().map(|(n, a)| (n.to_owned(), a.shape().to_vec())).collect();
    let mut cmp = if f.str("compute_dtype")? == "float32" {
        let (st32, _) = load_safetensors::<f32>(&path).map_err(e)?;
        let mut c = run::<f32>(f, &st32, f.f64("tolerance")?, "outputs")?;
        let wide = run::<f64>(f, &st64, f.f64("tolerance_f64")?, "outputs_f64")?;
        c.failures.extend(wide.failures);
        c.checked += wide.checked;
        c
    } else {
        run::<f64>(f, &st64, f.f64("tolerance")?, "outputs")?
    };
    if want != got {
        cmp.fail(format!("state_dict names/shapes differ: file {got:?}"));
    }
    if meta.get("format").map(String::as_str) != Some("pt") {
        cmp.fail(format!("metadata {meta:?}"));
    }
    Ok(cmp)
}
