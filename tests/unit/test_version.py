"""The version is written once (``shared.__version__``); everything that shows it reads it."""

from __future__ import annotations

import re
import tomllib

from shared import __version__
from shared.defender.client import USER_AGENT
from tests.support import ROOT


def test_pyproject_reads_the_version_from_the_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "shared.__version__"}


def test_user_agent_carries_the_version() -> None:
    assert USER_AGENT.endswith(f"/{__version__}")


def test_changelog_names_the_current_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## \[[^\]]+\](?: — (\S+))?", text, flags=re.MULTILINE)
    assert headings and headings[0] == __version__
