"""Command-line entry: ``python -m fastconv <command> [options]``.

Commands are looked up in :data:`COMMANDS`, a table of
``name -> (module, function, one-line help)``; the module is imported only
when its command runs (so ``bench`` can set up the allocator before anything
allocates). To add a command, e.g. ``demo``, add one row::

    "demo": ("fastconv.demo", "main", "run a small end-to-end demo"),

where ``fastconv.demo.main(argv: list[str]) -> int`` parses its own options
and returns the exit code. Unknown commands are a usage error (exit 2).
"""

from __future__ import annotations

import importlib
import sys
from typing import Dict, List, Optional, Tuple

COMMANDS: Dict[str, Tuple[str, str, str]] = {
    "bench": ("fastconv.bench.cli", "main", "benchmark fastconv against torch (start here)"),
    "demo": ("fastconv.demo", "main", "train LeNet-5 on scikit-learn's digits against torch.nn; write CAM and "
             "edge-detection PNGs"),
}

EXIT_USAGE = 2


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: python -m fastconv <command> [options]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_m, _f, help_) in COMMANDS.items()]
    lines += ["", "Run `python -m fastconv <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(usage(), file=sys.stderr)
        return EXIT_USAGE
    if args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"{usage()}\n\nerror: unknown command {name!r}", file=sys.stderr)
        return EXIT_USAGE
    module, func, _help = COMMANDS[name]
    return int(getattr(importlib.import_module(module), func)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
