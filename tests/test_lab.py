"""make lab: starts as root too (containers, classroom VMs), and without the "Jupyter news?" prompt."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import jsonschema
import pytest
from jupyterlab.commands import get_app_dir
from jupyterlab.labapp import LabApp
from jupyterlab_server.settings_utils import _get_overrides

from tests.conftest import PROJECT_ROOT
from workshop.process import ManagedProcess, free_port

OVERRIDES = PROJECT_ROOT / "jupyterlab-settings" / "overrides.json"
NOTIFICATION = "@jupyterlab/apputils-extension:notification"


def _make_lab_commands(user_id: int) -> list[str]:
    """What ``make lab`` would run for a user with ``user_id`` (make -n: printed, not run)."""
    done = subprocess.run(["make", "--no-print-directory", "-n", "lab", f"LAB_USER_ID={user_id}"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.splitlines()


def _jupyter_lab_line(user_id: int) -> str:
    (line,) = [line for line in _make_lab_commands(user_id) if "/jupyter lab" in line]
    return line


def test_as_root_make_lab_allows_root():
    assert _jupyter_lab_line(0).split()[1:] == ["lab", "--notebook-dir=lab", "--allow-root"]


def test_as_any_other_user_it_does_not():
    assert _jupyter_lab_line(1000).split()[1:] == ["lab", "--notebook-dir=lab"]


def test_make_lab_puts_the_workshops_settings_where_the_venvs_jupyterlab_reads_its_defaults():
    """JupyterLab's app settings folder is in its environment (sys.prefix): for make's venv, .venv/."""
    assert Path(LabApp().app_settings_dir) == Path(get_app_dir()) / "settings"
    assert Path(get_app_dir()) == Path(sys.prefix) / "share" / "jupyter" / "lab"
    commands = "\n".join(_make_lab_commands(1000))
    assert "cp jupyterlab-settings/overrides.json .venv/share/jupyter/lab/settings/overrides.d/" in commands


def test_the_settings_turn_off_the_news_prompt_and_are_valid_for_jupyterlabs_schema():
    settings = json.loads(OVERRIDES.read_text())
    assert set(settings) == {NOTIFICATION}
    package, plugin = NOTIFICATION.split(":")
    schema = json.loads((Path(get_app_dir()) / "schemas" / package / f"{plugin}.json").read_text())
    jsonschema.validate(settings[NOTIFICATION], schema)
    # JupyterLab asks "Would you like to get notified about official Jupyter news?" while fetchNews is "none".
    assert settings[NOTIFICATION]["fetchNews"] == "false"
    assert settings[NOTIFICATION]["checkForUpdates"] is False


def test_jupyterlab_reads_them_from_an_overrides_d_folder(tmp_path):
    (tmp_path / "overrides.d").mkdir()
    (tmp_path / "overrides.d" / "ml-serving-workshop.json").write_text(OVERRIDES.read_text())
    overrides, error = _get_overrides(str(tmp_path))
    assert error == ""
    assert overrides == json.loads(OVERRIDES.read_text())


@pytest.mark.slow
def test_jupyterlab_started_as_make_lab_starts_it_serves_the_workshops_defaults(tmp_path):
    """The options make lab computes for this user (as root: --allow-root, without which Jupyter exits at once),
    and the settings file found where it installs it: the news setting's default is "false", so no prompt."""
    options = [option for option in _jupyter_lab_line(os.getuid()).split()[2:] if not option.startswith("--notebook")]
    settings_dir = tmp_path / "settings"  # the venv's own app settings folder, as make lab fills it
    (settings_dir / "overrides.d").mkdir(parents=True)
    shutil.copy(OVERRIDES, settings_dir / "overrides.d" / "ml-serving-workshop.json")
    port, token = free_port(), "workshop-test"
    lab = ManagedProcess("jupyterlab", [
        str(Path(sys.executable).parent / "jupyter"), "lab", *options, "--no-browser", f"--port={port}",
        "--ip=127.0.0.1", f"--notebook-dir={tmp_path}", f"--IdentityProvider.token={token}",
        f"--LabApp.app_settings_dir={settings_dir}"], env={"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")},
        log_path=tmp_path / "lab.log").start()
    try:
        lab.wait_for_http(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=120)
        answer = httpx.get(f"http://127.0.0.1:{port}/lab/api/settings/{NOTIFICATION}?token={token}", timeout=30)
        answer.raise_for_status()
        news = answer.json()["schema"]["properties"]["fetchNews"]
        assert news["default"] == "false", news
    finally:
        lab.stop()
