#!/usr/bin/env bash
# One command for the whole benchmark: quality (both stages, few-shot, seeds), speed/memory ratios, the peer
# comparison where the `adapters` library is installed, and docs/benchmarks.md.
#   bench/run_all.sh            # default configuration (about an hour on an idle 2-core CPU)
#   bench/run_all.sh --quick    # smoke configuration (< ~10 minutes on an idle 2-core CPU)
# Extra arguments go to `python -m bench run` (e.g. --data-root DIR --model ID --targets rte,mrpc --seeds 0,1,2).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
PEER_PY="${PEER_PYTHON:-/tmp/peer/bin/python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # `python -m bench` from this checkout, whatever the caller's cwd

quick=0
for arg in "$@"; do [ "$arg" = "--quick" ] && quick=1; done

"$PY" -m bench run "$@"
if [ "$quick" = 1 ]; then
  # quick: everything under bench/results/quick/, the committed docs/benchmarks.md is left alone
  for command in speed steps latency; do
    "$PY" -m bench "$command" --n 1,4 --warmup 1 --repeats 3 --out bench/results/quick/speed.json
  done
  "$PY" -m bench report --run quick --out bench/results/quick/benchmarks.md --speed bench/results/quick/speed.json
else
  THREADS="${THREADS:-1}"  # one thread per process: stable on a shared 2-core machine; printed with every table
  "$PY" -m bench steps --threads "$THREADS" --repeats 15
  "$PY" -m bench latency --threads "$THREADS" --repeats 15
  "$PY" -m bench speed --threads "$THREADS"
  "$PY" -m bench decoder-speed --threads "$THREADS"
  "$PY" -m bench loop --threads "$THREADS"
  if [ -x "$PEER_PY" ]; then
    "$PEER_PY" -m bench peer --threads "$THREADS" || echo "peer benchmark failed; see bench/results/peer.json"
    "$PY" -m bench peer-score --run default --peer-python "$PEER_PY" || echo "peer score failed (see its message)"
  fi
  "$PY" -m bench report --all   # docs/benchmarks.md and every other committed doc, from their results
fi
