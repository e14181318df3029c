"""``momentumrnn`` console command and ``python -m momentumrnn``: the experiment toolkit's CLI.

Every process the toolkit starts begins here (workers and DDP ranks re-run this command), so this
is where the allocator is set, before the first tensor of a run
(:mod:`momentumrnn.toolkit.allocator`; ``MOMENTUMRNN_ALLOCATOR=system`` opts out).

The toolkit needs the ``train`` extra (``pip install 'momentumrnn[train]'``); without it this
prints a one-line hint and exits with code 2.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """The command; started as a program (``argv`` from the command line, not given), it first
    keeps freed memory in the process (:mod:`momentumrnn.toolkit.allocator`)."""
    if argv is None:
        from momentumrnn.toolkit.allocator import keep_freed_memory

        keep_freed_memory()
    try:
        from momentumrnn.toolkit.cli import main as cli_main
    except ModuleNotFoundError as e:  # pragma: no cover - depends on the installed extras
        print(
            f"error: the momentumrnn command needs the toolkit's dependencies ({e.name} is missing): "
            "pip install 'momentumrnn[train]'",
            file=sys.stderr,
        )
        return 2
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
