"""Command-line conventions every tool follows: one error for bad input, one error line, one exit-code rule.

- Exit 2 for a usage error (a flag argparse rejects, or a flag combination the tool rejects before reading
  anything), printed by `ToolParser.error` after the usage line.
- Exit 1 for bad input or a failed run: the library raises `ToolError` (or an OSError surfaces), and the
  tool's `main` returns `fail(tool, error)`.
- Every error line reads `med-rlvr TOOL: error: MESSAGE`, and the message names the file, line and field
  and what to do (CONTRIBUTING.md).
"""

from __future__ import annotations

import argparse
import sys

USAGE_ERROR, FAILED = 2, 1


class ToolError(Exception):
    """Bad input or a failed run; the message says where (file, line, field) and what to do."""


class ToolParser(argparse.ArgumentParser):
    """argparse with the house error line; `tool_parser` makes one per tool."""

    tool = "tool"

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(USAGE_ERROR, f"med-rlvr {self.tool}: error: {message}\n")


def tool_parser(tool: str, **kwargs) -> ToolParser:
    """An ArgumentParser for `tool`. Its class carries the tool's name because argparse builds subcommand
    parsers from the parent's class, so `evaluate run` errors carry the prefix too."""
    return type(f"{tool.title()}Parser", (ToolParser,), {"tool": tool})(**kwargs)


def fail(tool: str, error: BaseException) -> int:
    """Print the error line for bad input or a failed run, and return its exit code."""
    print(f"med-rlvr {tool}: error: {error}", file=sys.stderr)
    return FAILED
