"""Typed errors that the CLI turns into one clear line and a non-zero exit code.

Library code raises these instead of printing; nothing here imports torch.
"""
from __future__ import annotations


class MmdescError(Exception):
    """Base class: ``str(err)`` is the one line a user sees."""

    exit_code = 1


class MediaError(MmdescError):
    """An input file (or text line) cannot be used: names the file and the problem."""

    exit_code = 2

    def __init__(self, path: object, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ConfigError(MmdescError):
    """A recipe is wrong; carries every problem at once, each with its dotted path."""

    exit_code = 2

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        n = len(self.problems)
        head = "recipe error" if n == 1 else f"{n} recipe errors"
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in self.problems))


class CheckpointError(MmdescError):
    """A checkpoint folder is missing, incomplete, of the wrong version, or unsafe."""

    exit_code = 2


class DataError(MmdescError):
    """A corpus file is malformed (misaligned parallel text, bad JSON, missing files)."""

    exit_code = 2


class MmdescWarning(UserWarning):
    """Something worked, but not the way asked (the CLI prints it as one ``warning:`` line)."""
