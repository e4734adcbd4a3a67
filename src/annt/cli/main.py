"""``annt`` command line: one sub-command module per job, one-line errors, no tracebacks."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from annt.errors import AnntError
from annt.version import __version__

# Each module exposes ``register(subparsers)`` and sets ``func`` on its parser(s).
_COMMAND_MODULES = (
    "annt.cli.train_cmd",
    "annt.cli.evaluate_cmd",
    "annt.cli.attack_cmd",
    "annt.cli.info_cmd",
    "annt.cli.study_cmd",
    "annt.cli.diagnose_cmd",
    "annt.cli.robust_accuracy_cmd",
    "annt.cli.selftest_cmd",
    "annt.cli.import_cmd",
    "annt.cli.export_cmd",
    "annt.cli.deploy_gap_cmd",
    "annt.cli.reference_cmd",
)


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse prints usage plus the error; we print only the one line naming the problem."""

    def error(self, message: str) -> None:  # type: ignore[override]
        where = self.prog.removeprefix("annt").strip()
        self.exit(2, f"annt: error: {where + ': ' if where else ''}{message}\n")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = OneLineErrorParser(
        prog="annt",
        description="Adversarial Neural Network Toolkit: train FP and DoReFa-quantized"
        " classifiers, attack them, and measure robustness.",
    )
    parser.add_argument("--version", action="version", version=f"annt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineErrorParser)
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # a command still being written; the rest keep working
                continue
            raise
        module.register(sub)
    return parser



def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except AnntError as exc:
        print(f"annt: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("annt: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except (MemoryError, OSError) as exc:
        if os.environ.get("ANNT_DEBUG"):
            raise
        print(f"annt: error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - last resort: a bug, still one line (ANNT_DEBUG=1 shows it)
        if os.environ.get("ANNT_DEBUG"):
            raise
        text = " ".join(str(exc).split())[:300]
        print(f"annt: internal error: {type(exc).__name__}: {text} (re-run with ANNT_DEBUG=1 for the"
              " traceback and please report it)", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
