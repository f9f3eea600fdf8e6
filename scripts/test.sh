#!/usr/bin/env bash
# The whole test suite, as CI runs it. Release mode: the simulator runs thousands of seeds and the
# integration tests run real servers, and the core keeps its invariant checks (preconditions) in
# release builds. `swift test` builds with testable imports enabled.
#
# 1. Unit, scenario, simulator, storage crash and checker tests.
# 2. The process-level integration tests, on their own (so that the CPU-bound suites above do not
#    starve the servers they start).
# 3. Jepsen-style verification of a real 3-node cluster (raftctl verify): 60 seconds of kill -9,
#    SIGSTOP and partitions with linearizable reads and compare-and-set, which must pass; then a run
#    reading `stale` from any node under partitions, which must be caught as non-linearizable.
#    Skipped when arguments (test filters) are given.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
swift test -c release --skip RaftDBIntegrationTests "$@"
swift test -c release --skip-build --filter RaftDBIntegrationTests "$@"
if [ "$#" -eq 0 ]; then
  swift build -c release --product raftctl
  swift build -c release --product raftdb
  seed="${RAFTDB_VERIFY_SEED:-$(( (RANDOM << 15) | RANDOM ))}"
  echo "== raftctl verify (seed $seed; replay with RAFTDB_VERIFY_SEED=$seed)"
  .build/release/raftctl verify --duration 60 --seed "$seed" --faults kill,pause,partition \
    --level consistent --dir .build/verify/positive --first-port 21000
  echo "== raftctl verify, negative run: stale reads from any node must be caught"
  .build/release/raftctl verify --duration 30 --seed "$seed" --faults partition,pause \
    --level stale --read-any-node --expect-violation --dir .build/verify/negative --first-port 21300
fi
