"""Prints what the real-SAM tests measured (per-file statuses, wall times) at the end of the run."""

from __future__ import annotations

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.sam.test_real_sam import SUMMARY

    if SUMMARY:
        terminalreporter.section("real SAM CLI")
        for line in SUMMARY:
            terminalreporter.write_line(line)
