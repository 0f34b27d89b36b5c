//! [`StreamSession`]: pushes chunks of frames through a model, carrying state.

use super::frames;
use super::rewrite::{step_graph, StepGraph, StreamOptions, KV_CAPACITY};
use super::{analyze, Analysis};
use crate::error::{Error, Result};
use crate::exec::{Bindings, Plan, Session, SessionOptions};
use crate::graph::Graph;
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::sync::Arc;

/// How a model is streamed.
#[derive(Clone, Debug)]
pub enum StreamMode {
    /// Per-op state (the model must be streamable).
    Stateful(StreamOptions),
    /// Re-run the whole model on the last `N` frames at every push (any model;
    /// the window starts as zeros).
    Windowed(usize),
}

impl std::str::FromStr for StreamMode {
    type Err = String;
    /// `stateful` or `windowed:N`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.split_once(':') {
            None if s == "stateful" => Ok(StreamMode::Stateful(StreamOptions::default())),
            Some(("windowed", n)) => match n.parse::<usize>() {
                Ok(n) if n > 0 => Ok(StreamMode::Windowed(n)),
                _ => Err(format!("windowed:N needs a positive frame count, got '{n}'")),
            },
            _ => Err(format!("unknown stream mode '{s}' (expected 'stateful' or 'windowed:N')")),
        }
    }
}

/// Everything a stream needs besides the graph.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// The symbolic dim that is time (e.g. `T`).
    pub symbol: String,
    pub mode: StreamMode,
    /// Values of the model's other symbolic dims (batch, ...).
    pub bindings: Bindings,
    pub session: SessionOptions,
}

/// Runs a model on a stream of chunks: `push` takes any number of frames >= 1
/// of every time-carrying input and returns the outputs for those frames.
///
/// In stateful mode each output frame is the whole-sequence output of the
/// frame [`output_delays`](Self::output_delays) earlier (look-ahead
/// convolutions need that many future frames); the first `delay` frames of an
/// output are warm-up. After the first push of a given chunk length, a push
/// allocates nothing.
pub struct StreamSession {
    engine: Engine,
    analysis: Analysis,
    bindings: Bindings,
    options: SessionOptions,
    /// One session per (chunk length, KV capacity).
    sessions: HashMap<(usize, usize), Session>,
    feed: Vec<Tensor>,
    frame: usize,
    /// Outputs of a push split into pieces (warm-up boundaries, long chunks).
    joined: Vec<Tensor>,
    input_axes: Vec<Option<usize>>,
    output_axes: Vec<Option<usize>>,
    output_names: Vec<String>,
}

enum Engine {
    Stateful(Stateful),
    Windowed(Windowed),
}

struct Stateful {
    step: Arc<StepGraph>,
    /// Names of the mask inputs (their shapes are bound per plan).
    mask_names: Arc<[String]>,
    states: Vec<Tensor>,
    masks: Vec<Tensor>,
    /// Per mask: cached positions written so far.
    filled: Vec<usize>,
    capacity: usize,
}

struct Windowed {
    graph: Arc<Graph>,
    len: usize,
    windows: Vec<Option<Tensor>>,
}

impl StreamSession {
    /// Analyses `graph` for streaming along `config.symbol` and prepares the
    /// stream. Stateful mode fails, naming every blocking node, when the model
    /// needs all of time at once.
    pub fn new(graph: &Graph, config: StreamConfig) -> Result<StreamSession> {
        let analysis = analyze(graph, &config.symbol, &config.bindings)?;
        let output_names = graph.outputs.iter().map(|&o| graph.values[o].name.clone()).collect();
        let input_axes: Vec<Option<usize>> = graph.inputs.iter().map(|&i| analysis.time_axis[i]).collect();
        let output_axes: Vec<Option<usize>> = graph.outputs.iter().map(|&o| analysis.time_axis[o]).collect();
        let engine = match &config.mode {
            StreamMode::Stateful(opts) => {
                let step = step_graph(graph, &analysis, opts)?;
                let capacity = opts.kv_window.unwrap_or(0);
                let mut states = Vec::with_capacity(step.states.len());
                for s in &step.states {
                    let mut shape = s.shape.clone();
                    if let Some(ax) = s.capacity_axis {
                        shape[ax] = capacity;
                    }
                    states.push(match &s.init {
                        Some(t) => t.clone(),
                        None => Tensor::zeros(s.dtype, &shape)?,
                    });
                }
                let masks =
                    step.masks.iter().map(|_| Tensor::zeros(crate::DType::F32, &[0, 0])).collect::<Result<_>>()?;
                let filled = vec![0; step.masks.len()];
                let mask_names =
                    step.masks.iter().map(|m| step.graph.values[step.graph.inputs[m.input]].name.clone()).collect();
                Engine::Stateful(Stateful { step: Arc::new(step), mask_names, states, masks, filled, capacity })
            }
            StreamMode::Windowed(n) => {
                let windows = vec![None; graph.inputs.len()];
                Engine::Windowed(Windowed { graph: Arc::new(graph.clone()), len: *n, windows })
            }
        };
        Ok(StreamSession {
            engine,
            analysis,
            bindings: config.bindings,
            options: config.session,
            sessions: HashMap::new(),
            feed: Vec::new(),
            frame: 0,
            joined: Vec::new(),
            input_axes,
            output_axes,
            output_names,
        })
    }

    /// The classification of every node.
    pub fn analysis(&self) -> &Analysis {
        &self.analysis
    }

    pub fn output_names(&self) -> &[String] {
        &self.output_names
    }

    /// Per output: its time axis (None: the output is not per frame).
    pub fn output_axes(&self) -> &[Option<usize>] {
        &self.output_axes
    }

    /// Per output: frames of delay (0 in windowed mode).
    pub fn output_delays(&self) -> Vec<usize> {
        match &self.engine {
            Engine::Stateful(s) => s.step.output_delays.clone(),
            Engine::Windowed(_) => vec![0; self.output_axes.len()],
        }
    }

    /// Bytes of state carried between pushes (the windows in windowed mode).
    pub fn state_bytes(&self) -> usize {
        match &self.engine {
            Engine::Stateful(s) => s.states.iter().map(|t| t.bytes().len()).sum(),
            Engine::Windowed(w) => w.windows.iter().flatten().map(|t| t.bytes().len()).sum(),
        }
    }

    /// Frames pushed since the start or the last reset.
    pub fn frames(&self) -> usize {
        self.frame
    }

    /// Back to the start of a stream (state zeroed, KV caches emptied).
    pub fn reset(&mut self) -> Result<()> {
        self.frame = 0;
        match &mut self.engine {
            Engine::Stateful(s) => {
                for (t, slot) in s.states.iter_mut().zip(&s.step.states) {
                    match &slot.init {
                        Some(init) => *t = init.clone(),
                        None => t.bytes_mut().fill(0),
                    }
                }
                s.filled.iter_mut().for_each(|f| *f = 0);
            }
            Engine::Windowed(w) => w.windows.iter_mut().for_each(|t| *t = None),
        }
        Ok(())
    }

    /// Pushes one chunk (inputs in the model's order; time-carrying inputs with
    /// the same number of frames >= 1) and returns the outputs for its frames.
    pub fn push(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        Ok(self.push_borrowed(inputs)?.to_vec())
    }

    /// Like [`push`](Self::push), returning outputs held by the session until
    /// the next push (no allocation after the first push of a chunk length).
    pub fn push_borrowed(&mut self, inputs: &[Tensor]) -> Result<&[Tensor]> {
        let n = self.chunk_frames(inputs)?;
        if !self.needs_split(n) {
            return self.run_piece(inputs, n);
        }
        let pieces = self.pieces(n);
        let mut outs: Vec<Vec<Tensor>> = Vec::new();
        let mut at = 0;
        for len in pieces {
            let part = self.slice_inputs(inputs, at, len)?;
            outs.push(self.run_piece(&part, len)?.to_vec());
            at += len;
        }
        self.joined.clear();
        for (k, axis) in self.output_axes.iter().enumerate() {
            let parts: Vec<Tensor> = outs.iter().map(|o| o[k].clone()).collect();
            self.joined.push(match axis {
                Some(a) => frames::concat(&parts, *a)?,
                None => parts.last().cloned().expect("at least one piece"),
            });
        }
        Ok(&self.joined)
    }

    fn chunk_frames(&self, inputs: &[Tensor]) -> Result<usize> {
        if inputs.len() != self.input_axes.len() {
            return Err(Error::Invalid(format!(
                "the model takes {} inputs, {} were pushed",
                self.input_axes.len(),
                inputs.len()
            )));
        }
        let mut n = None;
        for (t, axis) in inputs.iter().zip(&self.input_axes) {
            let Some(a) = axis else { continue };
            let f = t.shape().get(*a).copied().ok_or_else(|| {
                Error::Invalid(format!("a pushed input of shape {:?} has no time axis {a}", t.shape()))
            })?;
            if n.is_some_and(|n| n != f) {
                return Err(Error::Invalid("pushed inputs have different numbers of frames".into()));
            }
            n = Some(f);
        }
        match n {
            Some(n) if n >= 1 => Ok(n),
            _ => Err(Error::Invalid("a push needs at least one frame".into())),
        }
    }

    /// Whether a push of `n` frames must run in pieces (see [`pieces`](Self::pieces)).
    fn needs_split(&self, n: usize) -> bool {
        let inside = |k: usize| k > self.frame && k < self.frame + n;
        match &self.engine {
            Engine::Stateful(s) => {
                s.step.states.iter().any(|st| inside(st.skip)) || s.step.masks.iter().any(|m| inside(m.skip))
            }
            Engine::Windowed(w) => n > w.len,
        }
    }

    /// Lengths a push of `n` frames runs as: split where a node's warm-up ends
    /// (so each piece is all warm-up or all live for every state) and, in
    /// windowed mode, into window-sized pieces.
    fn pieces(&self, n: usize) -> Vec<usize> {
        let mut cuts: Vec<usize> = match &self.engine {
            Engine::Stateful(s) => s
                .step
                .states
                .iter()
                .map(|st| st.skip)
                .chain(s.step.masks.iter().map(|m| m.skip))
                .filter(|&k| k > self.frame && k < self.frame + n)
                .map(|k| k - self.frame)
                .collect(),
            Engine::Windowed(w) => (1..).map(|i| i * w.len).take_while(|&c| c < n).collect(),
        };
        cuts.sort_unstable();
        cuts.dedup();
        let mut out = Vec::with_capacity(cuts.len() + 1);
        let mut prev = 0;
        for c in cuts.into_iter().chain([n]) {
            out.push(c - prev);
            prev = c;
        }
        out
    }

    fn slice_inputs(&self, inputs: &[Tensor], at: usize, len: usize) -> Result<Vec<Tensor>> {
        inputs
            .iter()
            .zip(&self.input_axes)
            .map(|(t, a)| match a {
                Some(a) => frames::slice(t, *a, at, len),
                None => Ok(t.clone()),
            })
            .collect()
    }

    fn run_piece(&mut self, inputs: &[Tensor], n: usize) -> Result<&[Tensor]> {
        match &mut self.engine {
            Engine::Stateful(_) => self.run_stateful(inputs, n),
            Engine::Windowed(_) => self.run_windowed(inputs, n),
        }
    }

    fn session(&mut self, graph: &Graph, n: usize, capacity: usize, masks: &[String]) -> Result<&mut Session> {
        let key = (n, capacity);
        if !self.sessions.contains_key(&key) {
            let mut b = self.bindings.clone();
            b.symbols.insert(self.analysis.symbol.clone(), n);
            b.symbols.insert(KV_CAPACITY.to_string(), capacity);
            for m in masks {
                b.shapes.insert(m.clone(), vec![n, capacity + n]);
            }
            let plan = Plan::new(graph, &b)?;
            self.sessions.insert(key, Session::with_options(Arc::new(plan), self.options));
        }
        Ok(self.sessions.get_mut(&key).expect("inserted above"))
    }

    fn run_stateful(&mut self, inputs: &[Tensor], n: usize) -> Result<&[Tensor]> {
        let Engine::Stateful(s) = &mut self.engine else { unreachable!("stateful engine") };
        let step = s.step.clone();
        // KV caches: enough room for this chunk (doubling), or the fixed window.
        let need = s.filled.iter().map(|f| f + n).max().unwrap_or(0);
        if !step.masks.is_empty() && step.masks[0].window.is_none() && need > s.capacity {
            let cap = need.next_power_of_two().max(16);
            for (t, slot) in s.states.iter_mut().zip(&step.states) {
                if let Some(ax) = slot.capacity_axis {
                    *t = frames::grow_front(t, ax, cap)?;
                }
            }
            s.capacity = cap;
        }
        let cap = s.capacity;
        for (i, m) in step.masks.iter().enumerate() {
            fill_mask(&mut s.masks[i], n, cap, s.filled[i], m.window)?;
        }
        self.feed.clear();
        self.feed.extend(inputs.iter().cloned());
        self.feed.extend(s.states.iter().cloned());
        self.feed.extend(s.masks.iter().cloned());
        let mask_names = s.mask_names.clone();
        let frame = self.frame;
        let feed = std::mem::take(&mut self.feed);
        let result = self.session(&step.graph, n, cap, &mask_names).and_then(|sess| {
            sess.run_borrowed(&feed, |_, _| {})?;
            Ok(())
        });
        self.feed = feed;
        self.feed.clear();
        result?;
        let Engine::Stateful(s) = &mut self.engine else { unreachable!("stateful engine") };
        let outs = self.sessions.get(&(n, cap)).expect("just ran").last_outputs();
        for (i, slot) in step.states.iter().enumerate() {
            if frame >= slot.skip {
                let src = &outs[step.n_outputs + i];
                if src.shape() != s.states[i].shape() {
                    return Err(Error::Invalid(format!(
                        "state of node '{}' came out as {:?}, expected {:?}",
                        slot.node,
                        src.shape(),
                        s.states[i].shape()
                    )));
                }
                s.states[i].bytes_mut().copy_from_slice(src.bytes());
            }
        }
        for (i, m) in step.masks.iter().enumerate() {
            if frame >= m.skip {
                s.filled[i] = (s.filled[i] + n).min(cap);
            }
        }
        self.frame += n;
        Ok(&outs[..step.n_outputs])
    }

    fn run_windowed(&mut self, inputs: &[Tensor], n: usize) -> Result<&[Tensor]> {
        let Engine::Windowed(w) = &mut self.engine else { unreachable!("windowed engine") };
        let graph = w.graph.clone();
        let len = w.len;
        for (k, (t, axis)) in inputs.iter().zip(&self.input_axes).enumerate() {
            let Some(a) = axis else {
                w.windows[k] = Some(t.clone());
                continue;
            };
            if w.windows[k].is_none() {
                let mut shape = t.shape().to_vec();
                shape[*a] = len;
                w.windows[k] = Some(Tensor::zeros(t.dtype(), &shape)?);
            }
            let win = w.windows[k].as_mut().expect("made above");
            frames::shift_in(win, t, *a)?;
        }
        self.feed.clear();
        self.feed.extend(w.windows.iter().flatten().cloned());
        let feed = std::mem::take(&mut self.feed);
        let result = self.session(&graph, len, 0, &[]).and_then(|sess| {
            sess.run_borrowed(&feed, |_, _| {})?;
            Ok(())
        });
        self.feed = feed;
        self.feed.clear();
        result?;
        self.frame += n;
        let outs = self.sessions.get(&(len, 0)).expect("just ran").last_outputs();
        self.joined.clear();
        for (t, axis) in outs.iter().zip(&self.output_axes) {
            self.joined.push(match axis {
                Some(a) => frames::slice(t, *a, t.shape()[*a] - n, n)?,
                None => t.clone(),
            });
        }
        Ok(&self.joined)
    }
}

/// The additive mask of one causal attention step: `n` queries over `cap`
/// cached slots (the newest `filled` of them written) then the `n` new keys.
fn fill_mask(mask: &mut Tensor, n: usize, cap: usize, filled: usize, window: Option<usize>) -> Result<()> {
    if mask.shape() != [n, cap + n] {
        *mask = Tensor::zeros(crate::DType::F32, &[n, cap + n])?;
    }
    let m = mask.as_mut_slice::<f32>()?;
    let w = window.unwrap_or(usize::MAX);
    for r in 0..n {
        let q = filled + r;
        let row = &mut m[r * (cap + n)..(r + 1) * (cap + n)];
        for (j, v) in row.iter_mut().enumerate() {
            let key = if j < cap {
                // slot j holds position filled - (cap - j), if written
                (j + filled >= cap).then(|| filled + j - cap)
            } else {
                let jj = j - cap;
                (jj <= r).then_some(filled + jj)
            };
            *v = match key {
                Some(k) if q - k < w => 0.0,
                _ => f32::NEG_INFINITY,
            };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_marks_unwritten_slots_future_keys_and_the_window() {
        let mut m = Tensor::zeros(crate::DType::F32, &[0, 0]).unwrap();
        fill_mask(&mut m, 2, 3, 1, None).unwrap();
        let inf = f32::NEG_INFINITY;
        assert_eq!(m.as_slice::<f32>().unwrap(), &[inf, inf, 0., 0., inf, inf, inf, 0., 0., 0.]);
        fill_mask(&mut m, 2, 3, 3, Some(2)).unwrap();
        // positions: slots 0,1,2 = 0,1,2; queries 3,4 (window 2: keys > q-2)
        assert_eq!(m.as_slice::<f32>().unwrap(), &[inf, inf, 0., 0., inf, inf, inf, inf, 0., 0.]);
    }

    #[test]
    fn mode_parses() {
        assert!(matches!("windowed:8".parse::<StreamMode>(), Ok(StreamMode::Windowed(8))));
        assert!(matches!("stateful".parse::<StreamMode>(), Ok(StreamMode::Stateful(_))));
        assert!("windowed:0".parse::<StreamMode>().is_err());
        assert!("sliding".parse::<StreamMode>().is_err());
    }
}
