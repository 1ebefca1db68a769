//! The graph's structure as serde data: it round-trips through JSON, and a graph
//! rebuilt from it replays to the same values and gradients.

mod common;

use unrolled::autograd::{Graph, GraphDef, NodeId, ParamStore, Reduction, Result};

fn model(g: &mut Graph<f64>, st: &ParamStore<f64>) -> Result<(NodeId, NodeId, NodeId, NodeId)> {
    let w = g.param(st, "fc.weight")?;
    let emb = g.param(st, "embedding.weight")?;
    let ids = g.index_input(ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[2, 3]), vec![0, 2, 1, 1, 3, 0]).unwrap());
    let x = g.input_named("x", common::uniform(&[2, 3, 4], 5, -1.0, 1.0));
    let e = {
        let mut g = g.scope("embedding");
        g.embedding(emb, ids)?
    };
    let mut h = g.zeros(&[3, 4]);
    for t in 0..2 {
        let mut g = g.step(t);
        let xt = g.select(x, 0, t)?;
        let et = g.select(e, 0, t)?;
        let s = g.add(xt, et)?;
        let s = g.add(s, h)?;
        h = g.tanh(s)?;
    }
    let logits = g.linear(h, w, None)?;
    let tgt = g.index_input(ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[3]), vec![1, 0, 2]).unwrap());
    let loss = g.cross_entropy(logits, tgt, Reduction::Mean)?;
    Ok((loss, x, ids, tgt))
}

fn store() -> ParamStore<f64> {
    let mut st = ParamStore::new();
    st.insert("fc.weight", common::uniform(&[3, 4], 1, -0.5, 0.5));
    st.insert("embedding.weight", common::uniform(&[4, 4], 2, -0.5, 0.5));
    st
}

#[test]
fn json_round_trip_and_rebuild() -> Result<()> {
    let st = store();
    let mut g = Graph::new();
    let (loss, x, ids, tgt) = model(&mut g, &st)?;
    let _ = g.param_grads(loss)?;
    let def = g.to_def();
    let json = def.to_json();
    let back = GraphDef::from_json(&json)?;
    assert_eq!(back, def);
    assert_eq!(back.to_json(), json, "serialization is deterministic");

    let mut h = Graph::<f64>::from_def(&back, &st)?;
    h.set_value(h.id(x.index()).unwrap(), g.value(x)?.to_owned())?;
    for i in [ids, tgt] {
        h.set_index_value(h.id(i.index()).unwrap(), g.index_value(i)?.clone())?;
    }
    h.replay()?;
    assert_eq!(h.len(), g.len());
    for id in g.ids() {
        let hid = h.id(id.index()).unwrap();
        if let Ok(v) = g.value(id) {
            assert_eq!(h.value(hid)?, v, "node {id}");
        }
    }
    assert_eq!(h.to_string(), g.to_string(), "same text form");
    Ok(())
}

#[test]
fn malformed_definitions_are_errors() {
    let st = store();
    let mut g = Graph::new();
    let _ = model(&mut g, &st).unwrap();
    let mut def = g.to_def();
    let last = def.nodes.len() - 1;
    def.nodes[last].inputs = vec![last];
    assert!(Graph::<f64>::from_def(&def, &st).unwrap_err().to_string().contains("which is not earlier"));
    let mut def = g.to_def();
    def.nodes[last].shape = vec![7];
    assert!(Graph::<f64>::from_def(&def, &st).unwrap_err().to_string().contains("does not produce shape [7]"));
    assert!(GraphDef::from_json("{\"nodes\": 3}").is_err());
    assert!(Graph::<f64>::from_def(&g.to_def(), &ParamStore::new()).is_err());
}
