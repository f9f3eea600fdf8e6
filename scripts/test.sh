#!/usr/bin/env bash
# The whole test suite, as CI runs it. Release mode: the simulator runs thousands of seeds and the
# integration tests run real servers, and the core keeps its invariant checks (preconditions) in
# release builds. `swift test` builds with testable imports enabled.
set -euo pipefail
cd "$(dirname "$0")/.."
swift test -c release "$@"
