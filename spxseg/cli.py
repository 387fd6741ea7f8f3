"""What the command-line tools share: expected bad input ends in one ``error:`` line and exit code 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable


def reports(*errors: type[BaseException]) -> Callable:
    """Decorate a tool's ``main(argv) -> int`` so that ``errors`` (bad input the user can fix: a config key,
    a missing file) print ``error: <message>`` and return 2; anything else keeps its traceback (a bug)."""

    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(*args, **kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except errors as err:
                print(f"error: {err}", file=sys.stderr)
                return 2

        return run

    return wrap


def add_model_arguments(parser, checkpoint_required: bool = False) -> None:
    """``--config`` and ``--checkpoint`` as every tool that loads a trained model takes them."""
    parser.add_argument("--config", help="YAML config file (default: the config the checkpoint was trained with: "
                                         "stored in a .pth, the config.yaml next to a .safetensors)")
    random = "" if checkpoint_required else "; without it the model has RANDOM weights"
    parser.add_argument("--checkpoint", required=checkpoint_required,
                        help=f"checkpoint (.pth) written by tools/train.py, or its model.safetensors weights{random}")


def text_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Lines of an aligned plain-text table: the first column left-aligned, the others right-aligned, a rule
    under the header. Cells are strings (format numbers first)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*header), fmt.format(*["-" * w for w in widths])] + [fmt.format(*r) for r in rows]
