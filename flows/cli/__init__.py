"""The ``pxflow`` command.

``pxflow --pipeline ... --input ...`` behaves like ``paddlex --pipeline ...``
(see :mod:`flows.cli.predict`); subcommands add the batch workflows:

- ``pxflow annotate ...`` / ``pxflow backfill ...``: Prefect flows (:mod:`flows.cli.annotate`)
- ``pxflow index build|append|remove ...``: PP-ShiTu index maintenance (:mod:`flows.cli.index`)
"""

from __future__ import annotations

import importlib
import sys

#: subcommand -> module with a ``main(argv) -> int``
SUBCOMMANDS = {
    "annotate": "pxflow.flows.cli.annotate",
    "backfill": "pxflow.flows.cli.annotate",
    "index": "pxflow.flows.cli.index",
    "export": "pxflow.flows.cli.export",
    "eval": "pxflow.flows.cli.eval",
    "lake": "pxflow.flows.cli.lake",
}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[args[0]])
        return int(module.main(args) or 0)
    from .predict import main as predict_main

    return int(predict_main(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
