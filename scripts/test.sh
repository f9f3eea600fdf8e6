#!/usr/bin/env bash
# The whole test suite, as CI runs it. Release mode: the simulator runs thousands of seeds and the
# integration tests run real servers, and the core keeps its invariant checks (preconditions) in
# release builds. `swift test` builds with testable imports enabled.
#
# The integration tests (real raftdb processes, timing-sensitive) run on their own after the rest,
# so that the CPU-bound simulator and storage crash tests do not starve the servers they start.
set -euo pipefail
cd "$(dirname "$0")/.."
swift test -c release --skip RaftDBIntegrationTests "$@"
swift test -c release --skip-build --filter RaftDBIntegrationTests "$@"
