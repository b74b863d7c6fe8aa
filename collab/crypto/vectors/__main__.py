"""python -m collab.crypto.vectors --write | --check"""

from __future__ import annotations

import argparse
import sys

from . import PATH, render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m collab.crypto.vectors")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help=f"regenerate {PATH.name}")
    mode.add_argument("--check", action="store_true", help="fail if the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        PATH.write_text(text, encoding="ascii")
        print(f"wrote {PATH} ({len(text)} bytes)")
        return 0
    current = PATH.read_text(encoding="ascii") if PATH.exists() else ""
    if current != text:
        print(f"{PATH} differs from the regenerated vectors", file=sys.stderr)
        return 1
    print(f"{PATH} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
