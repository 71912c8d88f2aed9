#!/usr/bin/env bash
# Coverage-guided fuzzing of ringkv's decoders with cargo-fuzz (libFuzzer) on the stable
# toolchain (--sanitizer none: AddressSanitizer needs nightly's -Zsanitizer; safe Rust
# needs it little, and panics, overflow checks and debug assertions still fire).
#
#   tools/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 30 s, every target)
#
# Targets: frame resp wal snapshot (bodies in crates/fuzz/src/lib.rs). Each target starts
# from its committed corpus fuzz/corpus/<target>/, which is only read: new inputs go to
# fuzz/target/new-corpus/<target>/ (to add some to the committed corpus, minimise them with
# `cargo fuzz cmin` or pick a few by hand). Crash inputs are written to
# fuzz/artifacts/<target>/; reproduce one with
#   cargo fuzz run --sanitizer none <target> fuzz/artifacts/<target>/crash-...
# Exits non-zero if any target crashed, or if cargo-fuzz is missing (it is not skipped:
# install it with `cargo install --locked cargo-fuzz`). Prints executions per target.
# FUZZ_ARGS adds libFuzzer options, e.g. FUZZ_ARGS="-max_len=140000" (default: 4096 bytes, or
# the largest corpus file) to reach the 64 KiB inline and count-line limits of RESP.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET="${1:-30}"
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(frame resp wal snapshot)
fi
case "$SECONDS_PER_TARGET" in
  '' | *[!0-9]*)
    echo "fuzz.sh: seconds per target must be a whole number, got '$SECONDS_PER_TARGET'" >&2
    exit 2
    ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: cargo-fuzz is not installed; install it with: cargo install --locked cargo-fuzz" >&2
  exit 1
fi

# Build flags shared by the build and the runs (a different flag would rebuild).
FUZZ_FLAGS=(--sanitizer none)
# A hung input fails after this many seconds; a run may not use more memory than this.
TIMEOUT_S=10
RSS_LIMIT_MB=2048
EXTRA_ARGS=()
if [ -n "${FUZZ_ARGS:-}" ]; then
  read -r -a EXTRA_ARGS <<<"$FUZZ_ARGS"
fi

echo "== cargo fuzz build (${FUZZ_FLAGS[*]})"
build_start=$(date +%s)
cargo fuzz build "${FUZZ_FLAGS[@]}"
echo "   built in $(($(date +%s) - build_start)) s"

failed=()
summary=()
for t in "${TARGETS[@]}"; do
  corpus="fuzz/corpus/$t"
  if [ ! -d "$corpus" ] || [ -z "$(ls -A "$corpus")" ]; then
    echo "fuzz.sh: corpus $corpus is missing or empty" >&2
    exit 1
  fi
  work="fuzz/target/new-corpus/$t"
  artifacts="fuzz/artifacts/$t"
  mkdir -p "$work" "$artifacts"
  log="fuzz/target/fuzz-$t.log"
  echo "== fuzzing $t for ${SECONDS_PER_TARGET} s (log: $log)"
  status=0
  # The first corpus directory receives new inputs; the committed one is only read.
  cargo fuzz run "${FUZZ_FLAGS[@]}" "$t" "$work" "$corpus" -- \
    -max_total_time="$SECONDS_PER_TARGET" -timeout="$TIMEOUT_S" -rss_limit_mb="$RSS_LIMIT_MB" \
    -print_final_stats=1 "${EXTRA_ARGS[@]}" >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
  line="$t: ${execs:-?} executions, ${rate:-?} exec/s, ${cov:-cov: ?}, exit $status"
  echo "   $line"
  summary+=("$line")
  if [ "$status" -ne 0 ]; then
    tail -40 "$log" >&2
    failed+=("$t")
  fi
done

echo "== fuzzing summary (${SECONDS_PER_TARGET} s per target)"
printf '   %s\n' "${summary[@]}"
if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz.sh: crash or failure in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
  exit 1
fi
