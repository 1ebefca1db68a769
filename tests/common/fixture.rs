//! Reading the reference fixtures (`tests/fixtures/*.json`, format in its README.md)
//! and comparing results against them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::{ArrayBase, ArrayD, Data, IxDyn};
use serde::Deserialize;
use serde_json::Value as Json;

/// A tensor as the fixtures store it: shape, dtype, row-major data.
#[derive(Clone, Debug, Deserialize)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub dtype: String,
    pub data: Vec<f64>,
}

impl Tensor {
    pub fn f64(&self) -> ArrayD<f64> {
        ArrayD::from_shape_vec(IxDyn(&self.shape), self.data.clone()).expect("fixture tensor is consistent")
    }
    pub fn i64(&self) -> ArrayD<i64> {
        ArrayD::from_shape_vec(IxDyn(&self.shape), self.data.iter().map(|&v| v as i64).collect()).expect("consistent")
    }
    pub fn is_float(&self) -> bool {
        self.dtype == "float64"
    }
}

/// One case file.
#[derive(Clone, Debug, Deserialize)]
pub struct Fixture {
    pub case: String,
    pub name: String,
    #[serde(default)]
    pub config: BTreeMap<String, Json>,
    #[serde(default)]
    pub params: BTreeMap<String, Tensor>,
    #[serde(default)]
    pub inputs: BTreeMap<String, Tensor>,
    #[serde(default)]
    pub loss_inputs: BTreeMap<String, Tensor>,
    pub expected: Json,
    #[serde(skip)]
    pub path: PathBuf,
}

impl Fixture {
    pub fn load(path: &Path) -> Result<Fixture, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut f: Fixture = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        f.path = path.to_path_buf();
        Ok(f)
    }

    pub fn usize(&self, key: &str) -> Result<usize, String> {
        self.config.get(key).and_then(Json::as_u64).map(|v| v as usize).ok_or_else(|| format!("config.{key} missing"))
    }
    pub fn f64(&self, key: &str) -> Result<f64, String> {
        self.config.get(key).and_then(Json::as_f64).ok_or_else(|| format!("config.{key} missing"))
    }
    pub fn str(&self, key: &str) -> Result<&str, String> {
        self.config.get(key).and_then(Json::as_str).ok_or_else(|| format!("config.{key} missing"))
    }
    pub fn bool(&self, key: &str) -> Result<bool, String> {
        self.config.get(key).and_then(Json::as_bool).ok_or_else(|| format!("config.{key} missing"))
    }

    pub fn param(&self, name: &str) -> Result<&Tensor, String> {
        self.params.get(name).ok_or_else(|| format!("params.{name} missing"))
    }
    pub fn input(&self, name: &str) -> Result<&Tensor, String> {
        self.inputs.get(name).ok_or_else(|| format!("inputs.{name} missing"))
    }
    pub fn loss_input(&self, name: &str) -> Result<&Tensor, String> {
        self.loss_inputs.get(name).ok_or_else(|| format!("loss_inputs.{name} missing"))
    }

    /// `expected.<section>.<name>` as a tensor.
    pub fn expected_tensor(&self, section: &str, name: &str) -> Result<Tensor, String> {
        let v = self
            .expected
            .get(section)
            .and_then(|s| s.get(name))
            .ok_or_else(|| format!("expected.{section}.{name} missing"))?;
        serde_json::from_value(v.clone()).map_err(|e| format!("expected.{section}.{name}: {e}"))
    }
    /// `expected.<key>` as a tensor.
    pub fn expected_tensor_at(&self, key: &str) -> Result<Tensor, String> {
        let v = self.expected.get(key).ok_or_else(|| format!("expected.{key} missing"))?;
        serde_json::from_value(v.clone()).map_err(|e| format!("expected.{key}: {e}"))
    }
    /// The names in `expected.<section>`, sorted.
    pub fn expected_names(&self, section: &str) -> Vec<String> {
        self.expected.get(section).and_then(Json::as_object).map(|m| m.keys().cloned().collect()).unwrap_or_default()
    }
    pub fn expected_number(&self, key: &str) -> Result<f64, String> {
        self.expected.get(key).and_then(Json::as_f64).ok_or_else(|| format!("expected.{key} missing"))
    }
}

/// Accumulates comparisons: the largest relative error seen and every mismatch.
pub struct Compare {
    pub tol: f64,
    pub max_rel: f64,
    pub checked: usize,
    pub failures: Vec<String>,
}

impl Compare {
    pub fn new(tol: f64) -> Self {
        Compare { tol, max_rel: 0.0, checked: 0, failures: Vec::new() }
    }

    /// Compares element by element: |a - e| <= tol * max(1, |e|).
    pub fn tensor<S: Data<Elem = f64>>(&mut self, what: &str, actual: &ArrayBase<S, IxDyn>, expected: &Tensor) {
        if actual.shape() != &expected.shape[..] {
            self.failures.push(format!("{what}: shape {:?}, expected {:?}", actual.shape(), expected.shape));
            return;
        }
        let mut bad = 0;
        for ((k, &a), &e) in actual.iter().enumerate().zip(&expected.data) {
            let r = super::rel_err(a, e);
            self.checked += 1;
            if r > self.max_rel || r.is_nan() {
                self.max_rel = if r.is_nan() { f64::INFINITY } else { r };
            }
            let within = r <= self.tol; // false for NaN
            if !within {
                bad += 1;
                if bad <= 3 {
                    self.failures.push(format!("{what}[{k}]: {a} vs expected {e} (rel err {r:e})"));
                }
            }
        }
        if bad > 3 {
            self.failures.push(format!("{what}: {bad} elements outside {:e} in all", self.tol));
        }
    }

    pub fn number(&mut self, what: &str, actual: f64, expected: f64) {
        let a = ArrayD::from_elem(IxDyn(&[]), actual);
        self.tensor(what, &a, &Tensor { shape: vec![], dtype: "float64".into(), data: vec![expected] });
    }

    pub fn fail(&mut self, msg: String) {
        self.failures.push(msg);
    }
}
