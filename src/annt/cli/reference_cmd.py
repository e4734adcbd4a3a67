"""``annt reference``: write the reference pages (CLI, study spec, attacks) from the code."""

from __future__ import annotations

import argparse
import sys

from annt.errors import AnntError


def register(sub: argparse._SubParsersAction) -> None:
    # no ``help``: left out of ``annt --help``'s command list (a maintainers' command)
    p = sub.add_parser("reference", description="write the reference pages (CLI, study spec, attacks)"
                       " generated from the code")
    p.add_argument("--out", default="docs/reference", help="folder for cli.md, study-spec.md, attacks.md")
    p.add_argument("--check", action="store_true",
                   help="write nothing; fail if a page in --out differs from the code's")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from annt.cli.reference import COMMAND, stale_pages, write_pages

    if args.check:
        stale = stale_pages(args.out)
        if stale:
            raise AnntError(f"{', '.join(stale)} in {args.out}: missing or out of date; run `{COMMAND}`")
        print(f"{args.out}: up to date", file=sys.stderr)
        return 0
    for path in write_pages(args.out):
        print(path)
    return 0
