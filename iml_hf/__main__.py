"""``python -m iml_hf``: the commands, one line each; ``python -m iml_hf COMMAND ...`` runs one."""

from __future__ import annotations

import sys

from iml_hf import __version__
from iml_hf.cli import COMMANDS, command


def commands_text() -> str:
    """Every command as ``iml-x`` / ``python -m iml_hf.x`` and what it does."""
    width = max(len(name) for name in COMMANDS) + 2
    lines = [
        f"iml_hf {__version__}: implicit meta-learning experiments on Hugging Face",
        "",
        "usage: python -m iml_hf COMMAND [ARGS ...]   (or the console script iml-COMMAND)",
        "",
        "commands:",
    ]
    for name, (module, what) in COMMANDS.items():
        short = name.removeprefix("iml-")
        lines.append(f"  {short:<{width}}{what}")
        lines.append(f"  {'':<{width}}iml-{short} or python -m {module.removesuffix('.__main__')}")
    lines += ["", "Each command's --help says more; the Python API: import iml_hf (docs/api.md)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """List the commands (no argument, -h), print the version, or run ``COMMAND ARGS``."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(commands_text())
        return 0
    if argv[0] == "--version":
        print(f"iml_hf {__version__}")
        return 0
    script = f"iml-{argv[0].replace('_', '-')}"
    if script not in COMMANDS:
        print(commands_text() + f"\n\nerror: unknown command {argv[0]!r}", file=sys.stderr)
        return 2
    return command(script, argv[1:])


if __name__ == "__main__":
    sys.exit(main())
