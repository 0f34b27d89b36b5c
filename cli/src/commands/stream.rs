//! `floe stream MODEL`: push inputs through a model chunk by chunk, carrying
//! state, printing each chunk's outputs and the per-push latency.

use super::{parse_dims, parse_pairs, random_tensor, stats, Rng};
use anyhow::{bail, Context, Result};
use clap::Args;
use floe_engine::exec::{Bindings, SessionOptions};
use floe_engine::stream::{
    frames, Analysis, NodeClass, StreamConfig, StreamMode, StreamOptions, StreamSession, StreamSpec,
};
use floe_engine::{Dim, Graph, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct StreamArgs {
    /// The model (.onnx or .floe).
    model: PathBuf,
    /// An input as NAME=FILE.npy (repeat for several). Inputs with the time axis
    /// are cut into chunks along it; others are given whole on every push.
    /// Inputs not given are random (see --frames).
    #[arg(long = "input", value_name = "NAME=FILE.npy")]
    inputs: Vec<String>,
    /// Frames per push (the last push may be shorter).
    #[arg(long, default_value_t = 1, value_name = "N")]
    chunk: usize,
    /// How to stream: `T` (stateful along the symbolic dim T: each op keeps its
    /// state between pushes), `windowed:N` or `windowed:N@T` (re-run the whole
    /// model on the last N frames at every push). Default: what `floe convert
    /// --stream` recorded in a .floe file, else stateful along the inputs' only
    /// symbolic dim.
    #[arg(long, value_name = "T|windowed:N[@T]")]
    stream: Option<StreamSpec>,
    /// Keep at most this many past frames in each causal attention's KV cache
    /// (default: all of them).
    #[arg(long, value_name = "FRAMES")]
    kv_window: Option<usize>,
    /// Frames of random input when an input is not given.
    #[arg(long, default_value_t = 100)]
    frames: usize,
    /// Values of other symbolic dims, e.g. --dim batch=1.
    #[arg(long = "dim", value_name = "SYM=N")]
    dims: Vec<String>,
    /// Write each output, concatenated over the pushes, as DIR/NAME.npy (named as
    /// `floe run` names them, so whole-sequence and streamed results compare).
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
    /// Threads the kernels may use.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print only the summary, not a line per chunk.
    #[arg(long, short)]
    quiet: bool,
    /// Seed for random inputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[cfg(feature = "audio")]
    #[command(flatten)]
    audio: crate::audio::WavArgs,
}

/// Prints the stream analysis: counts, the stateful nodes and their state, the
/// blocking ones with why, and the output delays.
pub fn print_analysis(spec: &StreamSpec, a: &Analysis, g: &Graph) {
    let (stateless, stateful, blocking) = a.counts();
    println!(
        "stream {spec}: {stateless} stateless, {stateful} stateful, {blocking} blocking node(s) along '{}'",
        a.symbol
    );
    for n in &a.nodes {
        if matches!(n.class, NodeClass::Stateful(_) | NodeClass::Blocking(_)) {
            println!("  {:<40} {:<22} {}", n.name, n.op, n.class);
        }
    }
    for (k, &o) in g.outputs.iter().enumerate() {
        let d = a.delay[o];
        let axis =
            a.time_axis[o].map_or("no time axis (whole value per push)".to_string(), |x| format!("time axis {x}"));
        println!("  output {:<24} {axis}, delay {d} frame(s)", g.values[g.outputs[k]].name);
    }
}

fn file_name(name: &str) -> String {
    name.chars().map(|c| if c.is_alphanumeric() || c == '_' || c == '-' || c == '.' { c } else { '_' }).collect()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

pub fn run(a: StreamArgs) -> Result<ExitCode> {
    if a.chunk == 0 {
        bail!("--chunk must be at least 1");
    }
    let symbols = parse_dims(&a.dims)?;
    let model = super::load_model(&a.model)?;
    let g = model.graph();
    let recorded = match &model {
        super::LoadedModel::Floe(m) => {
            m.info.stream.as_ref().map(|s| s.parse::<StreamSpec>()).transpose().map_err(anyhow::Error::msg)?
        }
        #[cfg(feature = "onnx")]
        super::LoadedModel::Onnx(_) => None,
    };
    let mut spec = match a.stream.clone().or(recorded) {
        Some(s) => s,
        None => StreamSpec { symbol: None, mode: StreamMode::Stateful(StreamOptions::default()) },
    }
    .resolved(g)
    .with_context(|| format!("{}: choosing the time axis", a.model.display()))?;
    if let StreamMode::Stateful(o) = &mut spec.mode {
        o.kv_window = a.kv_window;
    }
    let symbol = spec.symbol.clone().unwrap_or_default();
    let config = StreamConfig {
        symbol: symbol.clone(),
        mode: spec.mode.clone(),
        bindings: Bindings { symbols: symbols.clone(), ..Default::default() },
        session: SessionOptions { threads: a.threads.max(1) },
    };
    let mut session = StreamSession::new(g, config).with_context(|| format!("{}: cannot stream", a.model.display()))?;
    print_analysis(&spec, session.analysis(), g);

    // Inputs: given files or random, each with its time axis (if any).
    let mut given: HashMap<String, Tensor> = HashMap::new();
    for (name, file) in parse_pairs(&a.inputs, "--input")? {
        if !g.inputs.iter().any(|&i| g.values[i].name == name) {
            let names: Vec<&str> = g.inputs.iter().map(|&i| g.values[i].name.as_str()).collect();
            bail!("--input {name}=...: the model has no input '{name}' (inputs: {})", names.join(", "));
        }
        given.insert(name, floe_engine::npy::read(file.as_ref())?);
    }
    #[cfg(feature = "audio")]
    if let Some(path) = &a.audio.wav {
        let (name, t) = wav_input(&a.audio, path, g, session.analysis(), &symbol)?;
        given.insert(name, t);
    }
    let mut rng = Rng::new(a.seed);
    let mut inputs = Vec::new();
    let mut axes = Vec::new();
    for &id in &g.inputs {
        let v = &g.values[id];
        let axis = session.analysis().time_axis[id];
        let t = match given.remove(&v.name) {
            Some(t) => t,
            None => {
                let shape: Vec<usize> = v
                    .fact
                    .shape
                    .as_ref()
                    .map(|s| {
                        s.0.iter()
                            .map(|d| match d {
                                Dim::Fixed(n) => *n,
                                Dim::Sym(s) if *s == symbol => a.frames,
                                Dim::Sym(s) => symbols.get(s).copied().unwrap_or(1),
                                Dim::Unknown => 1,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                random_tensor(v.fact.dtype.context("an input without a dtype")?, &shape, &mut rng)?
            }
        };
        if let Some(ax) = axis {
            if t.rank() <= ax {
                bail!("input '{}' of shape {:?} has no time axis {ax}", v.name, t.shape());
            }
        }
        println!("input  {:<20} {} {:?}  {}", v.name, t.dtype(), t.shape(), stats(&t));
        inputs.push(t);
        axes.push(axis);
    }
    let total = inputs.iter().zip(&axes).find_map(|(t, ax)| ax.map(|ax| t.shape()[ax]));
    let Some(total) = total else { bail!("no input carries the time axis '{symbol}'") };
    if inputs.iter().zip(&axes).any(|(t, ax)| ax.is_some_and(|ax| t.shape()[ax] != total)) {
        bail!("inputs with the time axis '{symbol}' have different numbers of frames");
    }

    let names = session.output_names().to_vec();
    let out_axes = session.output_axes().to_vec();
    let mut collected: Vec<Vec<Tensor>> = vec![Vec::new(); names.len()];
    let mut times = Vec::with_capacity(total.div_ceil(a.chunk));
    let mut at = 0;
    let mut k = 0;
    while at < total {
        let n = a.chunk.min(total - at);
        let chunk: Vec<Tensor> = inputs
            .iter()
            .zip(&axes)
            .map(|(t, ax)| match ax {
                Some(ax) => Ok(frames::slice(t, *ax, at, n)?),
                None => Ok(t.clone()),
            })
            .collect::<Result<_>>()?;
        let start = Instant::now();
        let outs = session.push_borrowed(&chunk).with_context(|| format!("push {k} (frames {at}..{})", at + n))?;
        times.push(start.elapsed());
        if !a.quiet {
            let parts: Vec<String> =
                names.iter().zip(outs).map(|(name, t)| format!("{name} {:?} {}", t.shape(), stats(t))).collect();
            println!("chunk {k:>5}  frames {at:>6}..{:<6} {}", at + n, parts.join("  "));
        }
        if a.output_dir.is_some() {
            for (c, t) in collected.iter_mut().zip(outs) {
                c.push(t.clone());
            }
        }
        at += n;
        k += 1;
    }
    let mut sorted = times.clone();
    sorted.sort();
    let sum: Duration = times.iter().sum();
    println!(
        "{} pushes of {} frame(s), {total} frames: per push p50 {:.1} us  p90 {:.1} us  p99 {:.1} us  max {:.1} us; {:.0} frames/s",
        times.len(),
        a.chunk,
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.9),
        percentile(&sorted, 0.99),
        percentile(&sorted, 1.0),
        total as f64 / sum.as_secs_f64().max(1e-12)
    );
    println!("state carried between pushes: {} bytes", session.state_bytes());
    if let Some(dir) = &a.output_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for ((name, parts), axis) in names.iter().zip(&collected).zip(&out_axes) {
            let t = match axis {
                Some(ax) => frames::concat(parts, *ax)?,
                None => parts.last().cloned().context("no pushes")?,
            };
            let path = dir.join(format!("{}.npy", file_name(name)));
            floe_engine::npy::write(&path, &t)?;
        }
        let delays = session.output_delays();
        println!(
            "outputs written to {} (delays in frames: {})",
            dir.display(),
            names.iter().zip(&delays).map(|(n, d)| format!("{n}={d}")).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The model input a WAV feeds (the one with the time axis) and its tensor: the
/// samples themselves (`--raw-audio`) or log-mel frames, shaped like the input
/// with the time axis set to the number of samples / frames.
#[cfg(feature = "audio")]
fn wav_input(
    args: &crate::audio::WavArgs,
    path: &std::path::Path,
    g: &Graph,
    analysis: &Analysis,
    symbol: &str,
) -> Result<(String, Tensor)> {
    let timed: Vec<_> = g.inputs.iter().filter(|&&i| analysis.time_axis[i].is_some()).collect();
    let [&id] = timed.as_slice() else {
        bail!("--wav feeds one input, but {} inputs carry the time axis '{symbol}'", timed.len());
    };
    let v = &g.values[id];
    let axis = analysis.time_axis[id].expect("filtered on it");
    let wav = args.read(path)?;
    let (data, per_step) = if args.raw_audio {
        (wav.samples.clone(), 1)
    } else {
        let mut mel = args.log_mel()?;
        if mel.empty_bands() > 0 {
            eprintln!(
                "warning: {} of {} mel bands cover no FFT bin (too many --n-mels for --n-fft); they are constant",
                mel.empty_bands(),
                mel.n_mels()
            );
        }
        (mel.wav_frames(&wav)?, mel.n_mels())
    };
    let dims: Vec<Option<usize>> =
        v.fact.shape.as_ref().context("input without a shape")?.0.iter().map(Dim::fixed).collect();
    let per_frame: usize = dims.iter().enumerate().filter(|&(i, _)| i != axis).map(|(_, d)| d.unwrap_or(1)).product();
    if per_frame != per_step {
        let what = if args.raw_audio { "1 sample".to_string() } else { format!("{per_step} mel bands (--n-mels)") };
        bail!(
            "input '{}' takes {per_frame} values per step of '{symbol}' ({}), but --wav gives {what}",
            v.name,
            v.fact.shape.as_ref().map_or("?".into(), |s| s.to_string())
        );
    }
    let steps = data.len() / per_step;
    if steps == 0 {
        bail!("{}: too short for one frame", path.display());
    }
    let shape: Vec<usize> =
        dims.iter().enumerate().map(|(i, d)| if i == axis { steps } else { d.unwrap_or(1) }).collect();
    println!(
        "wav    {} ({} Hz, {} channel(s), {:.2} s) -> {steps} {} for input '{}'",
        path.display(),
        wav.sample_rate,
        wav.channels,
        wav.duration_secs(),
        if args.raw_audio { "samples" } else { "log-mel frames" },
        v.name
    );
    Ok((v.name.clone(), Tensor::from_vec(&shape, data)?))
}
