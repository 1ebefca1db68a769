//! Interpretable cells: text properties, correlation ranking, the HTML page and
//! recorded activations, with exact expectations.

use ndarray::Array2;
use unrolled::autograd::{Graph, ParamStore, Result};
use unrolled::layers::interpret::{
    activation_html, correlation, rank_cells, record_activations, report, text_properties,
};
use unrolled::layers::{CellKind, CharRnn, RunOptions};
use unrolled::ndarray::{ArrayD, Axis, IxDyn};

fn prop(text: &str, name: &str) -> Vec<f64> {
    text_properties(text).into_iter().find(|p| p.name == name).unwrap().values
}

#[test]
fn properties_of_a_line_of_code() {
    let text = "f(\"a)\\\"b\", x[1]) // c\"\n/* d */{";
    let chars: Vec<char> = text.chars().collect();
    let ones = |v: &[f64]| -> String { chars.iter().zip(v).filter(|(_, &x)| x == 1.0).map(|(c, _)| *c).collect() };
    assert_eq!(ones(&prop(text, "inside quotes")), "a)\\\"b");
    assert_eq!(ones(&prop(text, "inside a comment")), "// c\"/* d */");
    let col = prop(text, "position in line");
    let nl = text.find('\n').unwrap();
    assert_eq!(col[nl - 1], (nl - 1) as f64);
    assert_eq!(col[nl + 1], 0.0);
    let depth = prop(text, "nesting depth");
    // f=0 (=1 "..."=1 (the bracket inside the string is ignored) x[=2 1=2 ]=1 )=0; `{` at the end opens 1.
    let want = |i: usize| depth[text.char_indices().position(|(j, _)| j == i).unwrap()];
    assert_eq!(want(text.find('f').unwrap()), 0.0);
    assert_eq!(want(text.find('x').unwrap()), 1.0);
    assert_eq!(want(text.find('1').unwrap()), 2.0);
    assert_eq!(*depth.last().unwrap(), 1.0);
    assert_eq!(depth[text.find(" //").unwrap()], 0.0);
    assert!(text_properties("").iter().all(|p| p.values.is_empty()));
    // A character literal holding a quote opens no string; `/*/` does not close its comment.
    let text = "if c == '\"' || d == '\\\"' { x } /*/ y */ z";
    let chars: Vec<char> = text.chars().collect();
    let ones = |v: &[f64]| -> String { chars.iter().zip(v).filter(|(_, &x)| x == 1.0).map(|(c, _)| *c).collect() };
    assert_eq!(ones(&prop(text, "inside quotes")), "");
    assert_eq!(ones(&prop(text, "inside a comment")), "/*/ y */");
    assert_eq!(prop(text, "nesting depth")[text.find('x').unwrap()], 1.0);
}

#[test]
fn correlation_and_ranking() -> Result<()> {
    assert!((correlation(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]) - 1.0).abs() < 1e-15);
    assert!((correlation(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-15);
    assert_eq!(correlation(&[1.0, 1.0], &[1.0, 2.0]), 0.0);
    assert_eq!(correlation(&[1.0], &[1.0, 2.0]), 0.0);
    let p = vec![0.0, 1.0, 0.0, 1.0, 1.0, 0.0];
    // Cell 0: noise-free anti-correlated; cell 1: constant; cell 2: half right.
    let acts = Array2::from_shape_fn((6, 3), |(t, k)| match k {
        0 => -2.0 * p[t] + 1.0,
        1 => 0.3,
        _ => [0.0, 1.0, 1.0, 1.0, 0.0, 0.0][t],
    });
    let top = rank_cells(&acts, &p, 3)?;
    assert_eq!(top.iter().map(|s| s.cell).collect::<Vec<_>>(), vec![0, 2, 1]);
    assert!((top[0].correlation + 1.0).abs() < 1e-15);
    assert_eq!(top[2].correlation, 0.0);
    // "ab\"c\"": only `c` is inside quotes, and cell 2 is high exactly there.
    let props = text_properties("ab\"c\"");
    let acts5 = Array2::from_shape_fn((5, 3), |(t, k)| match k {
        0 => t as f64,
        1 => 0.3,
        _ => (t == 3) as u8 as f64,
    });
    let r = report("l0 c", &acts5, &props, 2)?;
    assert_eq!(
        r.iter().map(|x| x.property.as_str()).collect::<Vec<_>>(),
        props.iter().map(|p| p.name.as_str()).collect::<Vec<_>>()
    );
    assert_eq!((r[0].top[0].cell, r[0].top[0].correlation), (2, 1.0));
    assert_eq!(r[2].top[0].cell, 0, "cell 0 is the position in the line");
    assert!((r[2].top[0].correlation - 1.0).abs() < 1e-15);
    assert!(matches!(rank_cells(&acts5, &[1.0], 1), Err(unrolled::autograd::Error::ShapeMismatch { .. })));
    // A diverged cell correlates with nothing.
    assert_eq!(correlation(&[1.0, f64::NAN, 3.0], &[1.0, 2.0, 3.0]), 0.0);
    assert_eq!(correlation(&[1.0, f64::INFINITY, 3.0], &[1.0, 2.0, 3.0]), 0.0);
    Ok(())
}

#[test]
fn html_colours_each_character() {
    let page = activation_html("t <1>", "x\n<&", &[("cell 0", vec![1.0, -0.5, 0.25])]);
    assert!(page.starts_with("<!DOCTYPE html>") && page.contains("<title>t &lt;1&gt;</title>"));
    assert!(page.contains("rgba(220,50,40,1.000)\" title=\"1.0000\">x</span>"), "{page}");
    assert!(page.contains("rgba(40,90,220,0.500)\" title=\"-0.5000\">\u{21b5}</span>\n"), "{page}");
    assert!(page.contains("rgba(220,50,40,0.250)\" title=\"0.2500\">&lt;</span>&amp;</pre>"), "{page}");
}

#[test]
fn recorded_activations_equal_one_unchunked_forward_pass() -> Result<()> {
    for kind in [CellKind::Lstm, CellKind::Gru] {
        let model = CharRnn::new(kind, 7, 3, 5, 2);
        let mut p = ParamStore::<f64>::new();
        model.init_params(&mut p, 3);
        let tokens: Vec<i64> = (0..23).map(|i| (i * 5 % 7) as i64).collect();
        let acts = record_activations(&model, &p, &tokens, 4)?;
        assert_eq!(acts.h.len(), 2);
        assert_eq!(acts.c.len(), if kind == CellKind::Lstm { 2 } else { 0 });
        let mut g = Graph::<f64>::new();
        let tok = g.index_input(ArrayD::from_shape_vec(IxDyn(&[23, 1]), tokens.clone()).unwrap());
        let out = model.forward(&mut g, &p, tok, None, RunOptions::default())?;
        for (l, layer) in out.rnn.detail.layers.iter().enumerate() {
            for (t, s) in layer.fwd.states.iter().enumerate() {
                for (k, m) in [&acts.h, &acts.c].iter().enumerate().take(s.parts().len()) {
                    let v = g.value(s.parts()[k])?.index_axis(Axis(0), 0).to_owned();
                    let row = m[l].row(t);
                    assert!(v.iter().zip(row.iter()).all(|(a, b)| (a - b).abs() < 1e-12), "{kind:?} l{l} t{t}");
                }
            }
        }
        assert!(record_activations(&model, &p, &[], 4).is_err());
        assert!(record_activations(&model, &p, &tokens, 0).is_err());
        assert!(record_activations(&model, &p, &[9], 4).is_err(), "an out-of-range token is an error");
    }
    Ok(())
}
