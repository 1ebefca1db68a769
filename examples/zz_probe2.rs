use std::time::Instant;
use unrolled::autograd::Graph;
use unrolled::ndarray::{ArrayD, IxDyn};
fn main() -> unrolled::autograd::Result<()> {
    for &(b, h) in &[(32usize, 128usize), (64, 512), (32, 256)] {
        let mut g = Graph::<f32>::new();
        let xp = g.input(ArrayD::from_elem(IxDyn(&[b, 4 * h]), 0.1));
        let hh = g.input(ArrayD::from_elem(IxDyn(&[b, 4 * h]), 0.2));
        let c = g.input(ArrayD::from_elem(IxDyn(&[b, h]), 0.3));
        let _o = g.lstm_cell(xp, hh, c)?;
        let n = 2000;
        for _ in 0..10 {
            g.replay()?;
        }
        let t0 = Instant::now();
        for _ in 0..n {
            g.replay()?;
        }
        let us = t0.elapsed().as_secs_f64() / n as f64 * 1e6;
        println!("B={b} H={h}: {us:.1} us per lstm_cell, {:.2} ns per gate element", us * 1e3 / (b * 4 * h) as f64);
    }
    Ok(())
}
