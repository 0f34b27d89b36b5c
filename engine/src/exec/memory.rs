//! Buffer planning: every value a kernel writes gets one of a few reusable
//! buffers, chosen so values alive at the same time never share one (a greedy
//! best-fit over value lifetimes, like a register allocator). Views (Reshape,
//! Identity, ...) share their input's buffer and extend its lifetime.

/// Where each value's bytes live and when buffers return to the pool.
#[derive(Debug, Default)]
pub(super) struct BufferPlan {
    /// Buffer of each value (None: constants, model inputs, values `eval` allocates).
    pub buffer_of: Vec<Option<usize>>,
    /// Largest byte size each buffer must hold.
    pub sizes: Vec<usize>,
    /// Per step: (value, buffer) pairs whose buffer is free after the step (the
    /// value is the last alias alive; its tensor goes back to the pool).
    pub release: Vec<Vec<(usize, usize)>>,
}

/// What the planner needs to know about one step.
pub(super) struct StepInfo<'a> {
    pub inputs: &'a [Option<usize>],
    pub outputs: &'a [usize],
    /// Byte sizes of the outputs if a kernel writes them into planned buffers.
    pub kernel_outputs: Option<Vec<usize>>,
    pub is_view: bool,
}

/// `last_use[v]`: the last step reading or producing `v` (`usize::MAX` keeps it
/// alive past the run, for model outputs).
pub(super) fn plan_buffers(n_values: usize, steps: &[StepInfo<'_>], last_use: &[usize]) -> BufferPlan {
    let mut p =
        BufferPlan { buffer_of: vec![None; n_values], release: vec![Vec::new(); steps.len()], ..Default::default() };
    // Per buffer: (step after which it is free, the alias alive longest).
    let mut end: Vec<(usize, usize)> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    for (si, st) in steps.iter().enumerate() {
        for (oi, &o) in st.outputs.iter().enumerate() {
            if st.is_view && oi == 0 {
                if let Some(b) = st.inputs.first().copied().flatten().and_then(|i| p.buffer_of[i]) {
                    p.buffer_of[o] = Some(b);
                    if last_use[o] > end[b].0 {
                        end[b] = (last_use[o], o);
                    }
                }
                continue;
            }
            let Some(sizes) = &st.kernel_outputs else { continue };
            let need = sizes[oi];
            // Best fit among free buffers; else grow the largest; else a new one.
            let pick = free
                .iter()
                .enumerate()
                .filter(|(_, &b)| p.sizes[b] >= need)
                .min_by_key(|(_, &b)| p.sizes[b])
                .or_else(|| free.iter().enumerate().max_by_key(|(_, &b)| p.sizes[b]))
                .map(|(i, _)| i);
            let b = match pick {
                Some(i) => free.swap_remove(i),
                None => {
                    p.sizes.push(0);
                    end.push((0, o));
                    p.sizes.len() - 1
                }
            };
            p.sizes[b] = p.sizes[b].max(need);
            end[b] = (last_use[o], o);
            p.buffer_of[o] = Some(b);
        }
        for (b, &(e, v)) in end.iter().enumerate() {
            if e == si && p.buffer_of[v] == Some(b) && !free.contains(&b) {
                p.release[si].push((v, b));
                free.push(b);
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step<'a>(inputs: &'a [Option<usize>], outputs: &'a [usize], size: usize, is_view: bool) -> StepInfo<'a> {
        StepInfo { inputs, outputs, kernel_outputs: (!is_view).then(|| vec![size]), is_view }
    }

    #[test]
    fn values_alive_together_never_share_a_buffer_and_dead_ones_are_reused() {
        // v0 (input) -> s0 -> v1 -> s1 -> v2 -> s2(view) -> v3 -> s3 -> v4 (output)
        //                       \-------------------------------/ (v1 read again by s3)
        let (i0, i1, i2, i3) = ([Some(0)], [Some(1)], [Some(2)], [Some(3), Some(1)]);
        let steps = [
            step(&i0, &[1], 100, false),
            step(&i1, &[2], 100, false),
            step(&i2, &[3], 0, true),
            step(&i3, &[4], 50, false),
        ];
        let last_use = [0, 3, 2, 3, usize::MAX];
        let p = plan_buffers(5, &steps, &last_use);
        let (b1, b2, b3, b4) = (p.buffer_of[1], p.buffer_of[2], p.buffer_of[3], p.buffer_of[4]);
        assert_eq!(p.buffer_of[0], None, "model inputs are not planned");
        assert_eq!(b3, b2, "a view shares its input's buffer");
        assert_ne!(b1, b2);
        assert!(b4 != b1 && b4 != b2, "v4 is written while v1 and v3 are read");
        assert_eq!(p.release[3].len(), 2, "v1's and v2/v3's buffers are free after the last step");
        assert!(p.release[2].is_empty(), "the view extended v2's buffer");
        // A later value reuses a freed buffer of the right size.
        let steps2 = [step(&i0, &[1], 64, false), step(&i1, &[2], 64, false), step(&i2, &[3], 32, false)];
        let p2 = plan_buffers(4, &steps2, &[0, 1, 2, usize::MAX]);
        assert_eq!(p2.buffer_of[3], p2.buffer_of[1], "v1 is dead when v3 is written");
        assert_eq!(p2.sizes.len(), 2);
    }
}
