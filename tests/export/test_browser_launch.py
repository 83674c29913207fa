"""Chromium's launch survives a busy machine: a long bound, one retry, both reasons when both fail."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Error as PlaywrightError

from hone.errors import ExecutionError
from hone.export import browser


class _Chromium:
    """Stands in for ``playwright.chromium``: fails the first ``failures`` launches, then starts."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.launches: list[dict] = []

    def launch_persistent_context(self, profile: str, **options: object) -> str:
        self.launches.append({"profile": profile, **options})
        if len(self.launches) <= self.failures:
            raise PlaywrightError(f"Timeout {options['timeout']}ms exceeded.\nCall log: launching")
        return "context"


class _Playwright:
    def __init__(self, failures: int) -> None:
        self.chromium = _Chromium(failures)


@pytest.fixture(autouse=True)
def _any_chromium(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(browser, "chromium_path", lambda: "/usr/bin/chromium")


def test_a_launch_that_times_out_is_tried_once_more_on_a_fresh_profile() -> None:
    playwright, profiles = _Playwright(failures=1), []
    assert browser._launch(playwright, True, profiles) == "context"
    launches = playwright.chromium.launches
    assert len(launches) == 2 and len(set(profiles)) == 2
    assert [launch["profile"] for launch in launches] == profiles
    assert all(launch["timeout"] == browser.LAUNCH_TIMEOUT_S * 1000 >= 180_000 for launch in launches)
    for profile in profiles:
        Path(profile).rmdir()


def test_two_failed_launches_give_one_error_with_both_reasons() -> None:
    playwright, profiles = _Playwright(failures=2), []
    with pytest.raises(ExecutionError, match=r"did not start in 2 attempts of up to 180 s each") as caught:
        browser._launch(playwright, True, profiles)
    message = str(caught.value)
    assert "attempt 1: Timeout 180000ms exceeded." in message and "attempt 2:" in message
    assert "Call log" not in message  # one line per reason
    for profile in profiles:
        Path(profile).rmdir()
