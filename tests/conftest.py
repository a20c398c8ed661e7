"""Every test runs against temp dirs: no test can touch the real HOME, Claude settings or data dir.

The autouse fixture points HOME, CLAUDE_CONFIG_DIR, XDG_DATA_HOME and UNDERSTUDY_HOME at
fresh folders under the test's tmp dir (none of them created, except HOME). Ask for
``isolated_env`` to get the paths, or ``understudy_home`` for just the data dir.
``claude_home`` (from tests/claude_harness.py) is a temp HOME with the hooks registered.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.claude_harness import claude_home  # noqa: F401  (a fixture, shared by the e2e tests)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("env")
    env = SimpleNamespace(
        home=root / "home",
        claude_config_dir=root / "home" / ".claude",
        xdg_data_home=root / "home" / ".local" / "share",
        understudy_home=root / "understudy",
    )
    env.home.mkdir()
    monkeypatch.setenv("HOME", str(env.home))
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(env.claude_config_dir))
    monkeypatch.setenv("XDG_DATA_HOME", str(env.xdg_data_home))
    monkeypatch.setenv("UNDERSTUDY_HOME", str(env.understudy_home))
    # Tests are offline by rule: without these, a hub lookup for a name that is not a local
    # path waits for a network timeout (~50 s) before falling back to the local files.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    return env


@pytest.fixture
def understudy_home(isolated_env: SimpleNamespace) -> Path:
    return isolated_env.understudy_home
