//! Checkpoints: parameters, optimizer state and step count, as safetensors (the
//! tensors under PyTorch's names, so a `state_dict` saved by PyTorch loads by name)
//! or as JSON. Every save writes a temporary file beside the target, syncs it and
//! renames it over the target, so a crash mid-save never corrupts the last good
//! checkpoint.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use unrolled_autograd::{DType, Error, Float, ParamStore, Result};

use super::optim::AnyOptimizer;
use crate::init::ParamSpec;

fn io(op: &'static str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io { op, path: path.display().to_string(), reason: e.to_string() }
}

fn parse(e: impl std::fmt::Display) -> Error {
    Error::Parse { what: "checkpoint", reason: e.to_string() }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory,
/// flushed and synced, then renamed over `path`.
///
/// # Errors
/// [`Error::Io`] if any step fails; `path` is then untouched.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| io("save", path, "not a file name"))?;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let unique = format!(
        "{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())
    );
    let tmp = dir.join(format!(".{}.tmp-{unique}", name.to_string_lossy()));
    let result = (|| -> std::io::Result<()> {
        // create_new: never reuse (or follow a link at) another writer's temporary file.
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("save", path, e));
    }
    Ok(())
}

/// Saves parameters as safetensors in the element type `T` (`F32` or `F64`), with
/// `metadata` (`{"format": "pt"}` is added, as PyTorch writes it).
///
/// # Errors
/// [`Error::Io`] if the file cannot be written.
pub fn save_safetensors<T: Float>(
    path: &Path,
    params: &ParamStore<T>,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let dtype = if T::DTYPE == DType::F64 { Dtype::F64 } else { Dtype::F32 };
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = params
        .iter()
        .map(|(n, a)| {
            let data = a
                .iter()
                .flat_map(|&x| {
                    if dtype == Dtype::F64 {
                        x.f64().to_le_bytes().to_vec()
                    } else {
                        (x.f64() as f32).to_le_bytes().to_vec()
                    }
                })
                .collect();
            (n.to_owned(), data, a.shape().to_vec())
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(n, d, s)| safetensors::tensor::TensorView::new(dtype, s.clone(), d).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(parse)?;
    let mut meta: HashMap<String, String> = metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    meta.entry("format".into()).or_insert_with(|| "pt".into());
    let buf = safetensors::serialize(views, Some(meta)).map_err(parse)?;
    write_atomically(path, &buf)
}

/// Loads every tensor of a safetensors file by name, widening or narrowing `F32`
/// and `F64` to `T`; also returns the file's metadata (`__metadata__`).
///
/// # Errors
/// [`Error::Io`] if the file cannot be read; [`Error::Parse`] for a truncated or
/// corrupted file or a tensor that is not `F32`/`F64`.
pub fn load_safetensors<T: Float>(path: &Path) -> Result<(ParamStore<T>, BTreeMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| io("load", path, e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::Parse { what: "safetensors file", reason: format!("{}: {e}", path.display()) })?;
    let mut store = ParamStore::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let vals: Vec<T> = match view.dtype() {
            Dtype::F32 => {
                data.chunks_exact(4).map(|c| T::of(f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)).collect()
            }
            Dtype::F64 => {
                data.chunks_exact(8).map(|c| T::of(f64::from_le_bytes(c.try_into().expect("8 bytes")))).collect()
            }
            other => {
                return Err(Error::Parse {
                    what: "safetensors file",
                    reason: format!("tensor `{name}` has dtype {other:?}; F32 or F64 expected"),
                })
            }
        };
        let arr =
            ArrayD::from_shape_vec(IxDyn(view.shape()), vals).map_err(|e| parse(format!("tensor `{name}`: {e}")))?;
        store.insert(name, arr);
    }
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(parse)?;
    let metadata = meta.metadata().clone().map(|m| m.into_iter().collect()).unwrap_or_default();
    Ok((store, metadata))
}

/// Copies the tensors a module needs from a loaded `state_dict`, by name, after
/// checking every name and shape, as PyTorch's strict `load_state_dict`: names the
/// module needs but the file lacks, names the file has that the module does not
/// use (when `strict`), and shape mismatches are errors, and nothing is copied.
///
/// # Errors
/// [`Error::UnknownParam`] for a missing name; [`Error::ShapeMismatch`] (lhs the
/// module's shape); [`Error::InvalidInput`] for unexpected names under `strict`.
pub fn load_state_dict<T: Float>(
    store: &mut ParamStore<T>,
    specs: &[ParamSpec],
    loaded: &ParamStore<T>,
    strict: bool,
) -> Result<()> {
    for s in specs {
        let v =
            loaded.get(&s.name).ok_or_else(|| Error::UnknownParam { op: "load_state_dict", name: s.name.clone() })?;
        if v.shape() != &s.shape[..] {
            return Err(Error::ShapeMismatch {
                op: "load_state_dict",
                scope: s.name.clone(),
                lhs: s.shape.clone(),
                rhs: v.shape().to_vec(),
            });
        }
    }
    if strict {
        let unexpected: Vec<&str> = loaded.names().filter(|n| !specs.iter().any(|s| s.name == *n)).collect();
        if !unexpected.is_empty() {
            return Err(Error::InvalidInput {
                op: "load_state_dict",
                scope: String::new(),
                reason: format!("unexpected names in the state dict: {}", unexpected.join(", ")),
                shapes: Vec::new(),
            });
        }
    }
    for s in specs {
        store.insert(s.name.clone(), loaded.get(&s.name).expect("checked above").clone());
    }
    Ok(())
}

/// What a training run saves: parameters, optimizer state, the step count, and
/// free-form metadata (model settings, vocabulary).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(bound(serialize = "T: Float", deserialize = "T: Float"))]
pub struct Checkpoint<T> {
    /// Optimizer steps taken.
    pub step: u64,
    /// The parameters.
    pub params: ParamStore<T>,
    /// The optimizer and its state.
    pub optimizer: Option<AnyOptimizer<T>>,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
}

impl<T: Float> Checkpoint<T> {
    /// Saves atomically: as safetensors if `path` ends in `.safetensors` (the
    /// parameters as tensors; step, optimizer state and metadata in the header's
    /// metadata), else as JSON.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be written; the previous file is untouched.
    pub fn save(&self, path: &Path) -> Result<()> {
        // A checkpoint that could not be read back is never written over a good one.
        let bad = self.params.iter().find(|(_, a)| a.iter().any(|x| !x.f64().is_finite())).map(|(n, _)| n.to_owned());
        let bad_opt = match &self.optimizer {
            Some(o) => serde_json::to_string(o).map_err(parse)?.contains("null"),
            None => false,
        };
        if bad.is_some() || bad_opt {
            return Err(Error::InvalidInput {
                op: "save",
                scope: path.display().to_string(),
                reason: format!("non-finite values in {}", bad.unwrap_or_else(|| "the optimizer state".into())),
                shapes: Vec::new(),
            });
        }
        if path.extension().is_some_and(|e| e == "safetensors") {
            let mut meta = self.metadata.clone();
            meta.insert("step".into(), self.step.to_string());
            if let Some(o) = &self.optimizer {
                meta.insert("optimizer".into(), serde_json::to_string(o).map_err(parse)?);
            }
            save_safetensors(path, &self.params, &meta)
        } else {
            let text = serde_json::to_vec(self).map_err(parse)?;
            write_atomically(path, &text)
        }
    }

    /// Loads a checkpoint written by [`Checkpoint::save`] (or any safetensors
    /// `state_dict`: step 0, no optimizer).
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::Parse`] for a truncated, corrupted or foreign file.
    pub fn load(path: &Path) -> Result<Self> {
        if path.extension().is_some_and(|e| e == "safetensors") {
            let (params, mut metadata) = load_safetensors(path)?;
            let step = metadata.remove("step").map(|s| s.parse::<u64>().map_err(parse)).transpose()?.unwrap_or(0);
            let optimizer =
                metadata.remove("optimizer").map(|s| serde_json::from_str(&s).map_err(parse)).transpose()?;
            Ok(Checkpoint { step, params, optimizer, metadata })
        } else {
            let bytes = std::fs::read(path).map_err(|e| io("load", path, e))?;
            serde_json::from_slice(&bytes)
                .map_err(|e| Error::Parse { what: "checkpoint", reason: format!("{}: {e}", path.display()) })
        }
    }
}
