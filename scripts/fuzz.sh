#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets/) for SECONDS each (default 60), one after the
# other, and prints the executions and exec/s of each. Exits non-zero on a finding (a crash,
# a failed assertion, an overflow, a timeout or an out-of-memory): the input is saved under
# fuzz/artifacts/<target>/ and `cargo +nightly fuzz run -s none <target> <file>` replays it.
#   scripts/fuzz.sh [SECONDS]
# Environment: FUZZ_TARGETS="a b" (a subset), FUZZ_TARGET_DIR (build directory, default
# fuzz/target), FUZZ_NICE (default 10: the fuzzer yields to everything else on the machine).
#
# Instrumentation: `-s none` (no AddressSanitizer) with debug assertions and overflow checks
# on (cargo-fuzz's default build: release + debug assertions). The targets reach only safe
# Rust (livegate's parsers, rml_rtmp, h264-reader, serde_json, m3u8-rs; the one unsafe code in
# livegate, the libav FFI in transcode/, is not on these paths), so what a finding can be is a
# panic, an integer overflow, a slice out of bounds, a hang or unbounded memory: the checks
# above and libFuzzer's -timeout/-rss_limit_mb catch those. ASan would add memory-error
# detection that safe Rust already guarantees, at 2-3x fewer executions per second.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
export PATH="$HOME/.cargo/bin:$PATH"
target_dir=${FUZZ_TARGET_DIR:-fuzz/target}
nice_level=${FUZZ_NICE:-10}

# Tooling (idempotent): the nightly toolchain cargo-fuzz needs, and cargo-fuzz itself.
if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

fuzz=(cargo +nightly fuzz)
build_flags=(-s none --target-dir "$target_dir")
targets=${FUZZ_TARGETS:-$("${fuzz[@]}" list)}

echo "== building fuzz targets"
build_started=$(date +%s)
nice -n "$nice_level" "${fuzz[@]}" build "${build_flags[@]}"
echo "== fuzz build took $(( $(date +%s) - build_started )) s"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=()
report=()
for t in $targets; do
    echo "== fuzzing $t for $seconds s"
    mkdir -p "fuzz/corpus/$t"
    status=0
    # -timeout: one input taking 10 s is a hang; -rss_limit_mb: 2 GiB is unbounded memory.
    nice -n "$nice_level" "${fuzz[@]}" run "${build_flags[@]}" "$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$logs/$t" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logs/$t" | tail -1)
    line=$(printf '%-20s %12s execs %8s exec/s' "$t" "${execs:-?}" "${rate:-?}")
    if [ "$status" -ne 0 ]; then
        failed+=("$t")
        line="$line  FINDING"
        grep -E 'panicked|SUMMARY|ERROR|Test unit written|artifact_prefix' "$logs/$t" | head -20 || true
        tail -n 30 "$logs/$t"
    fi
    echo "$line"
    report+=("$line")
done

echo "== fuzz summary ($seconds s per target)"
printf '%s\n' "${report[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: findings in ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
