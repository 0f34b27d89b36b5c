//! The `floe` binary end to end: the README's run command, and bad input giving a
//! clear error, a non-zero exit and never a Rust panic banner.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn floe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_floe")).args(args).output().expect("floe runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn repo(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p).to_string_lossy().into_owned()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("floe-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

#[test]
fn run_shipped_model_prints_outputs_and_writes_npy() {
    let out_dir = tmp("out");
    let o = floe(&[
        "run",
        &repo("examples/models/keyword_cnn.onnx"),
        "--dim",
        "T=100",
        "--output-dir",
        out_dir.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("output logits") && t.contains("[1, 12]"), "{t}");
    let logits = floe_engine::npy::read(&out_dir.join("logits.npy")).unwrap();
    assert_eq!(logits.shape(), &[1, 12]);
}

#[test]
fn run_with_reference_input_reproduces_onnxruntime() {
    let out_dir = tmp("ref");
    let input = format!("x={}", repo("examples/models/mlp/input_0_x.npy"));
    let o =
        floe(&["run", &repo("examples/models/mlp.onnx"), "--input", &input, "--output-dir", out_dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let got = floe_engine::npy::read(&out_dir.join("y.npy")).unwrap().to_f64_vec();
    let want = floe_engine::npy::read(Path::new(&repo("examples/models/mlp/output_0_y.npy"))).unwrap().to_f64_vec();
    assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5));
}

#[test]
fn truncated_model_is_a_clear_error() {
    let bytes = std::fs::read(repo("examples/models/keyword_cnn.onnx")).unwrap();
    let p = tmp("truncated.onnx");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let o = floe(&["run", p.to_str().unwrap(), "--dim", "T=10"]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("truncated.onnx"), "{t}");
    assert!(!t.contains("panicked at"), "{t}");
}

#[test]
fn unsupported_ops_are_all_listed() {
    // Built by hand: two unknown ops and one from a custom domain.
    use prost::Message;
    use tract_onnx::pb::*;
    let n = |op: &str, dom: &str, i: &str, o: &str| NodeProto {
        op_type: op.into(),
        domain: dom.into(),
        input: vec![i.into()],
        output: vec![o.into()],
        ..Default::default()
    };
    let vi = |name: &str| ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 1,
                shape: Some(TensorShapeProto { dim: vec![] }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let m = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 18 }],
        graph: Some(GraphProto {
            node: vec![
                n("Warp", "", "x", "a"),
                n("Relu", "", "a", "b"),
                n("Zap", "", "b", "c"),
                n("Frob", "org.acme", "c", "y"),
            ],
            input: vec![vi("x")],
            output: vec![vi("y")],
            ..Default::default()
        }),
        ..Default::default()
    };
    let p = tmp("unsupported.onnx");
    std::fs::write(&p, m.encode_to_vec()).unwrap();
    for cmd in ["run", "inspect"] {
        let o = floe(&[cmd, p.to_str().unwrap()]);
        let t = text(&o);
        assert!(!o.status.success(), "{cmd}: {t}");
        assert!(t.contains("Warp") && t.contains("Zap") && t.contains("Frob") && t.contains("org.acme"), "{cmd}: {t}");
        assert!(!t.contains("panicked at"), "{t}");
    }
}

#[test]
fn missing_file_and_bad_flags_are_errors_not_panics() {
    let o = floe(&["run", "/nonexistent/model.onnx"]);
    assert!(!o.status.success() && text(&o).contains("/nonexistent/model.onnx"));
    let o = floe(&["run", &repo("examples/models/keyword_cnn.onnx"), "--dim", "T=abc"]);
    assert!(!o.status.success() && text(&o).contains("T=abc"));
    let o = floe(&["run", &repo("examples/models/keyword_cnn.onnx")]);
    let t = text(&o);
    assert!(!o.status.success() && t.contains("--dim T="), "{t}");
    let o = floe(&["run", &repo("examples/models/mlp.onnx"), "--input", "nope=x.npy"]);
    assert!(!o.status.success() && text(&o).contains("no input 'nope'"));
}

#[test]
fn inspect_shows_symbolic_inputs_and_histogram() {
    let o = floe(&["inspect", &repo("examples/models/transformer_encoder.onnx")]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("hidden") && t.contains("[1, S, 64]") && t.contains("Softmax") && t.contains("parameters:"),
        "{t}"
    );
}

#[test]
fn help_explains_every_flag_of_run() {
    let t = text(&floe(&["run", "--help"]));
    for flag in ["--input", "--dim", "--output-dir", "--seed"] {
        assert!(t.contains(flag), "{flag} missing from help: {t}");
    }
}

#[test]
fn convert_then_run_gives_the_same_outputs_as_running_the_onnx() {
    let floe_path = tmp("mlp.floe");
    let o = floe(&["convert", &repo("examples/models/mlp.onnx"), "-o", floe_path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let input = format!("x={}", repo("examples/models/mlp/input_0_x.npy"));
    let (a, b) = (tmp("from-onnx"), tmp("from-floe"));
    for (model, out) in [(repo("examples/models/mlp.onnx"), &a), (floe_path.to_string_lossy().into_owned(), &b)] {
        let o = floe(&["run", &model, "--input", &input, "--output-dir", out.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let (x, y) = (floe_engine::npy::read(&a.join("y.npy")).unwrap(), floe_engine::npy::read(&b.join("y.npy")).unwrap());
    assert_eq!(x, y, "the .floe file and the ONNX model give different outputs");
    let t = text(&floe(&["inspect", floe_path.to_str().unwrap()]));
    let version = format!(".floe version {}", floe_engine::format::FORMAT_VERSION);
    assert!(t.contains(&version) && t.contains("quantization: none") && t.contains("Plain"), "{t}");
}

#[test]
fn truncated_floe_file_is_a_clear_error() {
    let floe_path = tmp("cut-src.floe");
    assert!(floe(&["convert", &repo("examples/models/mlp.onnx"), "-o", floe_path.to_str().unwrap()]).status.success());
    let bytes = std::fs::read(&floe_path).unwrap();
    let cut = tmp("cut.floe");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    let o = floe(&["run", cut.to_str().unwrap(), "--dim", "N=2"]);
    let t = text(&o);
    assert!(!o.status.success() && t.contains("cut.floe") && t.contains("truncated"), "{t}");
    assert!(!t.contains("panicked at"), "{t}");
}

/// Runs the MLP with onnxruntime's reference input and checks `y` against
/// onnxruntime's reference output; returns everything floe printed.
fn run_mlp_against_onnxruntime(model: &Path, out: &str) -> String {
    let out_dir = tmp(out);
    let input = format!("x={}", repo("examples/models/mlp/input_0_x.npy"));
    let o = floe(&["run", model.to_str().unwrap(), "--input", &input, "--output-dir", out_dir.to_str().unwrap()]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let got = floe_engine::npy::read(&out_dir.join("y.npy")).unwrap().to_f64_vec();
    let want = floe_engine::npy::read(Path::new(&repo("examples/models/mlp/output_0_y.npy"))).unwrap().to_f64_vec();
    assert_eq!(got.len(), want.len());
    assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5), "{model:?}: outputs differ from onnxruntime");
    t
}

#[test]
fn convert_for_another_board_records_the_preset_and_runs_here_with_a_warning() {
    // A preset for an architecture other than this machine's.
    let board = if std::env::consts::ARCH == "aarch64" { "x86_64-avx2" } else { "rpi4-aarch64" };
    let p = tmp(&format!("mlp-{board}.floe"));
    let o = floe(&["convert", &repo("examples/models/mlp.onnx"), "-o", p.to_str().unwrap(), "--target", board]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&floe(&["inspect", p.to_str().unwrap()]));
    let kernels = floe_targets::preset(board).unwrap().kernels.to_string();
    assert!(t.contains(&format!("target:    {board}")) && t.contains(&format!("kernels:   {kernels}")), "{t}");
    // Weights are stored plain, so this machine runs it with its own kernels: same
    // answer as onnxruntime, and a warning naming both presets.
    let t = run_mlp_against_onnxruntime(&p, "board-out");
    let here = floe_targets::host_preset().name;
    assert!(t.contains("warning:") && t.contains(board) && t.contains(here), "{t}");
    assert!(t.contains(&format!("this CPU is {}", std::env::consts::ARCH)), "{t}");
}

#[test]
fn file_needing_a_cpu_feature_this_machine_lacks_names_both_presets() {
    // What an x86_64-avx512 file says on a machine without AVX-512: here with a
    // feature no CPU has, written through the library as `floe convert` does.
    let src = tmp("mlp-src.floe");
    assert!(floe(&["convert", &repo("examples/models/mlp.onnx"), "-o", src.to_str().unwrap()]).status.success());
    let m = floe_engine::format::Model::load(&src).unwrap();
    let rec = floe_engine::format::TargetRecord {
        preset: "future-board".into(),
        kernels: "sve9".into(),
        arch: std::env::consts::ARCH.into(),
        cpu_features: vec!["sve9".into()],
    };
    let p = tmp("mlp-future.floe");
    floe_engine::format::write_for_target(&p, &m.graph, &m.info, &rec, &mut |_, _| {}).unwrap();
    let t = run_mlp_against_onnxruntime(&p, "future-out");
    let here = floe_targets::host_preset().name;
    assert!(t.contains("future-board") && t.contains("lacks sve9") && t.contains(here), "{t}");
    let t = text(&floe(&["inspect", p.to_str().unwrap()]));
    assert!(t.contains("kernels:   sve9") && t.contains("this CPU:  ") && t.contains("lacks sve9"), "{t}");
}

#[test]
fn file_converted_for_this_machine_runs_without_a_warning() {
    let here = floe_targets::host_preset().name;
    let p = tmp("mlp-here.floe");
    let o = floe(&["convert", &repo("examples/models/mlp.onnx"), "-o", p.to_str().unwrap(), "--target", here]);
    assert!(o.status.success(), "{}", text(&o));
    let t = run_mlp_against_onnxruntime(&p, "here-out");
    assert!(!t.contains("warning"), "{t}");
    let t = text(&floe(&["inspect", p.to_str().unwrap()]));
    assert!(t.contains(&format!("this CPU:  runs its kernels ({here})")), "{t}");
    // An unknown preset is refused before anything is written.
    let o = floe(&[
        "convert",
        &repo("examples/models/mlp.onnx"),
        "-o",
        tmp("x.floe").to_str().unwrap(),
        "--target",
        "rpi9",
    ]);
    assert!(!o.status.success() && text(&o).contains("rpi9") && text(&o).contains("rpi4-aarch64"), "{}", text(&o));
}

#[test]
fn compare_reports_agreement_of_an_onnx_model_and_its_quantized_floe() {
    let q = tmp("te-int8.floe");
    let model = repo("examples/models/transformer_encoder.onnx");
    let o = floe(&["convert", &model, "-o", q.to_str().unwrap(), "--quantize", "int8"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = floe(&["compare", &model, q.to_str().unwrap(), "--dim", "S=24", "--runs", "3", "--threads", "1"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let row = t.lines().find(|l| l.starts_with("encoded")).unwrap_or_else(|| panic!("{t}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    let (err, cos): (f64, f64) = (cols[1].parse().unwrap(), cols[2].parse().unwrap());
    // int8 weights: a visible but small difference, direction kept
    assert!(err > 0.0 && err < 0.5 && cos > 0.999 && cos < 1.0, "{t}");
    assert!(t.contains("B/A ="), "{t}");
    // a model with different inputs is refused, naming the input
    let o = floe(&["compare", &model, &repo("examples/models/keyword_cnn.onnx"), "--dim", "S=24", "--dim", "T=100"]);
    assert!(!o.status.success() && text(&o).contains("hidden"), "{}", text(&o));
}

#[test]
fn stream_writes_outputs_equal_to_onnxruntime_after_the_reported_delay() {
    let out_dir = tmp("stream");
    let floe_file = tmp("gru_kws.floe");
    let o =
        floe(&["convert", &repo("examples/models/gru_kws.onnx"), "-o", floe_file.to_str().unwrap(), "--stream", "T"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("stateful: conv ring buffer") && t.contains("delay 1 frame"), "{t}");
    // The recorded stream spec is the default of `floe stream`.
    let input = format!("mel={}", repo("examples/models/gru_kws/input_0_mel.npy"));
    let o = floe(&[
        "stream",
        floe_file.to_str().unwrap(),
        "--input",
        &input,
        "--chunk",
        "3",
        "--output-dir",
        out_dir.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("chunk    13") && t.contains("p50") && t.contains("logits=1"), "{t}");
    let got = floe_engine::npy::read(&out_dir.join("logits.npy")).unwrap();
    let want = floe_engine::npy::read(Path::new(&repo("examples/models/gru_kws/output_0_logits.npy"))).unwrap();
    assert_eq!(got.shape(), want.shape());
    let (g, w) = (got.as_slice::<f32>().unwrap(), want.as_slice::<f32>().unwrap());
    // frame t of the stream is frame t - 1 of the whole sequence (12 logits per frame)
    let worst = g[12..].iter().zip(&w[..w.len() - 12]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-4, "{worst}");
}

#[test]
fn non_causal_model_is_refused_for_streaming_and_runs_windowed() {
    let o = floe(&[
        "convert",
        &repo("examples/models/transformer_encoder.onnx"),
        "-o",
        tmp("te.floe").to_str().unwrap(),
        "--stream",
        "S",
    ]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("non-causal attention") && t.contains("Reshape_115(attention)"), "{t}");
    assert!(!t.contains("panicked"), "{t}");
    let o = floe(&[
        "stream",
        &repo("examples/models/transformer_encoder.onnx"),
        "--stream",
        "windowed:8@S",
        "--frames",
        "12",
        "-q",
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("12 pushes of 1 frame"), "{t}");
}

#[test]
fn stream_from_a_wav_computes_log_mel_frames_and_checks_the_feature_count() {
    let wav = repo("cli/tests/data/audio/chirp_noise_16k.wav");
    let out_dir = tmp("wav");
    let o = floe(&[
        "stream",
        &repo("examples/models/gru_kws.onnx"),
        "--wav",
        &wav,
        "--n-mels",
        "20",
        "--chunk",
        "8",
        "-q",
        "--output-dir",
        out_dir.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    // 0.5 s at 16 kHz, 400-sample frames every 160 samples: (8000 - 400) / 160 + 1 = 48
    assert!(t.contains("48 log-mel frames"), "{t}");
    assert_eq!(floe_engine::npy::read(&out_dir.join("logits.npy")).unwrap().shape(), &[1, 48, 12]);
    let o = floe(&["stream", &repo("examples/models/gru_kws.onnx"), "--wav", &wav]);
    let t = text(&o);
    assert!(!o.status.success() && t.contains("takes 20 values per step") && t.contains("40 mel bands"), "{t}");
}

/// Peaked Q, K, V for examples/models/long_attention.onnx (`[1, 2, 128, 64]` queries
/// over `[1, 2, 2048, 64]` keys): unit-norm keys, each query 12 sqrt(d) times one key
/// plus noise, so its attention concentrates on that key, the regime k-NN attention
/// is meant for. Written as .npy files; returns the `--input` arguments.
fn peaked_long_attention_inputs() -> Vec<String> {
    let (h, l, s, d) = (2, 128, 2048, 64);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f32 / (1u64 << 53) as f32 - 0.5
    };
    let mut gauss = move || (0..6).map(|_| uniform()).sum::<f32>() * 1.4;
    let mut k: Vec<f32> = (0..h * s * d).map(|_| gauss()).collect();
    for row in k.chunks_mut(d) {
        let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= n);
    }
    let v: Vec<f32> = (0..h * s * d).map(|_| gauss()).collect();
    let mut q = Vec::with_capacity(h * l * d);
    for head in 0..h {
        for i in 0..l {
            let j = (i * 977 + head * 131) % s;
            q.extend(k[(head * s + j) * d..][..d].iter().map(|&x| 96.0 * x + 0.05 * gauss()));
        }
    }
    let mut args = Vec::new();
    for (name, data, seq) in [("q", q, l), ("k", k, s), ("v", v, s)] {
        let p = tmp(&format!("long_attention_{name}.npy"));
        let t = floe_engine::Tensor::from_vec(&[1, h, seq, d], data).unwrap();
        floe_engine::npy::write(&p, &t).unwrap();
        args.push(format!("{name}={}", p.display()));
    }
    args
}

#[test]
fn convert_attention_knn_lowers_long_attention_and_compares_near_exact() {
    let model = repo("examples/models/long_attention.onnx");
    let (exact, knn) = (tmp("long_exact.floe"), tmp("long_knn.floe"));
    let o = floe(&["convert", &model, "-o", exact.to_str().unwrap()]);
    let t = text(&o);
    assert!(o.status.success() && !t.contains("KnnAttention"), "{t}");
    let o =
        floe(&["convert", &model, "-o", knn.to_str().unwrap(), "--attention", "knn:k=20,seed=3,construction_scan=on"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("pass lower_knn_attention: 1"), "{t}");
    assert!(t.contains(": lowered to KnnAttention (S = 2048)"), "{t}");
    assert!(t.contains("knn parameters: k=20,") && t.contains("seed=3"), "{t}");
    // The recommended preset's parent fraction is stored and printed (format 5).
    let rec = tmp("long_knn_recommended.floe");
    let o = floe(&["convert", &model, "-o", rec.to_str().unwrap(), "--attention", "knn:preset=recommended"]);
    let t = text(&o);
    assert!(o.status.success() && t.contains("field_of_view=24,prop_field_of_view=0.34"), "{t}");
    let o = floe(&["inspect", knn.to_str().unwrap()]);
    assert!(o.status.success() && text(&o).contains("KnnAttention"), "{}", text(&o));
    let mut args = vec!["compare".to_string(), exact.display().to_string(), knn.display().to_string()];
    for a in peaked_long_attention_inputs() {
        args.extend(["--input".to_string(), a]);
    }
    args.extend(["--runs", "2", "--threads", "2"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = floe(&args);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let row = t.lines().find(|l| l.starts_with("y ")).unwrap_or_else(|| panic!("{t}"));
    let cos: f64 = row.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(cos >= 0.99, "k-NN vs exact cosine {cos}: {t}");
}

#[test]
fn convert_attention_unfused_keeps_the_exported_ops_with_the_same_outputs() {
    let model = repo("examples/models/long_attention.onnx");
    let (exact, unfused) = (tmp("long_exact_vs_unfused.floe"), tmp("long_unfused.floe"));
    let o = floe(&["convert", &model, "-o", exact.to_str().unwrap()]);
    assert!(o.status.success() && text(&o).contains("pass fuse_attention: 1"), "{}", text(&o));
    let o = floe(&["convert", &model, "-o", unfused.to_str().unwrap(), "--attention", "unfused"]);
    let t = text(&o);
    assert!(o.status.success() && !t.contains("fuse_attention"), "{t}");
    let o = floe(&["inspect", unfused.to_str().unwrap()]);
    let t = text(&o);
    assert!(o.status.success() && t.contains("Softmax") && !t.contains("Attention"), "{t}");
    let o = floe(&["compare", exact.to_str().unwrap(), unfused.to_str().unwrap(), "--runs", "1", "--threads", "1"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let row = t.lines().find(|l| l.starts_with("y ")).unwrap_or_else(|| panic!("{t}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    let (err, cos): (f64, f64) = (cols[1].parse().unwrap(), cols[2].parse().unwrap());
    assert!(err < 1e-5 && cos > 0.99999, "fused vs unfused: {t}");
    // k-NN lowering needs the fused op
    let o = floe(&["convert", &model, "-o", unfused.to_str().unwrap(), "--attention", "unfused:k=3"]);
    assert!(!o.status.success() && text(&o).contains("expected `exact`, `unfused`"), "{}", text(&o));
}

#[test]
fn convert_attention_knn_keeps_short_symbolic_attention_and_says_why() {
    let out = tmp("te-knn.floe");
    let model = repo("examples/models/transformer_encoder.onnx");
    let o = floe(&["convert", &model, "-o", out.to_str().unwrap(), "--attention", "knn"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let lines: Vec<&str> = t.lines().filter(|l| l.starts_with("attention ")).collect();
    assert!(!lines.is_empty(), "{t}");
    for l in &lines {
        assert!(l.contains("kept exact:") && l.contains("(symbolic)") && l.contains("min_keys 1024"), "{t}");
    }
    assert!(!t.contains("lower_knn_attention"), "{t}");
    // bad parameters and a bad mode are named
    let o = floe(&["convert", &model, "-o", out.to_str().unwrap(), "--attention", "knn:k=0"]);
    assert!(!o.status.success() && text(&o).contains("`k`"), "{}", text(&o));
    let o = floe(&["convert", &model, "-o", out.to_str().unwrap(), "--attention", "fast"]);
    assert!(!o.status.success() && text(&o).contains("fast") && !text(&o).contains("panicked at"));
    let o = floe(&["convert", "--help"]);
    assert!(text(&o).contains("--attention") && text(&o).contains("k-NN attention"), "{}", text(&o));
}
