#!/usr/bin/env bash
# targets/cross.sh PRESET build|test|check-run [--runtime-only] [--profile P] [--extra-cpu CPU]
#
# Cross-builds floe for a board preset (see `floe targets`) and runs its tests under
# qemu-user, from an x86_64 Debian/Ubuntu machine. Installs what it needs the first
# time (rustup target, Debian's cross gcc + libc, qemu-user); later runs skip that.
#
#   MODE build      release `floe` for the preset; prints the binary's path and a
#                   stripped copy ready to copy to the board (dist/PRESET/floe).
#                   --runtime-only: no ONNX importer (runs .floe files), built with
#                   the size-optimised `release-small` profile.
#   MODE test       the floe-kernels and floe-engine test suites for the preset's
#                   triple (profile cross-test), run under qemu with the preset's
#                   CPU; prints the GEMM micro-kernel picked and those compared
#                   against the generic one.
#   MODE check-run  `build`, then `floe run examples/models/keyword_cnn.onnx --dim
#                   T=100` under qemu and natively; every output value must agree
#                   within 1e-5 (and the board's output must match onnxruntime's
#                   reference output for the shipped input within 1e-4).
#   --profile P     build/check-run with cargo profile P instead of release (CI uses
#                   cross-test, which reuses the test build: the release build with
#                   LTO takes ~10 minutes on 2 cores).
#   --extra-cpu CPU test: also run the floe-kernels k-NN tests (the same build) under
#                   qemu's CPU, which must have an int8 dot product (checked), e.g.
#                   cortex-a76 for the Pi 4 build on a Pi 5: its `sdot` path is
#                   picked at run time, so the preset's CPU never runs it.
#
# Preset data (triple, rustflags, qemu CPU, cross tools) comes from floe-targets
# (targets/src/lib.rs) via its `floe-preset` binary: this script holds no copy.
# Respects CARGO_TARGET_DIR (default: target/) and appends the preset's flags to
# RUSTFLAGS. FLOE_CROSS_NO_INSTALL=1 skips the installation step.
set -euo pipefail

usage() { sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 2 ] || usage
PRESET=$1 MODE=$2
shift 2
RUNTIME_ONLY=0 PROFILE="" EXTRA_CPU=""
while [ $# -gt 0 ]; do
  case "$1" in
    --runtime-only) RUNTIME_ONLY=1; shift ;;
    --profile) [ $# -ge 2 ] || usage; PROFILE=$2; shift 2 ;;
    --extra-cpu) [ $# -ge 2 ] || usage; EXTRA_CPU=$2; shift 2 ;;
    *) echo "cross.sh: unknown argument '$1'" >&2; usage ;;
  esac
done
case "$MODE" in build|test|check-run) ;; *) echo "cross.sh: unknown mode '$MODE'" >&2; usage ;; esac
[ "$MODE" = build ] || [ "$RUNTIME_ONLY" = 0 ] || { echo "cross.sh: --runtime-only is for build" >&2; exit 2; }
[ "$MODE" = test ] || [ -z "$EXTRA_CPU" ] || { echo "cross.sh: --extra-cpu is for test" >&2; exit 2; }

cd "$(dirname "$0")/.."
ROOT=$(pwd)
T0=$(date +%s)
log() { printf '[cross %s %4ss] %s\n' "$PRESET" "$(( $(date +%s) - T0 ))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v cargo >/dev/null || die "cargo not found (install Rust with rustup: https://rustup.rs)"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
export CARGO_TARGET_DIR=$TARGET_DIR
HOST=$(rustc -vV | sed -n 's/^host: //p')

# ------------------------------------------------------------ preset data ---
# Built for the host, before the preset's RUSTFLAGS are set.
PRESET_ENV=$(cargo run -q -p floe-targets --bin floe-preset -- "$PRESET") || die "cannot read preset '$PRESET'"
eval "$PRESET_ENV"
CROSS=0
[ "$FLOE_TRIPLE" != "$HOST" ] && CROSS=1
[ "$CROSS" = 0 ] || [ -n "$FLOE_LINKER" ] || die "no cross toolchain known for $FLOE_TRIPLE from $HOST"

# --------------------------------------------------------------- install ----
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root to run: $*"; fi
}
deb_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

QEMU_BIN=""
find_qemu() { QEMU_BIN=$(command -v "$FLOE_QEMU-static" || command -v "$FLOE_QEMU" || true); }

install_tools() {
  if ! rustup target list --installed 2>/dev/null | grep -qx "$FLOE_TRIPLE"; then
    command -v rustup >/dev/null || die "rustup not found; install the Rust std for $FLOE_TRIPLE yourself"
    log "rustup target add $FLOE_TRIPLE"
    rustup target add "$FLOE_TRIPLE" >/dev/null 2>&1 || die "rustup target add $FLOE_TRIPLE failed"
  fi
  local need=() p
  for p in $FLOE_DEB_PACKAGES; do deb_installed "$p" || need+=("$p"); done
  find_qemu
  [ -n "$QEMU_BIN" ] || need+=(qemu-user-static)
  if [ ${#need[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || die "install these (or your distribution's equivalents): ${need[*]}"
    log "apt-get install ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq >/dev/null
    if ! as_root apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; then
      # Some releases ship only the dynamically linked qemu-user.
      need=("${need[@]/qemu-user-static/qemu-user}")
      as_root apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || die "apt-get install failed"
    fi
    find_qemu
  fi
  [ -n "$QEMU_BIN" ] || die "no $FLOE_QEMU after installing qemu-user"
  command -v "$FLOE_LINKER" >/dev/null || die "$FLOE_LINKER missing after installation"
}

if [ "$CROSS" = 1 ]; then
  if [ "${FLOE_CROSS_NO_INSTALL:-0}" = 1 ]; then find_qemu; else install_tools; fi
  TRIPLE_VAR=$(echo "$FLOE_TRIPLE" | tr 'a-z-' 'A-Z_')
  export "CARGO_TARGET_${TRIPLE_VAR}_LINKER=$FLOE_LINKER"
  export "CARGO_TARGET_${TRIPLE_VAR}_RUNNER=$QEMU_BIN -cpu $FLOE_QEMU_CPU -L $FLOE_SYSROOT"
  export "CC_${FLOE_TRIPLE//-/_}=$FLOE_LINKER" "AR_${FLOE_TRIPLE//-/_}=$FLOE_AR"
  STRIP=$FLOE_STRIP
  RUN=("$QEMU_BIN" -cpu "$FLOE_QEMU_CPU" -L "$FLOE_SYSROOT")
else
  STRIP=strip
  RUN=()
  # A native preset needs the CPU features it compiles in.
  for f in $FLOE_FEATURES; do
    grep -qw "$f" /proc/cpuinfo || die "$PRESET assumes the CPU feature '$f', which this machine lacks"
  done
fi
# With --target, RUSTFLAGS apply to the target's crates only (not build scripts).
export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }$FLOE_RUSTFLAGS"
log "triple $FLOE_TRIPLE, kernels $FLOE_KERNELS, RUSTFLAGS='$RUSTFLAGS'${RUN:+, runner '${RUN[*]}'}"

# ----------------------------------------------------------------- build ----
BIN=""
build() {
  local profile=${PROFILE:-release} features=() suffix=""
  if [ "$RUNTIME_ONLY" = 1 ]; then profile=${PROFILE:-release-small} features=(--no-default-features); suffix=-runtime; fi
  [ "$profile" = release ] || [ "$profile" = release-small ] || suffix=$suffix-$profile
  local t=$(date +%s)
  cargo build -q -p floe --profile "$profile" "${features[@]}" --target "$FLOE_TRIPLE"
  local dir=$profile
  [ "$profile" = dev ] && dir=debug
  BIN=$TARGET_DIR/$FLOE_TRIPLE/$dir/floe
  local dist=$TARGET_DIR/dist/$PRESET$suffix
  mkdir -p "$dist"
  "$STRIP" -o "$dist/floe" "$BIN"
  local size; size=$(stat -c %s "$dist/floe")
  log "built in $(( $(date +%s) - t )) s"
  echo "binary:   $BIN ($(stat -c %s "$BIN") bytes)"
  echo "stripped: $dist/floe ($size bytes, $(awk -v s="$size" 'BEGIN { printf "%.2f", s / 1048576 }') MiB)"
}

# ------------------------------------------------------------------ test ----
run_tests() {
  local t=$(date +%s) log_file=$TARGET_DIR/cross-test-$PRESET.log status=0
  log "cargo test -p floe-kernels -p floe-engine --target $FLOE_TRIPLE --profile cross-test (log: $log_file)"
  # --no-fail-fast: one failing suite must not hide the others' results.
  cargo test -p floe-kernels -p floe-engine --target "$FLOE_TRIPLE" --profile cross-test --no-fail-fast \
    >"$log_file" 2>&1 || status=$?
  grep -E '^(test result|     Running|   Doc-tests)|FAILED|panicked|^error' "$log_file" || true
  # The kernel choice and the ISA-vs-generic comparison, shown (the build is reused).
  cargo test -q -p floe-kernels --target "$FLOE_TRIPLE" --profile cross-test --test gemm_isa -- --nocapture 2>&1 \
    | grep -E 'gemm micro-kernel|compared' || status=${status/#0/1}
  [ "$status" = 0 ] || die "tests failed (exit $status; full log: $log_file)"
  local passed; passed=$(awk '/^test result:/ { s += $4 } END { print s + 0 }' "$log_file")
  log "tests: $passed passed under ${RUN[*]:-native} in $(( $(date +%s) - t )) s"
  if [ -n "$EXTRA_CPU" ]; then
    [ "$CROSS" = 1 ] || die "--extra-cpu needs a cross preset (qemu)"
    local xlog=$TARGET_DIR/cross-test-$PRESET-$EXTRA_CPU.log xstatus=0
    log "k-NN kernel tests under qemu -cpu $EXTRA_CPU, same build (log: $xlog)"
    env "CARGO_TARGET_${TRIPLE_VAR}_RUNNER=$QEMU_BIN -cpu $EXTRA_CPU -L $FLOE_SYSROOT" FLOE_EXPECT_INT8=1 \
      cargo test -p floe-kernels --lib --target "$FLOE_TRIPLE" --profile cross-test knn >"$xlog" 2>&1 \
      || xstatus=$?
    grep -E '^test result|FAILED|panicked|^error' "$xlog" || true
    [ "$xstatus" = 0 ] || die "k-NN kernel tests failed under -cpu $EXTRA_CPU (full log: $xlog)"
  fi
}

# ------------------------------------------------------------- check-run ----
# Prints the float32 values of a .npy file (little-endian '<f4', format 1.0), one a line.
npy_values() {
  local f=$1 hlen
  head -c 128 "$f" | grep -q "'descr': '<f4'" || die "$f is not a little-endian float32 .npy"
  hlen=$(od -An -tu2 -j8 -N2 "$f" | tr -d ' ')
  od -An -v -tf4 -j $((10 + hlen)) "$f" | tr -s ' ' '\n' | sed '/^$/d'
}

# compare A.npy B.npy TOL LABEL: |a - b| <= TOL * max(1, |b|) for every value.
compare_npy() {
  paste <(npy_values "$1") <(npy_values "$2") | awk -v tol="$3" -v label="$4" '
    function abs(x) { return x < 0 ? -x : x }
    NF != 2 { bad = "length differs"; exit }
    { d = abs($1 - $2); s = abs($2) > 1 ? abs($2) : 1; if (d / s > worst) worst = d / s; n++ }
    END {
      if (bad != "" || n == 0) { printf "%s: %s\n", label, bad != "" ? bad : "no values"; exit 1 }
      printf "%s: %d values, max scaled difference %.3g (tolerance %g)\n", label, n, worst, tol
      exit worst <= tol ? 0 : 1
    }'
}

check_run() {
  build
  local model=examples/models/keyword_cnn.onnx out=$TARGET_DIR/check-run-$PRESET
  rm -rf "$out"
  log "reference: floe for the host ($HOST, dev profile)"
  ( unset RUSTFLAGS; cargo build -q -p floe )
  local host_floe=$TARGET_DIR/debug/floe
  "$host_floe" run "$model" --dim T=100 --output-dir "$out/host" >/dev/null
  log "floe run $model --dim T=100 under ${RUN[*]:-native}"
  "${RUN[@]}" "$BIN" run "$model" --dim T=100 --output-dir "$out/board" | sed 's/^/  /'
  local f ok=1
  for f in "$out"/host/*.npy; do
    compare_npy "$out/board/$(basename "$f")" "$f" 1e-5 "$(basename "$f" .npy) vs $HOST" || ok=0
  done
  # The shipped input, against onnxruntime's output for it (an independent reference).
  "${RUN[@]}" "$BIN" run "$model" --input mel=examples/models/keyword_cnn/input_0_mel.npy \
    --output-dir "$out/board-ref" >/dev/null
  compare_npy "$out/board-ref/logits.npy" examples/models/keyword_cnn/output_0_logits.npy 1e-4 \
    "logits vs onnxruntime" || ok=0
  [ "$ok" = 1 ] || die "outputs differ"
}

case "$MODE" in
  build) build ;;
  test) run_tests ;;
  check-run) check_run ;;
esac
log "$MODE done in $(( $(date +%s) - T0 )) s"
