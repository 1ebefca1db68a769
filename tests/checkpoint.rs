//! Checkpoints: round trips, exact resumption, and bad files as typed errors.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use ndarray::ArrayD;
use unrolled::autograd::{Error, Graph, ParamStore, Reduction, Result};
use unrolled::layers::{
    load_safetensors, load_state_dict, save_safetensors, AnyOptimizer, Checkpoint, Init, Optimizer, Recurrent,
    RecurrentConfig, RunOptions,
};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("unrolled-ckpt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn model() -> (Recurrent<unrolled::layers::Lstm>, ParamStore<f64>) {
    let m = Recurrent::lstm("lstm.", RecurrentConfig::new(2, 3));
    let mut p = ParamStore::new();
    m.init_params(&mut p, &Init::torch(4));
    p.insert("fc.weight", common::uniform(&[2, 3], 5, -0.5, 0.5));
    (m, p)
}

/// One training step: loss and the gradients of every parameter.
fn grads(
    m: &Recurrent<unrolled::layers::Lstm>,
    p: &ParamStore<f64>,
    step: u64,
) -> Result<BTreeMap<String, ArrayD<f64>>> {
    let mut g = Graph::new();
    let x = g.input(common::uniform(&[4, 2, 2], 100 + step, -1.0, 1.0));
    let out = m.forward(&mut g, p, x, None, RunOptions::default())?;
    let w = g.param(p, "fc.weight")?;
    let logits = g.linear(out.output, w, None)?;
    let t = g.index_input(ArrayD::from_shape_vec(vec![4, 2], vec![0, 1, 1, 0, 1, 1, 0, 0]).unwrap());
    let loss = g.cross_entropy(logits, t, Reduction::Mean)?;
    g.param_grad_values(loss)
}

#[test]
fn resuming_from_a_checkpoint_equals_an_uninterrupted_run() -> Result<()> {
    let d = dir("resume");
    for file in ["ck.json", "ck.safetensors"] {
        let (m, mut p) = model();
        let mut opt = AnyOptimizer::by_name("adamw", 0.01)?;
        for s in 0..3 {
            let gr = grads(&m, &p, s)?;
            opt.step(&mut p, &gr)?;
        }

        let (_, mut q) = model();
        let mut opt2 = AnyOptimizer::by_name("adamw", 0.01)?;
        let gr = grads(&m, &q, 0)?;
        opt2.step(&mut q, &gr)?;
        let path = d.join(file);
        Checkpoint {
            step: 1,
            params: q.clone(),
            optimizer: Some(opt2),
            metadata: BTreeMap::from([("cell".into(), "lstm".into())]),
        }
        .save(&path)?;
        let back = Checkpoint::<f64>::load(&path)?;
        assert_eq!(back.step, 1);
        assert_eq!(back.metadata["cell"], "lstm");
        assert_eq!(back.params, q, "{file}: parameters round-trip exactly");
        let (mut q, mut opt3) = (back.params, back.optimizer.expect("optimizer state"));
        for s in 1..3 {
            let gr = grads(&m, &q, s)?;
            opt3.step(&mut q, &gr)?;
        }
        assert_eq!(q, p, "{file}: resumed run equals the uninterrupted one");
    }
    Ok(())
}

#[test]
fn safetensors_in_f32_and_f64() -> Result<()> {
    let d = dir("st");
    let (_, p) = model();
    save_safetensors(&d.join("a.safetensors"), &p, &BTreeMap::new())?;
    let (back, meta) = load_safetensors::<f64>(&d.join("a.safetensors"))?;
    assert_eq!(back, p);
    assert_eq!(meta["format"], "pt");
    let p32 = p.cast::<f32>();
    save_safetensors(&d.join("b.safetensors"), &p32, &BTreeMap::new())?;
    let (wide, _) = load_safetensors::<f64>(&d.join("b.safetensors"))?;
    assert_eq!(wide, p32.cast::<f64>(), "an F32 file widens exactly");
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 2, "no temporary files left behind");
    Ok(())
}

#[test]
fn bad_files_are_typed_errors() -> Result<()> {
    let d = dir("bad");
    let (m, p) = model();
    let good = d.join("good.safetensors");
    save_safetensors(&good, &p, &BTreeMap::new())?;
    let bytes = std::fs::read(&good).unwrap();

    let truncated = d.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_safetensors::<f64>(&truncated).unwrap_err();
    assert!(matches!(e, Error::Parse { .. }), "{e}");

    let mut corrupt = bytes.clone();
    corrupt[10] = b'#';
    std::fs::write(d.join("corrupt.safetensors"), &corrupt).unwrap();
    assert!(matches!(load_safetensors::<f64>(&d.join("corrupt.safetensors")).unwrap_err(), Error::Parse { .. }));

    std::fs::write(d.join("tiny.safetensors"), [1u8, 2]).unwrap();
    assert!(matches!(load_safetensors::<f64>(&d.join("tiny.safetensors")).unwrap_err(), Error::Parse { .. }));
    assert!(matches!(load_safetensors::<f64>(&d.join("missing.safetensors")).unwrap_err(), Error::Io { .. }));
    std::fs::write(d.join("c.json"), b"{\"step\": 1, \"par").unwrap();
    let e = Checkpoint::<f64>::load(&d.join("c.json")).unwrap_err();
    assert!(e.to_string().starts_with("cannot parse checkpoint:"), "{e}");

    // Names and shapes are checked against the module before anything is copied.
    let specs = m.params::<f64>();
    let mut target = ParamStore::new();
    let mut wrong_shape = p.clone();
    wrong_shape.insert("lstm.weight_hh_l0", ArrayD::zeros(vec![12, 4]));
    let e = load_state_dict(&mut target, &specs, &wrong_shape, true).unwrap_err();
    assert_eq!(e.to_string(), "shape mismatch in load_state_dict at lstm.weight_hh_l0: lhs [12, 3], rhs [12, 4]");
    let mut missing = p.clone();
    missing.remove("lstm.bias_hh_l0");
    assert_eq!(
        load_state_dict(&mut target, &specs, &missing, true).unwrap_err().to_string(),
        "unknown parameter `lstm.bias_hh_l0` in load_state_dict"
    );
    let e = load_state_dict(&mut target, &specs, &p, true).unwrap_err();
    assert!(e.to_string().contains("unexpected names in the state dict: fc.weight"), "{e}");
    assert!(target.is_empty(), "a failed load copies nothing");
    load_state_dict(&mut target, &specs, &p, false)?;
    assert_eq!(target.len(), 4);
    Ok(())
}

#[test]
fn a_failed_save_leaves_the_last_good_checkpoint() -> Result<()> {
    let d = dir("atomic");
    let (_, p) = model();
    let path = d.join("ck.json");
    let ck = Checkpoint { step: 7, params: p.clone(), optimizer: None, metadata: BTreeMap::new() };
    ck.save(&path)?;
    let before = std::fs::read(&path).unwrap();
    // The save cannot complete (its target is now a directory), and must fail cleanly.
    let blocked = d.join("blocked.json");
    std::fs::create_dir_all(blocked.join("x")).unwrap();
    assert!(matches!(ck.save(&blocked).unwrap_err(), Error::Io { .. }));
    assert!(matches!(ck.save(&d.join("no/such/dir/ck.json")).unwrap_err(), Error::Io { .. }));
    assert_eq!(std::fs::read(&path).unwrap(), before, "the good checkpoint is untouched");
    let leftovers: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files are removed");
    // A save over an existing checkpoint replaces it whole.
    let ck2 = Checkpoint { step: 8, ..ck };
    ck2.save(&path)?;
    assert_eq!(Checkpoint::<f64>::load(&path)?.step, 8);
    Ok(())
}

#[test]
fn non_finite_values_are_never_saved_and_clipping_keeps_nan() -> Result<()> {
    let d = dir("nan");
    let (_, mut p) = model();
    let path = d.join("ck.json");
    Checkpoint { step: 1, params: p.clone(), optimizer: None, metadata: BTreeMap::new() }.save(&path)?;
    p.get_mut("fc.weight").unwrap()[[0, 0]] = f64::NAN;
    let e = Checkpoint { step: 2, params: p, optimizer: None, metadata: BTreeMap::new() }.save(&path).unwrap_err();
    assert!(e.to_string().contains("non-finite values in fc.weight"), "{e}");
    assert_eq!(Checkpoint::<f64>::load(&path)?.step, 1, "the last good checkpoint stays");
    let mut grads = BTreeMap::from([("w".to_string(), ndarray::arr1(&[f64::NAN, 1.0]).into_dyn())]);
    unrolled::layers::clip_grad_value(&mut grads, 0.5)?;
    assert!(grads["w"][0].is_nan() && grads["w"][1] == 0.5);
    let total = unrolled::layers::clip_grad_norm(&mut grads, 1.0, 2.0)?;
    assert!(total.is_nan() && grads["w"][1].is_nan(), "as PyTorch: a NaN norm makes the gradients NaN");
    Ok(())
}
