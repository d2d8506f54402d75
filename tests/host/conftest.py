"""Fixtures the console's Pilot tests share (a module's own fixture of the same name wins)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.console import FakeEngine, two_bottles


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def fake() -> FakeEngine:
    return two_bottles()
