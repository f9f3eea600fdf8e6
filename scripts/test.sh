#!/usr/bin/env bash
# The whole test suite, as CI runs it. Release mode: the simulator runs thousands of seeds, and the
# core keeps its invariant checks (preconditions) in release builds.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --build-tests
swift test -c release --skip-build "$@"
