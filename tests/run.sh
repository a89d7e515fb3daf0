#!/usr/bin/env bash
# Runs every test: unit test binaries (build/tests/test_*), then integration tests
# (tests/integration/test_*), each against real aqd processes and a real FUSE mount.
# Ends with "N passed, N failed"; exits non-zero if anything failed or nothing ran.
# Usage: tests/run.sh [PATTERN]   (runs only tests whose name contains PATTERN)
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
export AQ_ROOT=$ROOT PATH="$ROOT/bin:$PATH" PYTHONPATH="$ROOT/python:$ROOT/tests/integration${PYTHONPATH:+:$PYTHONPATH}"
PY=/usr/bin/python3
pattern=${1:-}
passed=0 failed=0 failures=()
limit=${AQ_TEST_LIMIT_S:-900}   # seconds one test file may take
logdir=$(mktemp -d /tmp/aq-test-logs.XXXXXX)

run_one() { # name, command...
  local name=$1; shift
  [[ -n $pattern && $name != *"$pattern"* ]] && return
  local log="$logdir/${name//\//_}.log" start=$SECONDS
  printf '%-44s ' "$name"
  # the test runs in its own process group; past its time, tests/hang_report.sh says
  # where it hangs and frees it (see there why plain `timeout` cannot)
  : >"$log"
  setsid "$@" >>"$log" 2>&1 &  # appends, as the report does
  local pid=$! rc show=40
  while kill -0 "$pid" 2>/dev/null && ((SECONDS - start < limit)); do sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "tests/run.sh: no end after ${limit}s; what hangs:" >>"$log"
    bash tests/hang_report.sh "$pid" >>"$log" 2>&1
    kill -9 -- "-$pid" 2>/dev/null
    show=2000
    { for _ in {1..120}; do kill -0 "$pid" || break; sleep 0.5; done; } 2>/dev/null  # and bash's "Killed" notice
  fi
  if kill -0 "$pid" 2>/dev/null; then
    echo "tests/run.sh: pid $pid does not end even now; going on without it" >>"$log"; rc=124
  else
    wait "$pid" 2>/dev/null; rc=$?
  fi
  if ((rc == 0)); then
    passed=$((passed + 1)); echo "ok ($((SECONDS - start))s)"
  else
    failed=$((failed + 1)); failures+=("$name"); echo "FAIL ($((SECONDS - start))s)"
    tail -n "$show" "$log" | sed 's/^/    | /'
  fi
}

for t in build/tests/test_*; do
  [[ -x $t ]] && run_one "unit/$(basename "$t")" "$t"
done
for t in tests/integration/test_*; do
  case $t in
    *.py) run_one "integration/$(basename "$t")" "$PY" "$t" ;;
    *.sh) run_one "integration/$(basename "$t")" bash "$t" ;;
  esac
done

echo
if ((failed)); then echo "failed: ${failures[*]}"; echo "logs in $logdir"; else rm -rf "$logdir"; fi
echo "$passed passed, $failed failed"
((failed == 0 && passed > 0))
