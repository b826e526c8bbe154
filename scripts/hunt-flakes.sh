#!/usr/bin/env bash
# Hunt for tests that fail by chance: run the tests most exposed to timing, processes and randomness
# RUNS times in a row, one of those runs with every core kept busy by another program, and report
# each run's counts and every failure. A test that fails here once is a bug to fix at its cause.
#
#   scripts/hunt-flakes.sh [RUNS] [BUSY_RUN]     (make hunt RUNS=20 BUSY_RUN=20)
#
# RUNS defaults to 20; BUSY_RUN (default: the last run) is the run done under full CPU load; 0 for none.
# HUNT_PYTHON is the interpreter (default .venv/bin/python), HUNT_RUN_TIMEOUT the longest a run may take.
# Offline, set WINE_QUALITY_DATA_DIR to the UCI CSVs first (as for make test).
# Results: build/hunt/summary.txt, one JUnit XML and one log per run. Never run two hunts (or a hunt
# and the test suite) at once: the cleanup tests remove every container of the images' base, and the
# runs would share the cores the figures assume.
set -uo pipefail
cd "$(dirname "$0")/.."

runs="${1:-20}"
busy_run="${2:-$runs}"
python="${HUNT_PYTHON:-.venv/bin/python}"
run_timeout="${HUNT_RUN_TIMEOUT:-1800}"  # seconds: a run that hangs is a failure, not a hunt that never ends
out="build/hunt"
export WORKSHOP_FORBID_SKIPS="${WORKSHOP_FORBID_SKIPS:-1}"  # a skip hides what was not run: count it as a failure
tests=(
    tests/test_llm_api.py tests/test_llm_units.py tests/test_llm_lifecycle.py tests/test_llm_swap_under_load.py
    tests/test_process.py tests/test_cleanup.py
    tests/test_load_tests.py
    tests/test_prometheus.py tests/test_monitoring_integration.py
)
rm -rf "$out" && mkdir -p "$out"
summary="$out/summary.txt"
burners=()

stop_burners() {
    if ((${#burners[@]})); then
        kill "${burners[@]}" 2>/dev/null
        wait "${burners[@]}" 2>/dev/null
    fi
    burners=()
}
trap stop_burners EXIT
trap 'stop_burners; echo "interrupted" | tee -a "$summary"; exit 130' INT TERM

failed_runs=0
for ((run = 1; run <= runs; run++)); do
    load="idle"
    if ((run == busy_run)); then
        load="all $(nproc) cores busy"
        for ((core = 0; core < $(nproc); core++)); do
            "$python" -c "while True: pass" &
            burners+=("$!")
        done
    fi
    timeout -k 30 "$run_timeout" "$python" -m pytest -q -p no:cacheprovider -m "not cluster" \
        --junitxml="$out/run-$run.xml" "${tests[@]}" >"$out/run-$run.log" 2>&1
    code=$?
    stop_burners
    counts=$("$python" - "$out/run-$run.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET

try:
    suite = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError) as error:  # pytest was killed (timeout) or crashed before writing it
    print(f"no test report ({error}); see the run's log")
    raise SystemExit(0)
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
tests, failures, errors, skipped = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
print(f"{tests} tests, {failures + errors} failed, {skipped} skipped")
for case in suite.iter("testcase"):
    if case.find("failure") is not None or case.find("error") is not None:
        print(f"    FAILED {case.get('classname')}::{case.get('name')}")
EOF
)
    ((code == 0)) || ((failed_runs++))
    printf 'run %2d (%s): exit %d, %s\n' "$run" "$load" "$code" "$counts" | tee -a "$summary"
done
echo "$runs runs, $failed_runs with failures; logs in $out/" | tee -a "$summary"
((failed_runs == 0))
