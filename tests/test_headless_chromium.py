"""The test helper that drives Chromium: a stalled start is retried once, then reported with its stderr."""

from __future__ import annotations

import time

import pytest

from tests.headless_chromium import Chromium


def test_a_browser_that_never_answers_is_relaunched_once_then_reported(tmp_path):
    launches = tmp_path / "launches"
    fake = tmp_path / "fake-chromium"
    # Starts, says something on stderr, then never speaks the protocol: a stalled first launch.
    fake.write_text(f'#!/bin/sh\necho launched >> "{launches}"\necho "font cache still building" >&2\nexec sleep 30\n')
    fake.chmod(0o755)

    started = time.monotonic()
    with pytest.raises(TimeoutError) as caught:
        with Chromium(binary=str(fake), startup_timeout=1):
            pass
    assert launches.read_text().count("launched") == 2
    assert "twice" in str(caught.value) and "font cache still building" in str(caught.value)
    assert time.monotonic() - started < 20, "a stalled browser must be killed, not waited for"
