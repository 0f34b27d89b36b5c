//! Causal depthwise 1-D convolution with a carried state, for one channel at a time.
//!
//! `out[t] = bias + Σ_j w[j] · p[t + j]` over the padded sequence `p = past ++ x`
//! (`past` holds the `k - 1` values before `x`), optionally followed by SiLU; the
//! state left behind is the last `k - 1` values of `p`. Every output reads the same
//! values in the same order whether the sequence arrives whole or in pieces, so
//! streaming is bit-exact.
//!
//! Reference: ONNX `CausalConvWithState`-27 and onnx/reference/ops/
//! op_causal_conv_with_state.py (used by Mamba and Gated DeltaNet).

/// Computes one channel. `x` is `[L]`, `w` is `[k]`; `state` (`[k - 1]`) enters as the
/// past and leaves as the present; `out` is `[L]`.
pub fn causal_conv_channel(x: &[f32], w: &[f32], bias: f32, silu: bool, state: &mut [f32], out: &mut [f32]) {
    let k = w.len();
    assert!(k >= 1 && state.len() == k - 1 && out.len() == x.len(), "causal_conv_channel: bad lengths");
    let n = x.len();
    let at = |i: usize, state: &[f32]| if i < k - 1 { state[i] } else { x[i - (k - 1)] };
    for (t, o) in out.iter_mut().enumerate() {
        let mut acc = bias;
        for (j, &wj) in w.iter().enumerate() {
            acc += wj * at(t + j, state);
        }
        *o = if silu { acc / (1.0 + (-acc).exp()) } else { acc };
    }
    // The last k - 1 values of past ++ x.
    let new: Vec<f32> = (n..n + k - 1).map(|i| at(i, state)).collect();
    state.copy_from_slice(&new);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_tap_filter_reads_the_past_and_keeps_the_tail() {
        let mut state = vec![1.0, 2.0];
        let mut out = vec![0.0; 2];
        causal_conv_channel(&[3.0, 4.0], &[1.0, 10.0, 100.0], 0.5, false, &mut state, &mut out);
        assert_eq!(out, [1.0 + 20.0 + 300.0 + 0.5, 2.0 + 30.0 + 400.0 + 0.5]);
        assert_eq!(state, [3.0, 4.0]);
    }

    #[test]
    fn input_shorter_than_the_state_shifts_it() {
        let mut state = vec![1.0, 2.0, 3.0];
        let mut out = vec![0.0; 1];
        causal_conv_channel(&[4.0], &[0.0, 0.0, 0.0, 1.0], 0.0, false, &mut state, &mut out);
        assert_eq!(out, [4.0]);
        assert_eq!(state, [2.0, 3.0, 4.0]);
    }
}
