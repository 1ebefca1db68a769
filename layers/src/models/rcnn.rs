//! The recurrent convolutional network (RCNN, Liang & Hu 2015): RCL blocks with
//! max pooling between them, global max pooling, and a linear classifier.

use unrolled_autograd::{Float, Graph, NodeId, ParamStore, Result};

use crate::cells::Rcl;
use crate::init::{init_params, Init, ParamSpec, Role};

/// RCL blocks (`rcl{i}.w_ff`, `rcl{i}.w_rec`, `rcl{i}.b`), 2×2 max pooling between
/// blocks, global max pooling and `fc.weight [classes, C]`, `fc.bias [classes]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rcnn {
    /// The blocks, input first.
    pub blocks: Vec<Rcl>,
    /// The number of classes.
    pub classes: usize,
}

impl Rcnn {
    /// Blocks of `channels[i]` channels each (3×3 kernels, `iterations` each) on
    /// `in_channels` input channels.
    pub fn new(in_channels: usize, channels: &[usize], iterations: usize, classes: usize) -> Self {
        let mut c_in = in_channels;
        let blocks = channels
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let b = Rcl::new(&format!("rcl{i}."), c_in, c, 3, iterations);
                c_in = c;
                b
            })
            .collect();
        Rcnn { blocks, classes }
    }

    /// Every parameter's spec.
    pub fn params(&self) -> Vec<ParamSpec> {
        let c = self.blocks.last().map_or(0, |b| b.out_channels);
        let mut specs: Vec<ParamSpec> = self.blocks.iter().flat_map(Rcl::params).collect();
        specs.push(ParamSpec::new("fc.weight", &[self.classes, c], Role::InputWeight, 1, c));
        specs.push(ParamSpec::new("fc.bias", &[self.classes], Role::Bias, 1, c));
        specs
    }

    /// Draws every parameter as PyTorch's defaults would.
    pub fn init_params<T: Float>(&self, store: &mut ParamStore<T>, seed: u64) {
        init_params(&self.params(), store, &Init::torch(seed));
    }

    /// Logits `[B, classes]` for images `u [B, C, H, W]` (`H`, `W` divisible by
    /// `2^(blocks-1)`). With `recurrent` off, each block runs as its feed-forward
    /// twin ([`Rcl::feed_forward`]): the same parameters, no recurrence.
    ///
    /// # Errors
    /// The graph's errors for images of the wrong shape.
    pub fn forward<T: Float>(&self, g: &mut Graph<T>, p: &ParamStore<T>, u: NodeId, recurrent: bool) -> Result<NodeId> {
        let mut x = u;
        for (i, block) in self.blocks.iter().enumerate() {
            let mut g = g.scope(&format!("rcl{i}"));
            x = if recurrent { block.forward(&mut g, p, x)?.last() } else { block.feed_forward(&mut g, p, x)? };
            if i + 1 < self.blocks.len() {
                x = g.max_pool2d(x, 2)?;
            }
        }
        let pooled = g.max(x, &[2, 3], false)?;
        let w = g.param(p, "fc.weight")?;
        let b = g.param(p, "fc.bias")?;
        g.linear(pooled, w, Some(b))
    }
}
