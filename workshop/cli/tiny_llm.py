"""``python -m workshop tiny-llm FOLDER [--seed N] [--name NAME] [--broken no-chat-template|corrupt-weights]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from workshop.tiny_llm import BROKEN_KINDS, build_broken_model, build_tiny_chat_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="tiny-chat")
    parser.add_argument("--broken", choices=BROKEN_KINDS, help="make a folder that fails to load, on purpose")


def run(args: argparse.Namespace) -> int:
    if args.broken:
        build_broken_model(args.folder, args.broken, seed=args.seed)
    else:
        build_tiny_chat_model(args.folder, seed=args.seed, name=args.name)
    print(args.folder)
    return 0
