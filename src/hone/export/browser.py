"""Open a web bundle in a real browser (Debian's Chromium, driven by Playwright) and read its result.

Used by the tests, ``benchmarks/web.py`` and ``hone run``'s web stage. Playwright's own browser
download is never used: ``executable_path`` is the ``chromium`` on PATH. Playwright's default flags
are dropped (``ignore_default_args=True``) so the flags are exactly ``chromium_flags()``; that
requires ``--remote-debugging-pipe``, without which the launch hangs. Each launch gets a fresh
profile folder, removed afterwards.

WebGPU in headless Chromium on a machine without a GPU comes from SwiftShader, a software Vulkan:
``--enable-unsafe-webgpu`` is the one flag it needs. Its adapter reports ``isFallbackAdapter``,
and the page says so: software WebGPU is never shown as GPU speed. ``webgpu=False`` leaves those
flags out, and WebGPU is then unavailable (the page falls back to WASM).

Starting Chromium can take long on a busy machine (a test suite or a benchmark on the same cores):
each launch may take ``LAUNCH_TIMEOUT_S``, and a launch that fails is tried once more with a fresh
profile; when both fail, the ExecutionError names both reasons.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hone.errors import ExecutionError, ProviderUnavailableError

logger = logging.getLogger(__name__)

BASE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--remote-debugging-pipe",  # required once Playwright's default flags are dropped
)
# Enough for headless Chromium 156 to offer SwiftShader's adapter (vendor google, architecture
# swiftshader, isFallbackAdapter true); without it requestAdapter() resolves to null.
WEBGPU_FLAGS = ("--enable-unsafe-webgpu",)
DEFAULT_TIMEOUT_S = 300.0
LAUNCH_TIMEOUT_S = 180.0  # per launch: Chromium took over 60 s to start on 2 cores busy with a test suite
LAUNCH_ATTEMPTS = 2


@dataclass
class PageRun:
    """What the page reported (its #hone-result JSON), plus the browser console for diagnosis."""

    url: str
    title: str
    result: dict[str, Any]
    summary: str = ""  # the page's visible summary table, as text
    console: list[str] = field(default_factory=list)
    screenshot: str | None = None


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        raise ProviderUnavailableError(
            "Chromium is not installed: run `make browser` (Debian package chromium)"
        )
    return path


def chromium_flags(*, webgpu: bool = True) -> list[str]:
    return [*BASE_FLAGS, *(WEBGPU_FLAGS if webgpu else ())]


def open_bundle(
    url: str,
    *,
    webgpu: bool = True,
    screenshot: str | Path | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    evaluate: str | None = None,
) -> PageRun:
    """Load ``url`` (a served bundle), wait until its title is DONE or ERROR: ..., return its result.

    ``evaluate``: a JavaScript expression run after the page is done; its value lands in
    ``result["evaluated"]`` (tests use it to call ``hone.run`` or ``hone.tokenize``).
    """
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    console: list[str] = []
    profiles: list[str] = []
    try:
        with sync_playwright() as playwright:
            context = _launch(playwright, webgpu, profiles)
            try:
                page = context.new_page()
                page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
                page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
                page.goto(url)
                page.wait_for_function(
                    "document.title === 'DONE' || document.title.startsWith('ERROR')",
                    timeout=timeout_s * 1000,
                )
                title = page.title()
                result = json.loads(page.text_content("#hone-result") or "{}")
                summary = page.inner_text("#hone-summary")
                if evaluate is not None and title == "DONE":
                    result["evaluated"] = page.evaluate(evaluate)
                shot = None
                if screenshot is not None:
                    page.screenshot(path=str(screenshot), full_page=True)
                    shot = str(screenshot)
            finally:
                context.close()
    except PlaywrightError as exc:
        tail = "; ".join(console[-3:])
        raise ExecutionError(
            f"Chromium failed on {url}: {_first_line(exc)}" + (f" (console: {tail})" if tail else "")
        ) from exc
    finally:
        for profile in profiles:
            shutil.rmtree(profile, ignore_errors=True)
    return PageRun(url=url, title=title, result=result, summary=summary, console=console, screenshot=shot)


def _launch(playwright: Any, webgpu: bool, profiles: list[str]) -> Any:
    """A persistent context on a fresh profile (appended to ``profiles`` for removal), tried
    ``LAUNCH_ATTEMPTS`` times with ``LAUNCH_TIMEOUT_S`` each."""
    from playwright.sync_api import Error as PlaywrightError

    reasons: list[str] = []
    for attempt in range(1, LAUNCH_ATTEMPTS + 1):
        profile = tempfile.mkdtemp(prefix="hone-chromium-")
        profiles.append(profile)
        try:
            return playwright.chromium.launch_persistent_context(
                profile,
                executable_path=chromium_path(),
                headless=True,
                ignore_default_args=True,
                args=[*chromium_flags(webgpu=webgpu), f"--user-data-dir={profile}"],
                viewport={"width": 1100, "height": 800},
                timeout=int(LAUNCH_TIMEOUT_S * 1000),
            )
        except PlaywrightError as exc:
            reasons.append(f"attempt {attempt}: {_first_line(exc)}")
            logger.info(
                "Chromium did not start (attempt %d of %d): %s", attempt, LAUNCH_ATTEMPTS, reasons[-1]
            )
    raise ExecutionError(
        f"Chromium did not start in {LAUNCH_ATTEMPTS} attempts of up to {LAUNCH_TIMEOUT_S:g} s each"
        f" ({'; '.join(reasons)}); is the machine overloaded? Run `chromium --headless --no-sandbox` to"
        " check it"
    )


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
