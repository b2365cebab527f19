#!/usr/bin/env bash
# Prints the import graph of src/'s top-level modules and checks it against the layering rules
# (tests/layering.rs): a cycle or an import against the data flow fails.
set -euo pipefail
cd "$(dirname "$0")/.."
LIVEGATE_PRINT_GRAPH=1 cargo test --quiet --test layering -- --nocapture --test-threads 1 \
  top_level_modules 2>&1 | grep -E -- '->|panicked|violations|imports|cycle|test result'
