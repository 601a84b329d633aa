#!/usr/bin/env bash
# Builds every fuzz target once and runs each for a bounded time; exits non-zero when one finds a
# crash (a panic, a failed assertion, a timeout or running out of memory). The input that did it
# is saved in fuzz/artifacts/<target>/; replay it with
#   cargo fuzz run -s none --dev <target> fuzz/artifacts/<target>/<file>
#
#   bash fuzz/run.sh [target...]     (all targets by default; `cargo fuzz list` names them)
#   FUZZ_SECONDS   seconds per target (default 30)
#   FUZZ_BUILD     dev (default) or release: release runs 10-30 times more inputs per second but
#                  takes over twice the CPU time to build; worth it for long local runs.
#
# Inputs that reach new code are added to fuzz/corpus/<target>/ and kept locally for the next
# run; only the committed seeds (seed-*) are tracked by git (see fuzz/.gitignore).
#
# Stable Rust is enough: `-s none` builds without a sanitizer, and AddressSanitizer (cargo fuzz's
# default) is the part that needs a nightly compiler. portier forbids unsafe code, so the
# sanitizer would only watch the dependencies; libFuzzer still finds panics, failed assertions,
# overflows (debug assertions are on), timeouts and memory blow-ups without it.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-30}"
case "${FUZZ_BUILD:-dev}" in
  dev) mode=(--dev) ;;
  release) mode=(--release) ;;
  *) echo "FUZZ_BUILD must be dev or release" >&2; exit 2 ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  # --debug: it is only the driver, and a debug build of it compiles in about half the time.
  cargo install cargo-fuzz --locked --debug
fi

echo "== building the fuzz targets (${FUZZ_BUILD:-dev})"
cargo fuzz build -s none "${mode[@]}"

if [ "$#" -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi
failed=()
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for target in "${targets[@]}"; do
  echo "== fuzzing $target for ${seconds}s"
  mkdir -p "corpus/$target"
  # -timeout: one input taking over 10 s is a finding (a hang), not something to wait out.
  if ! cargo fuzz run -s none "${mode[@]}" "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 2>"$log"; then
    failed+=("$target")
    # libFuzzer's output is long; show the end, where the panic message and the input are.
    tail -n 60 "$log" >&2
  else
    grep -E 'DONE|^stat::(number_of_executed_units|new_units_added)' "$log" || true
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzzing found crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "== fuzzing: no crash in ${targets[*]}"
