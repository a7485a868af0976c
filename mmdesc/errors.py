"""Typed errors that the CLI turns into one clear line and a non-zero exit code.

Library code raises these instead of printing; nothing here imports torch.
"""
from __future__ import annotations

import re

_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")
_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def one_line(name: object) -> str:
    r"""``name`` as it can be printed on one line of tab-separated output: backslash, tab,
    newline, carriage return and other control characters are escaped (``\\``, ``\t``,
    ``\n``, ``\r``, ``\xHH``). A name without any of them is printed as it is."""
    text = str(name)
    if not _UNSAFE.search(text):
        return text
    return _UNSAFE.sub(lambda m: _ESCAPES.get(m.group(), f"\\x{ord(m.group()):02x}"), text)


class MmdescError(Exception):
    """Base class: ``str(err)`` is the one line a user sees."""

    exit_code = 1


class MediaError(MmdescError):
    """An input file (or text line) cannot be used: names the file and the problem."""

    exit_code = 2

    def __init__(self, path: object, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{one_line(self.path)}: {reason}")


MAX_SHOWN = 40  # problems of a ConfigError printed; the rest are counted


class ConfigError(MmdescError):
    """A recipe is wrong; carries every problem at once, each with its dotted path."""

    exit_code = 2

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        n = len(self.problems)
        head = "recipe error" if n == 1 else f"{n} recipe errors"
        shown = self.problems[:MAX_SHOWN] + ([f"... and {n - MAX_SHOWN} more"] if n > MAX_SHOWN else [])
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in shown))


class CheckpointError(MmdescError):
    """A checkpoint folder is missing, incomplete, of the wrong version, or unsafe."""

    exit_code = 2


class BusyError(MmdescError):
    """Another process holds what this one needs (a run folder that is training).

    Exit code 75 (``EX_TEMPFAIL``): nothing is wrong with the input; try again later."""

    exit_code = 75


class DataError(MmdescError):
    """A corpus file is malformed (misaligned parallel text, bad JSON, missing files)."""

    exit_code = 2


class MmdescWarning(UserWarning):
    """Something worked, but not the way asked (the CLI prints it as one ``warning:`` line)."""
