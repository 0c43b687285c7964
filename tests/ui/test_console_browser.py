"""The console in a real browser (Playwright + system chromium) against a real coordinator served by
uvicorn on 127.0.0.1, over a registry a real ``fedge simulate`` (2 rounds) filled. Screenshots of
every page go to tests/artifacts/ (not committed)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from coordinator.api import CoordinatorSettings
from registry import RegistryConfig
from tests.apps import operator_app

pytestmark = pytest.mark.slow

FEDGE = str(Path(sys.executable).parent / "fedge")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_ENV = "FEDGE_CHROMIUM"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


@pytest.fixture(scope="session")
def chromium() -> str:
    """The system chromium; skipped locally without one, a failure in CI (.ci/run installs it)."""
    path = os.environ.get(CHROMIUM_ENV, "/usr/bin/chromium")
    if not (Path(path).exists() or shutil.which(path)):
        message = f"no chromium at {path} (set {CHROMIUM_ENV}); .ci/run installs Debian's chromium"
        if _in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def simulated_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry filled by a real 2-round, 2-client simulation."""
    work = tmp_path_factory.mktemp("console-sim")
    result = subprocess.run(
        [FEDGE, "simulate", "strategy.num_rounds=2", "simulation.num_clients=2", f"registry.root={work / 'reg'}"],  # noqa: E501
        cwd=work, capture_output=True, text=True, timeout=900, env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return work / "reg"


@pytest.fixture(scope="session")
def served(simulated_registry: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """The coordinator app served by uvicorn on 127.0.0.1; its base URL and a token per role."""
    app, tokens = operator_app(CoordinatorSettings(registry=RegistryConfig(root=str(simulated_registry))))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield base, tokens
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser(chromium: str) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        launched.close()


def _sign_in(browser: object, base: str, token: str):  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{base}/ui/signin")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/ui/runs")
    return page, errors


def _shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"console-{name}.png"), full_page=True)


def test_an_operator_sees_the_run_chart_and_promotes_after_a_gate_refusal(served, browser) -> None:  # type: ignore[no-untyped-def]
    base, tokens = served
    page, errors = _sign_in(browser, base, tokens["operator"])
    _shot(page, "runs")
    page.click("table#runs tbody a")
    chart = page.locator("#run-chart")
    chart.locator("canvas").first.wait_for()
    assert chart.get_attribute("data-rendered-points") == "2"  # uPlot's x series: one point per round
    assert int(chart.get_attribute("data-rendered-series") or 0) >= 2
    assert page.locator("table#participants tbody tr").count() == 2
    _shot(page, "run")

    page.goto(f"{base}/ui/registry")
    _shot(page, "registry")
    page.goto(f"{base}/ui/registry/versions/digits:1")
    page.select_option("#promote-form select", "production")
    page.click("#promote")
    assert "gate approvals failed: 0 of 1 approvals" in page.locator("#refusal").inner_text()
    _shot(page, "version-refused")
    page.select_option("#approve-form select", "production")
    page.click("#approve")
    page.wait_for_url("**done=approved")
    page.select_option("#promote-form select", "production")
    page.click("#promote")
    page.wait_for_url("**done=promoted")
    assert "production" in page.locator("#aliases").inner_text()
    _shot(page, "version-promoted")
    for name in ("drift", "fleet", "audit"):
        page.goto(f"{base}/ui/{name}")
        _shot(page, name)
    assert "Chain verified" in page.locator("#verify").inner_text()
    assert not [e for e in errors if "Content Security Policy" in e], errors


def test_a_viewer_sees_no_promote_button_and_a_forged_post_gets_403(served, browser) -> None:  # type: ignore[no-untyped-def]
    base, tokens = served
    page, _ = _sign_in(browser, base, tokens["viewer"])
    page.goto(f"{base}/ui/registry/versions/digits:1")
    assert page.locator("#promote").count() == 0 and page.locator("#approve").count() == 0
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    _shot(page, "version-viewer")
    # The viewer's own session with its valid CSRF token: refused by role.
    own = page.request.post(
        f"{base}/ui/registry/versions/digits:1/promote", form={"csrf": csrf or "", "alias": "staging"}
    )
    assert own.status == 403
    # A page on another origin posting into the console: refused (SameSite cookie, origin, CSRF).
    other = browser.new_page()  # type: ignore[attr-defined]
    other.set_content(
        f'<form id="f" method="post" action="{base}/ui/registry/versions/digits:1/promote">'
        '<input name="alias" value="staging"><input name="csrf" value="guess"></form>'
    )
    with other.expect_navigation():
        other.evaluate("document.getElementById('f').submit()")
    assert "Not allowed" in other.content() or "Signed out" in other.content()
    forged = page.request.post(
        f"{base}/ui/registry/versions/digits:1/promote",
        form={"csrf": csrf or "", "alias": "staging"},
        headers={"Origin": "http://evil.example"},
    )
    assert forged.status == 403
