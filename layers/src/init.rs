//! Parameter specs and seeded initializers: PyTorch's default, Xavier/Glorot,
//! orthogonal, identity for recurrent matrices (IRNN), and a forget-gate bias.

use ndarray::{Array2, ArrayD, IxDyn};
use unrolled_autograd::{Float, ParamStore, Rng};

/// What a parameter is for, so an initializer can treat it accordingly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A matrix applied to the input (`weight_ih`, `W`).
    InputWeight,
    /// A matrix applied to the previous state (`weight_hh`, `U`).
    RecurrentWeight,
    /// A bias.
    Bias,
    /// A diagonal peephole weight.
    Peephole,
    /// A convolution kernel.
    Kernel,
    /// An embedding table, drawn `N(0, 1)` as `nn.Embedding` does.
    Embedding,
}

/// A parameter a cell reads: its name, shape, role and gate layout.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    /// The name in the store.
    pub name: String,
    /// The shape.
    pub shape: Vec<usize>,
    /// The role.
    pub role: Role,
    /// The number of gate blocks stacked on axis 0 (4 for an LSTM's fused matrices).
    pub gates: usize,
    /// The hidden size `H` (PyTorch's default bound is `1/sqrt(H)`).
    pub hidden: usize,
    /// The block of the forget gate, for a forget-gate bias.
    pub forget_gate: Option<usize>,
}

impl ParamSpec {
    /// A spec.
    pub fn new(name: &str, shape: &[usize], role: Role, gates: usize, hidden: usize) -> Self {
        ParamSpec { name: name.to_owned(), shape: shape.to_vec(), role, gates, hidden, forget_gate: None }
    }
    /// With the forget gate's block index.
    pub fn forget(mut self, block: Option<usize>) -> Self {
        self.forget_gate = block;
        self
    }
}

/// How a weight matrix is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WeightInit {
    /// PyTorch's default for recurrent layers: `U(-1/sqrt(H), 1/sqrt(H))`.
    Torch,
    /// Glorot uniform: `U(-a, a)`, `a = sqrt(6 / (fan_in + fan_out))` per gate block.
    XavierUniform,
    /// Glorot normal: `N(0, 2 / (fan_in + fan_out))` per gate block.
    XavierNormal,
    /// An orthogonal matrix per gate block (as `torch.nn.init.orthogonal_`).
    Orthogonal,
    /// `scale · I` per gate block (IRNN, Le et al. 2015), for square blocks.
    Identity(f64),
}

/// An initialization scheme for every parameter of a model.
#[derive(Clone, Debug, PartialEq)]
pub struct Init {
    /// For input weights and kernels.
    pub input: WeightInit,
    /// For recurrent weights.
    pub recurrent: WeightInit,
    /// Biases drawn as PyTorch does (`true`) or zero (`false`).
    pub torch_bias: bool,
    /// A value for the forget gate's bias block (in `bias_ih`; `bias_hh`'s block is zeroed).
    pub forget_bias: Option<f64>,
    /// The seed.
    pub seed: u64,
}

impl Init {
    /// PyTorch's default: every weight and bias `U(-1/sqrt(H), 1/sqrt(H))`.
    pub fn torch(seed: u64) -> Self {
        Init { input: WeightInit::Torch, recurrent: WeightInit::Torch, torch_bias: true, forget_bias: None, seed }
    }
    /// Xavier-uniform input weights, orthogonal recurrent weights, zero biases, and a
    /// forget-gate bias of 1 (a common recipe for LSTMs).
    pub fn xavier_orthogonal(seed: u64) -> Self {
        Init {
            input: WeightInit::XavierUniform,
            recurrent: WeightInit::Orthogonal,
            torch_bias: false,
            forget_bias: Some(1.0),
            seed,
        }
    }
    /// IRNN: identity recurrent weights, zero biases, PyTorch-default input weights.
    pub fn irnn(seed: u64) -> Self {
        Init {
            input: WeightInit::Torch,
            recurrent: WeightInit::Identity(1.0),
            torch_bias: false,
            forget_bias: None,
            seed,
        }
    }
}

fn block(rng: &mut Rng, how: WeightInit, rows: usize, cols: usize, hidden: usize) -> Array2<f64> {
    match how {
        WeightInit::Torch => {
            let k = 1.0 / (hidden.max(1) as f64).sqrt();
            Array2::from_shape_fn((rows, cols), |_| rng.uniform_in(-k, k))
        }
        WeightInit::XavierUniform => {
            let a = (6.0 / (rows + cols).max(1) as f64).sqrt();
            Array2::from_shape_fn((rows, cols), |_| rng.uniform_in(-a, a))
        }
        WeightInit::XavierNormal => {
            let s = (2.0 / (rows + cols).max(1) as f64).sqrt();
            Array2::from_shape_fn((rows, cols), |_| s * rng.normal())
        }
        WeightInit::Orthogonal => orthogonal(rng, rows, cols),
        WeightInit::Identity(s) => Array2::from_shape_fn((rows, cols), |(i, j)| if i == j { s } else { 0.0 }),
    }
}

/// A `rows × cols` matrix with orthonormal rows or columns (whichever are fewer),
/// by Gram–Schmidt on a Gaussian matrix.
pub fn orthogonal(rng: &mut Rng, rows: usize, cols: usize) -> Array2<f64> {
    let (r, c) = if rows >= cols { (rows, cols) } else { (cols, rows) };
    let mut q = Array2::from_shape_fn((r, c), |_| rng.normal());
    for j in 0..c {
        for k in 0..j {
            let d = q.column(j).dot(&q.column(k));
            let qk = q.column(k).to_owned();
            q.column_mut(j).scaled_add(-d, &qk);
        }
        let n = q.column(j).dot(&q.column(j)).sqrt();
        if n > 0.0 {
            q.column_mut(j).mapv_inplace(|v| v / n);
        }
    }
    if rows >= cols {
        q
    } else {
        q.reversed_axes().as_standard_layout().into_owned()
    }
}

/// Draws every parameter of `specs` into `store`, replacing what is there.
pub fn init_params<T: Float>(specs: &[ParamSpec], store: &mut ParamStore<T>, init: &Init) {
    let mut rng = Rng::new(init.seed);
    for spec in specs {
        let n: usize = spec.shape.iter().product();
        let vals: Vec<f64> = match spec.role {
            Role::Bias | Role::Peephole => {
                let k = 1.0 / (spec.hidden.max(1) as f64).sqrt();
                let mut v: Vec<f64> =
                    (0..n).map(|_| if init.torch_bias { rng.uniform_in(-k, k) } else { 0.0 }).collect();
                let in_range = |f: usize| f < spec.gates.max(1) && n.is_multiple_of(spec.gates.max(1));
                if let (Some(fb), Some(f), Role::Bias) =
                    (init.forget_bias, spec.forget_gate.filter(|&f| in_range(f)), spec.role)
                {
                    let h = n / spec.gates.max(1);
                    let value = if spec.name.contains("bias_hh") { 0.0 } else { fb };
                    v[f * h..(f + 1) * h].iter_mut().for_each(|x| *x = value);
                }
                v
            }
            Role::Embedding => (0..n).map(|_| rng.normal()).collect(),
            Role::InputWeight | Role::RecurrentWeight | Role::Kernel => {
                let how = if spec.role == Role::RecurrentWeight { init.recurrent } else { init.input };
                let rows = spec.shape.first().copied().unwrap_or(1).max(1);
                let cols = n / rows;
                // A spec whose rows do not split into its gate blocks is drawn as one block.
                let gates = if rows % spec.gates.max(1) == 0 { spec.gates.max(1) } else { 1 };
                let rows_per = rows / gates;
                let mut v = Vec::with_capacity(n);
                for _ in 0..gates {
                    v.extend(block(&mut rng, how, rows_per, cols, spec.hidden).iter().copied());
                }
                v.resize(n, 0.0);
                v
            }
        };
        let arr =
            ArrayD::from_shape_vec(IxDyn(&spec.shape), vals.into_iter().map(T::of).collect()).expect("sized by spec");
        store.insert(spec.name.clone(), arr);
    }
}
