"""Benchmark of the wine service against a minimal app on the same server stack.

``python -m benchmarks.wine_service [--duration 10] [--connections 8] [--repeat 1]
[--model-dir DIR] [--stacks entry-point,uvicorn,...] [--json PATH] [--check]``

The service (``app.wine.api:app``) and a baseline (:mod:`benchmarks.baseline_app`,
which parses the same request schemas and answers a constant) are served by the
same server stack, options and Python, pinned to one core. The stack is the
service's entry point (``python -m app.wine``: uvicorn with httptools behind the
limits of :mod:`app.common.server`) unless ``--stacks`` names others to compare
it with: ``uvicorn`` (plain ``uvicorn APP``, httptools, no limits), ``uvicorn-h11``
(h11 with its size limit, keep-alive timeout and concurrency limit), ``hypercorn``
and ``granian`` (each with its own header timeout and limits; installed apart,
the project does not depend on them). ``wrk``, pinned to the
other core so that the load generator is not what is measured, loads them in
turn, baseline and service back to back so that both see the same machine.

For ``/predict`` (one wine) and ``/predict/batch`` (100 real wines of the
dataset) it reports requests/s, p50 and p99 latency, the ratio to the baseline,
predicted rows/s and server CPU time per request, then the service's memory
after the load, with PASS/FAIL against the targets. It also reports how much of
the two pinned cores other processes used: on a busy machine the figures are
low and noisy, and ``--repeat N`` reports the median of N runs.

Exit code: 0 when the benchmark ran (targets are reported, not asserted), 1 when
``--check`` is given and a target is missed, 2 when something broke (no wrk, no
model, a server that does not start, an error response during the load).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx

from workshop.process import ManagedProcess, ProcessError, free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SERVICE_APP = "app.wine.api:app"
BASELINE_APP = "benchmarks.baseline_app:app"
SERVERS = (("baseline", BASELINE_APP), ("service", SERVICE_APP))
# The limits each compared stack is given, as close to the entry point's defaults as its options allow.
MAX_HEADER_BYTES, HEADER_TIMEOUT_S, IDLE_TIMEOUT_S, MAX_CONNECTIONS = 32_768, 10, 5, 512
# The baseline served by the entry point's code (the service's is `python -m app.wine`).
BASELINE_ON_ENTRY_POINT = (
    "import sys; from app.common.server import main; from app.wine.config import get_settings; "
    f"sys.exit(main({BASELINE_APP!r}, get_settings, sys.argv[1:], prog='baseline'))"
)
STACKS = ("entry-point", "uvicorn", "uvicorn-h11", "hypercorn", "granian")
STACK_PACKAGES = {"hypercorn": "hypercorn", "granian": "granian"}  # not the project's dependencies
BATCH_SIZE = 100
SAMPLE_SEED = 42

PREDICT_RATIO_TARGET = 0.70
BATCH_ROWS_PER_S_TARGET = 50_000
RSS_LIMIT_MB = 250.0

READY_TIMEOUT_S = 60.0
NOISE_WARNING_PCT = 10.0  # other processes' share of a pinned core above which the figures are not trusted
WRK_BUSY_WARNING_PCT = 80.0
INSTALL_HINTS = {
    "wrk": "install it: `apt-get install wrk` on Debian/Ubuntu, `brew install wrk` on macOS",
    "taskset": "install it: `apt-get install util-linux` on Debian/Ubuntu (taskset is Linux-only)",
}
# Every request of a run posts the same body, read once per wrk thread from a file.
LUA_TEMPLATE = """-- POST one JSON body on every request.
local file = assert(io.open(@BODY_PATH@, "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"
"""
TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


class BenchmarkError(RuntimeError):
    """Something broke, so the figures would be wrong; the message says what and what to do."""


@dataclass(frozen=True)
class Endpoint:
    path: str
    rows: int  # wines per request


ENDPOINTS = (Endpoint("/predict", 1), Endpoint("/predict/batch", BATCH_SIZE))


@dataclass(frozen=True)
class Options:
    duration: int
    warmup: int
    repeat: int
    connections: int
    model_dir: Path
    server_cpu: int
    wrk_cpu: int
    stack: str = "entry-point"


@dataclass(frozen=True)
class WrkResult:
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class Run:
    server: str
    endpoint: str
    rows_per_request: int
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    rows_per_s: float
    server_cpu_ms_per_request: float  # barely moved by other processes, unlike requests/s
    server_cpu_pct: float  # of one core
    wrk_cpu_pct: float
    others_server_core_pct: float  # used by other processes on the server's core: near 0 on a quiet machine
    others_wrk_core_pct: float


@dataclass(frozen=True)
class Memory:
    rss_mb: float
    peak_rss_mb: float


@dataclass(frozen=True)
class Target:
    name: str
    value: float
    threshold: float
    passed: bool
    shown: str


@dataclass(frozen=True)
class Server:
    name: str
    process: ManagedProcess
    url: str

    @property
    def pid(self) -> int:
        assert self.process.pid is not None, "the server was never started"
        return self.process.pid


@dataclass(frozen=True)
class Load:
    """What wrk sends to one endpoint."""

    endpoint: Endpoint
    script: Path
    body: bytes


# --- wrk -------------------------------------------------------------------


def require_tools() -> None:
    """Fail before starting anything when a tool is missing, saying how to install it."""
    for tool, hint in INSTALL_HINTS.items():
        if shutil.which(tool) is None:
            raise BenchmarkError(f"`{tool}` is not on PATH; {hint}")


def lua_string(text: str) -> str:
    """A Lua string literal, so any temp-folder path can be embedded in the script."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def write_post_script(body: bytes, folder: Path, name: str) -> Path:
    """The body in a file and a Lua script that posts it: wrk has no option for a POST body."""
    body_path = folder / f"{name}.json"
    body_path.write_bytes(body)
    script = folder / f"{name}.lua"
    script.write_text(LUA_TEMPLATE.replace("@BODY_PATH@", lua_string(str(body_path.resolve()))))
    return script


def to_ms(value: str, unit: str) -> float:
    """wrk prints times with their own unit (``812.00us``, ``1.20ms``, ``2.00s``)."""
    return float(value) * TIME_UNITS_MS[unit]


def parse_wrk(output: str) -> WrkResult:
    """The figures of ``wrk --latency``; raises when wrk reports errors, since they would skew them."""
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if errors and any(int(count) for count in errors.groups()):
        raise BenchmarkError(f"wrk reported socket errors ({errors.group(0)}):\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx and int(non_2xx.group(1)):
        raise BenchmarkError(f"the server answered {non_2xx.group(1)} requests with an error status:\n{output}")
    total = re.search(r"^\s*(\d+) requests in ", output, re.MULTILINE)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
    if not (total and rate and p50 and p99):
        raise BenchmarkError(f"cannot read wrk's output (was it run with --latency?):\n{output}")
    if int(total.group(1)) == 0:
        raise BenchmarkError(f"wrk completed no request:\n{output}")
    return WrkResult(
        requests=int(total.group(1)),
        requests_per_s=float(rate.group(1)),
        p50_ms=to_ms(*p50.groups()),
        p99_ms=to_ms(*p99.groups()),
    )


def children_cpu_seconds() -> float:
    """CPU time of the waited-for children: wrk's own, to show it was not the bottleneck."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(url: str, script: Path, seconds: int, connections: int, cpu: int) -> tuple[WrkResult, float]:
    """One wrk run on its own core; returns its figures and the CPU seconds wrk used."""
    # wrk counts a response slower than its 2 s default as a socket error; on a busy machine a slow
    # response is a figure to report, not a broken server.
    argv = [
        "taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
        "--latency", "-s", str(script), url,
    ]
    before = children_cpu_seconds()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    except subprocess.TimeoutExpired as error:
        raise BenchmarkError(f"wrk did not finish within {seconds + 60} s: {' '.join(argv)}") from error
    used = children_cpu_seconds() - before
    if done.returncode != 0:
        raise BenchmarkError(f"wrk failed with code {done.returncode}: {' '.join(argv)}\n{done.stdout}{done.stderr}")
    return parse_wrk(done.stdout), used


# --- servers ---------------------------------------------------------------


def server_argv(app: str, port: int, cpu: int, stack: str = "entry-point") -> list[str]:
    """The command line of ``stack`` for the service or the baseline, so only the app differs."""
    host, uvicorn = "127.0.0.1", ["-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
                                  "--no-access-log", "--log-level", "warning"]
    if stack == "entry-point":
        start = ["-m", "app.wine"] if app == SERVICE_APP else ["-c", BASELINE_ON_ENTRY_POINT]
        argv = [*start, "--host", host, "--port", str(port)]
    elif stack == "uvicorn":
        argv = uvicorn
    elif stack == "uvicorn-h11":
        argv = [*uvicorn, "--http", "h11", "--h11-max-incomplete-event-size", str(MAX_HEADER_BYTES),
                "--timeout-keep-alive", str(IDLE_TIMEOUT_S), "--limit-concurrency", str(MAX_CONNECTIONS)]
    elif stack == "hypercorn":
        argv = ["-m", "hypercorn", app, "--bind", f"{host}:{port}", "--keep-alive", str(IDLE_TIMEOUT_S),
                "--read-timeout", str(HEADER_TIMEOUT_S), "--log-level", "warning"]
    elif stack == "granian":
        argv = ["-m", "granian", "--interface", "asgi", app, "--host", host, "--port", str(port), "--workers", "1",
                "--runtime-threads", "1", "--http", "1", "--no-ws", "--http1-buffer-size", str(MAX_HEADER_BYTES),
                "--http1-header-read-timeout", str(HEADER_TIMEOUT_S * 1000), "--backpressure", str(MAX_CONNECTIONS),
                "--log-level", "warning"]
    else:
        raise BenchmarkError(f"unknown stack {stack!r}; choose from {', '.join(STACKS)}")
    return ["taskset", "-c", str(cpu), sys.executable, *argv]


def server_env(model_dir: Path) -> dict[str, str]:
    """One inference thread and one OpenMP thread: the server must stay on its one core."""
    return {"WINE_MODEL_DIR": str(model_dir), "WINE_INFERENCE_THREADS": "1", "OMP_NUM_THREADS": "1"}


def start_server(name: str, app: str, options: Options, log_dir: Path) -> tuple[ManagedProcess, str]:
    """Start one pinned server and wait until it is ready to take traffic."""
    port = free_port()
    process = ManagedProcess(
        name, server_argv(app, port, options.server_cpu, options.stack), env=server_env(options.model_dir),
        cwd=PROJECT_ROOT, log_path=log_dir / f"{name}.log",
    )
    process.start()
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_for_http(f"{url}/ready", timeout=READY_TIMEOUT_S)
    except ProcessError:
        process.stop()
        raise
    return process, url


def proc_status_mb(pid: int) -> Memory:
    """VmRSS (now) and VmHWM (peak) of a process; /proc gives them in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    kib = {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmHWM")}
    return Memory(rss_mb=kib["VmRSS"] * 1024 / 1e6, peak_rss_mb=kib["VmHWM"] * 1024 / 1e6)


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a live process, from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def core_busy_seconds(cpu: int) -> float:
    """Busy time of one core, whoever used it (steal included), from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        name, *ticks = line.split()
        if name == f"cpu{cpu}":
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(tick) for tick in ticks[:8])
            return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    raise BenchmarkError(f"CPU {cpu} is not in /proc/stat")


def check_answer(url: str, body: bytes, expected_rows: int | None) -> None:
    """One request by hand before the load, so a rejected body fails with the server's reason."""
    response = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=30.0)
    if response.status_code != 200:
        raise BenchmarkError(f"POST {url} answered {response.status_code}: {response.text[:1000]}")
    if expected_rows is not None:
        payload = response.json()
        answered = len(payload["predictions"]) if "predictions" in payload else int("quality" in payload)
        if answered != expected_rows:
            raise BenchmarkError(f"POST {url} answered {answered} predictions for {expected_rows} wines: {payload}")


# --- the benchmark -----------------------------------------------------------


def sample_wines(count: int) -> list[dict[str, Any]]:
    """Real rows of the dataset (both colours, seeded), as a client would send them."""
    # Imported here: pandas and the data loader are needed only to build the bodies.
    from app.wine.config import Settings
    from app.wine.data import DataError, load_wine_data
    from app.wine.features import FEATURE_NAMES

    try:
        frame = load_wine_data(Settings()).frame
    except DataError as error:
        raise BenchmarkError(f"cannot load the wine data for the request bodies: {error}") from error
    rows = frame.sample(n=count, random_state=SAMPLE_SEED).to_dict("records")
    return [{**{name: float(row[name]) for name in FEATURE_NAMES}, "color": str(row["color"])} for row in rows]


def request_body(endpoint: Endpoint, wines: Sequence[dict[str, Any]]) -> bytes:
    """The JSON body of one request: a wine, or ``{"instances": [...]}`` for a batch."""
    payload: Any = wines[0] if endpoint.rows == 1 else {"instances": list(wines[: endpoint.rows])}
    return json.dumps(payload, separators=(",", ":")).encode()


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the table."""
    print(message, file=sys.stderr, flush=True)


@contextmanager
def running_servers(options: Options, folder: Path) -> Iterator[dict[str, Server]]:
    """The baseline and the service at once on the same core (the idle one costs nothing), stopped on exit."""
    servers: dict[str, Server] = {}
    try:
        for name, app in SERVERS:
            log(f"starting the {name} ({app}, stack {options.stack}) on CPU {options.server_cpu}")
            process, url = start_server(name, app, options, folder)
            servers[name] = Server(name, process, url)
        yield servers
    finally:
        for server in servers.values():
            server.process.stop()


def warm_up(server: Server, load: Load, options: Options) -> None:
    """Check one answer by hand, then load the server unmeasured (lazy imports, caches, allocator)."""
    url = server.url + load.endpoint.path
    check_answer(url, load.body, load.endpoint.rows if server.name == "service" else None)
    log(f"  {server.name} {load.endpoint.path}: warm-up {options.warmup} s")
    run_wrk(url, load.script, options.warmup, options.connections, options.wrk_cpu)


def measure(server: Server, load: Load, options: Options) -> Run:
    """One measured wrk run, with the CPU time the server, wrk and everything else used meanwhile."""
    pid = server.pid
    log(f"  {server.name} {load.endpoint.path}: measuring {options.duration} s")
    cores = (options.server_cpu, options.wrk_cpu)
    cpu_before, cores_before = process_cpu_seconds(pid), [core_busy_seconds(core) for core in cores]
    started = time.perf_counter()
    result, wrk_cpu = run_wrk(
        server.url + load.endpoint.path, load.script, options.duration, options.connections, options.wrk_cpu
    )
    elapsed = time.perf_counter() - started
    server_cpu = process_cpu_seconds(pid) - cpu_before
    server_core, wrk_core = (core_busy_seconds(core) - before for core, before in zip(cores, cores_before, strict=True))
    rows = load.endpoint.rows
    return Run(
        server=server.name, endpoint=load.endpoint.path, rows_per_request=rows, requests=result.requests,
        requests_per_s=result.requests_per_s, p50_ms=result.p50_ms, p99_ms=result.p99_ms,
        rows_per_s=result.requests_per_s * rows, server_cpu_ms_per_request=1000 * server_cpu / result.requests,
        server_cpu_pct=100 * server_cpu / elapsed, wrk_cpu_pct=100 * wrk_cpu / elapsed,
        others_server_core_pct=max(0.0, 100 * (server_core - server_cpu) / elapsed),
        others_wrk_core_pct=max(0.0, 100 * (wrk_core - wrk_cpu) / elapsed),
    )


def measure_all(servers: dict[str, Server], loads: Sequence[Load], options: Options) -> list[Run]:
    """Every endpoint on both servers, baseline and service back to back so they see the same machine."""
    runs = []
    for round_ in range(options.repeat):
        for load in loads:
            for server in servers.values():
                if round_ == 0:
                    warm_up(server, load, options)
                runs.append(measure(server, load, options))
    for server in servers.values():
        if not server.process.running:
            raise BenchmarkError(f"the {server.name} exited during the load. Log:\n{server.process.log_tail()}")
    return runs


def median_runs(runs: Sequence[Run]) -> list[Run]:
    """Per server and endpoint, the run with the median requests/s, so its latencies come from the same run."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.endpoint, run.server), []).append(run)
    chosen = []
    for endpoint in ENDPOINTS:
        for server, _ in reversed(SERVERS):  # the service first: it is what the table is about
            ordered = sorted(groups[endpoint.path, server], key=lambda run: run.requests_per_s)
            chosen.append(ordered[(len(ordered) - 1) // 2])
    return chosen


def evaluate(runs: Sequence[Run], memory: Memory) -> list[Target]:
    """The issue's targets, each with its measured value."""
    figures = {(run.server, run.endpoint): run for run in runs}
    ratio = figures["service", "/predict"].requests_per_s / figures["baseline", "/predict"].requests_per_s
    batch_rows = figures["service", "/predict/batch"].rows_per_s
    return [
        Target(f"/predict requests/s >= {PREDICT_RATIO_TARGET:.0%} of the baseline's", ratio,
               PREDICT_RATIO_TARGET, ratio >= PREDICT_RATIO_TARGET, f"{ratio:.0%}"),
        Target(f"/predict/batch ({BATCH_SIZE} wines) >= {BATCH_ROWS_PER_S_TARGET:,} predicted rows/s on one core",
               batch_rows, BATCH_ROWS_PER_S_TARGET, batch_rows >= BATCH_ROWS_PER_S_TARGET, f"{batch_rows:,.0f} rows/s"),
        Target(f"service peak RSS (VmHWM) < {RSS_LIMIT_MB:.0f} MB", memory.peak_rss_mb, RSS_LIMIT_MB,
               memory.peak_rss_mb < RSS_LIMIT_MB, f"{memory.peak_rss_mb:.1f} MB"),
    ]


def noise_warnings(runs: Sequence[Run]) -> list[str]:
    """Why the figures may not be the service's: a busy machine or a saturated wrk."""
    warnings = []
    others = max(max(run.others_server_core_pct, run.others_wrk_core_pct) for run in runs)
    if others > NOISE_WARNING_PCT:
        warnings.append(
            f"other processes used up to {others:.0f}% of a pinned core during the runs: "
            "the figures are lower and noisier than on a quiet machine; run again when it is idle"
        )
    wrk_busy = max(run.wrk_cpu_pct for run in runs)
    if wrk_busy > WRK_BUSY_WARNING_PCT:
        warnings.append(f"wrk used {wrk_busy:.0f}% of its core: the load generator may be the bottleneck")
    return warnings


def tool_versions() -> dict[str, str]:
    """What produced the figures, for comparing runs across machines and upgrades."""
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False).stdout
    packages = {name: version(name) for name in ("uvicorn", "fastapi", "pydantic", "onnxruntime")}
    return {"python": platform.python_version(), **packages, "wrk": (wrk.splitlines() or ["?"])[0].strip()}


def write_loads(wines: Sequence[dict[str, Any]], folder: Path) -> list[Load]:
    """One body and Lua script per endpoint, in ``folder``."""
    loads = []
    for endpoint in ENDPOINTS:
        body = request_body(endpoint, wines)
        loads.append(Load(endpoint, write_post_script(body, folder, endpoint.path.strip("/").replace("/", "-")), body))
    return loads


def run_benchmark(options: Options) -> dict[str, Any]:
    """Both servers, both endpoints; returns every figure (what ``--json`` writes)."""
    require_tools()
    check_model_dir(options.model_dir)
    wines = sample_wines(BATCH_SIZE)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wine-bench-") as temp:
        loads = write_loads(wines, Path(temp))
        with running_servers(options, Path(temp)) as servers:
            model_version = httpx.get(f"{servers['service'].url}/ready", timeout=10.0).json()["model_version"]
            all_runs = measure_all(servers, loads, options)
            memory = {name: proc_status_mb(server.pid) for name, server in servers.items()}
    runs = median_runs(all_runs)
    return {
        "settings": {
            "duration_s": options.duration, "warmup_s": options.warmup, "repeat": options.repeat,
            "stack": options.stack, "argv": server_argv(SERVICE_APP, 0, options.server_cpu, options.stack)[3:],
            "connections": options.connections, "wrk_threads": 1, "server_cpu": options.server_cpu,
            "wrk_cpu": options.wrk_cpu, "batch_size": BATCH_SIZE,
            "body_bytes": {load.endpoint.path: len(load.body) for load in loads},
            "model_version": model_version, **tool_versions(),
        },
        "runs": [asdict(run) for run in runs],
        "all_runs": [asdict(run) for run in all_runs],
        "memory": {name: asdict(figures) for name, figures in memory.items()},
        "targets": [asdict(target) for target in evaluate(runs, memory["service"])],
        "warnings": noise_warnings(all_runs),
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


# --- report and command line ---------------------------------------------------


def format_report(figures: dict[str, Any]) -> str:
    """The table a person reads: one line per server and endpoint, then memory and targets."""
    s = figures["settings"]
    median = "" if s["repeat"] == 1 else f", median of {s['repeat']} runs"
    lines = [
        f"Wine service benchmark: {s['duration_s']} s per run after {s['warmup_s']} s warm-up{median}, "
        f"{s['connections']} connections; server on CPU {s['server_cpu']}, wrk (1 thread) on CPU {s['wrk_cpu']}",
        f"stack {s.get('stack', 'entry-point')}: {' '.join(s.get('argv', []))}",
        f"model {s['model_version']}; Python {s['python']}, uvicorn {s['uvicorn']}, fastapi {s['fastapi']}, "
        f"pydantic {s['pydantic']}, onnxruntime {s['onnxruntime']}; {s['wrk']}",
        "",
        f"{'endpoint':<16}{'server':<10}{'requests/s':>12}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'vs baseline':>13}{'rows/s':>10}{'CPU ms/req':>12}{'server CPU':>12}{'wrk CPU':>9}{'others':>14}",
    ]
    baseline = {run["endpoint"]: run for run in figures["runs"] if run["server"] == "baseline"}
    for run in figures["runs"]:
        ratio = f"{run['requests_per_s'] / baseline[run['endpoint']]['requests_per_s']:.0%}"
        lines.append(
            f"{run['endpoint']:<16}{run['server']:<10}{run['requests_per_s']:>12,.1f}{run['p50_ms']:>9.2f}"
            f"{run['p99_ms']:>9.2f}{ratio if run['server'] == 'service' else '':>13}{run['rows_per_s']:>10,.0f}"
            f"{run['server_cpu_ms_per_request']:>12.3f}{run['server_cpu_pct']:>11.0f}%{run['wrk_cpu_pct']:>8.0f}%"
            f"{run['others_server_core_pct']:>8.0f}% /{run['others_wrk_core_pct']:>3.0f}%"
        )
    memory = figures["memory"]
    lines += [
        "CPU ms/req: server CPU time per request. CPU columns: share of one core used by the server, by wrk, "
        "and by other processes on the server's / wrk's core (near 0% on a quiet machine).",
        "",
        "Memory after the load (MB = 10^6 bytes):",
        *(
            f"  {server:<10}VmRSS {memory[server]['rss_mb']:7.1f} MB   "
            f"VmHWM (peak) {memory[server]['peak_rss_mb']:7.1f} MB"
            for server in ("service", "baseline")
        ),
        "",
        "Targets:",
    ]
    lines += [
        f"  {'PASS' if target['passed'] else 'FAIL'}  {target['name']}: {target['shown']}"
        for target in figures["targets"]
    ]
    lines += [f"WARNING: {warning}" for warning in figures["warnings"]]
    lines.append(f"\n(took {figures['elapsed_s']:.0f} s)")
    return "\n".join(lines)


def format_comparison(stacks: Sequence[dict[str, Any]]) -> str:
    """The service on each stack side by side: requests/s and p50/p99 per endpoint, peak memory."""
    lines = ["Stacks compared (the service; baseline ratios in each stack's table above):",
             f"{'stack':<14}{'endpoint':<16}{'requests/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'vs entry-point':>16}"
             f"{'peak RSS MB':>13}"]
    reference = {run["endpoint"]: run["requests_per_s"] for run in stacks[0]["runs"] if run["server"] == "service"}
    for figures in stacks:
        for run in (run for run in figures["runs"] if run["server"] == "service"):
            lines.append(
                f"{figures['settings']['stack']:<14}{run['endpoint']:<16}{run['requests_per_s']:>12,.1f}"
                f"{run['p50_ms']:>9.2f}{run['p99_ms']:>9.2f}{run['requests_per_s'] / reference[run['endpoint']]:>16.0%}"
                f"{figures['memory']['service']['peak_rss_mb']:>13.1f}"
            )
    return "\n".join(lines)


def require_stack(stack: str) -> None:
    """The compared servers the project does not depend on must be installed by hand."""
    package = STACK_PACKAGES.get(stack)
    if package is not None and importlib.util.find_spec(package) is None:
        raise BenchmarkError(f"stack {stack} needs {package}, which the project does not install: "
                             f"`pip install {package}` to compare it")


def stack_list(text: str) -> list[str]:
    """argparse type: a comma-separated list of known stacks."""
    stacks = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in stacks if name not in STACKS]
    if unknown or not stacks:
        raise argparse.ArgumentTypeError(f"unknown stack(s) {unknown}; choose from {', '.join(STACKS)}")
    return stacks


def check_model_dir(model_dir: Path) -> None:
    """Refuse early, with the fix, rather than wait for a service that will never be ready."""
    if not (model_dir / "model_card.json").is_file():
        raise BenchmarkError(
            f"no model in {model_dir} (model_card.json is missing): train one with "
            "`python -m training` (it writes artifacts/wine) or pass --model-dir"
        )


def default_cpus() -> tuple[int, int]:
    """Two distinct cores this process may use: one for the server, one for wrk."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise BenchmarkError(f"the benchmark needs 2 CPU cores (server and wrk apart); this process may use {cpus}")
    return cpus[0], cpus[1]


def positive_int(text: str) -> int:
    """argparse type: durations and connection counts start at 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.wine_service", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=positive_int, default=10, help="seconds per measured run (default 10)")
    parser.add_argument("--warmup", type=positive_int, default=2,
                        help="seconds of warm-up per server and endpoint, before measuring (default 2)")
    parser.add_argument("--repeat", type=positive_int, default=1,
                        help="measured runs per server and endpoint; the median is reported (default 1)")
    parser.add_argument("--connections", type=positive_int, default=8, help="concurrent connections (default 8)")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="model folder to serve (default: artifacts/wine of the project)")
    parser.add_argument("--stacks", type=stack_list, default=["entry-point"], metavar="NAMES",
                        help=f"server stacks to run on, comma-separated, the first the reference: {', '.join(STACKS)} "
                        "(default entry-point: python -m app.wine)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="also write the figures as JSON (with several stacks: {\"stacks\": [figures, ...]})")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    model_dir = (args.model_dir or PROJECT_ROOT / "artifacts" / "wine").resolve()
    try:
        server_cpu, wrk_cpu = default_cpus()
        for stack in args.stacks:
            require_stack(stack)
        stacks = [
            run_benchmark(Options(args.duration, args.warmup, args.repeat, args.connections, model_dir, server_cpu,
                                  wrk_cpu, stack))
            for stack in args.stacks
        ]
    except (BenchmarkError, ProcessError) as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 2
    print("\n\n".join(format_report(figures) for figures in stacks))
    if len(stacks) > 1:
        print("\n" + format_comparison(stacks))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        written = stacks[0] if len(stacks) == 1 else {"stacks": stacks}
        args.json.write_text(json.dumps(written, indent=2) + "\n")
    missed = [target for target in stacks[0]["targets"] if not target["passed"]]
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
