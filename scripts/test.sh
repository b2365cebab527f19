#!/usr/bin/env bash
# Command 2: set up and run the whole test suite: formatting, lints, unit and property tests, and
# end-to-end tests with real clients (ffmpeg, ffprobe, hls.js in headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
# This script's own knobs share the server's prefix, and the server refuses a LIVEGATE_* variable
# it does not know: read them, then keep them out of what the tests start.
test_threads=${LIVEGATE_TEST_THREADS:-6}
fuzz_seconds=${LIVEGATE_FUZZ_SECONDS:-10}
unset LIVEGATE_TEST_THREADS LIVEGATE_FUZZ_SECONDS
bash scripts/setup.sh test
export PATH="$HOME/.cargo/bin:$PATH"

echo "== browser test dependencies (npm)"
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
# End-to-end cases mostly wait on real time (ffmpeg -re), so they run several at once.
cargo test --locked -- --test-threads "$test_threads"
echo "== fuzz smoke run"
# Every cargo-fuzz target briefly (LIVEGATE_FUZZ_SECONDS each, 0 skips): a finding fails the run.
# The long runs are scripts/fuzz.sh's job; this catches a parser change that breaks at once.
if [ "$fuzz_seconds" -gt 0 ]; then
  FUZZ_NICE=0 bash scripts/fuzz.sh "$fuzz_seconds"
fi
echo "== all tests passed in $(( $(date +%s) - started )) s"
