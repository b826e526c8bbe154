"""The workshop's command line: ``python -m workshop COMMAND [options]`` (``python -m workshop COMMAND --help``).

Commands:

* ``run-notebooks``: run every notebook unattended, both editions, with papermill (``make workshop``)
* ``editions``: write the learner's edition of the notebooks into ``lab/`` (``make lab``)
* ``notebook-outputs``: keep in ``notebooks/`` only the outputs nbval checks (``make refresh-notebooks``)
* ``loadtest``: a headless Locust run against the wine service, its table and SLO verdict
* ``chat-model``: the real chat model, converted once into ``build/llm-models`` (``make llm-model``)
* ``tiny-llm``: a tiny chat model built offline, for tests and classrooms without a model hub
* ``container``: the images' helpers; ``container wheelhouse`` downloads torch's CPU wheel (``make wheelhouse``)
* ``dashboards``, ``alerts``, ``k8s-dashboards``: write the generated Grafana dashboards, alert rules and the
  dashboards' ConfigMap, or ``--check`` them (``make generate``)

Each command is a module of :mod:`workshop.cli` (``add_arguments`` and ``run``), imported only when it runs,
so ``--help`` and a quick command do not pay for the libraries of the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

PROG = "python -m workshop"
# Each command, its one-line help; its module is workshop.cli.<name with underscores>.
COMMANDS: dict[str, str] = {
    "run-notebooks": "run every notebook in order with papermill, the learner's edition and the answer key",
    "editions": "write the learner's edition of the notebooks (exercises to do) into a folder, for make lab",
    "notebook-outputs": "copy the outputs nbval checks from executed notebooks back into notebooks/",
    "loadtest": "run a headless Locust load test against the wine service and print its statistics",
    "chat-model": "make the real chat model's folders (SmolLM2-135M-Instruct) in build/llm-models, once",
    "tiny-llm": "build a tiny offline chat model folder (or one broken on purpose)",
    "container": "the images' helpers: wheelhouse downloads torch's CPU wheel for the llm image",
    "dashboards": "write the Grafana dashboards under dashboards/, or --check them",
    "alerts": "write the Prometheus rules files and PrometheusRule manifests, or --check them",
    "k8s-dashboards": "write the ConfigMap that ships dashboards/*.json to the cluster's Grafana, or --check it",
}


def command_module(name: str) -> ModuleType:
    """The :mod:`workshop.cli` module of command ``name``."""
    return importlib.import_module(f"workshop.cli.{name.replace('-', '_')}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; only ``command``'s options are added (its module is imported for them)."""
    parser = argparse.ArgumentParser(prog=PROG, description="The ML Serving Workshop's commands.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text[:1].upper() + help_text[1:] + ".")
        if name == command:
            command_module(name).add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(command).parse_args(argv)
    try:
        return command_module(args.command).run(args)
    except (FileNotFoundError, NotADirectoryError, PermissionError) as error:  # a path given that cannot be used
        print(f"{PROG} {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
