"""The dashboard in a real headless Chromium, driven by Playwright, against the service.

The browser is the system's Chromium (Debian package `chromium`), never a download.
Screenshots of the three main pages are written to `test-artifacts/dashboard/` (or
`$CLOUD_TEST_ARTIFACTS/dashboard/`).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NoReturn

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.helpers import wait_settled

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(
    os.environ.get("CLOUD_TEST_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts")
)
PASSWORD = "correct horse battery"
AXE_PACKAGE = Path(__file__).parent / "axe"
# The WCAG 2.1 A and AA rules of axe-core.
AXE_RULES = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def _missing_tool(message: str) -> NoReturn:
    """Skip the test, or fail it when CLOUD_REQUIRE_BROWSER=1 (as in CI)."""
    if os.environ.get("CLOUD_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _chromium() -> str:
    found = os.environ.get("CLOUD_TEST_CHROMIUM") or shutil.which("chromium")
    if found:
        return found
    _missing_tool(
        "Chromium is not installed: the dashboard tests need the system browser "
        "(Debian: apt-get install chromium; or set CLOUD_TEST_CHROMIUM to its path)"
    )


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    executable = _chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_FLAGS, headless=True
        )
        yield launched
        await launched.close()


@pytest.fixture(scope="module")
async def axe_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Install the pinned axe-core from tests/axe/package-lock.json; return its script."""
    npm = shutil.which("npm")
    if npm is None:
        _missing_tool("the accessibility check needs npm to install axe-core; npm is not on PATH")
    workdir = tmp_path_factory.mktemp("axe")
    for name in ("package.json", "package-lock.json"):
        shutil.copy(AXE_PACKAGE / name, workdir / name)
    process = await asyncio.create_subprocess_exec(
        npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--prefer-offline",
        cwd=workdir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), timeout=100)
    assert process.returncode == 0, f"npm ci failed:\n{output.decode()}"
    return workdir / "node_modules" / "axe-core" / "axe.min.js"


async def _new_page(browser: Browser, server: str, **options: object) -> Page:
    context = await browser.new_context(
        base_url=server, viewport={"width": 1280, "height": 900}, **options
    )
    context.set_default_timeout(15_000)
    return await context.new_page()


@pytest.fixture
async def page(browser: Browser, server: str, clean: None) -> AsyncIterator[Page]:
    opened = await _new_page(browser, server)
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on("dialog", lambda dialog: dialog.accept())
    yield opened
    await opened.context.close()
    assert errors == [], f"the page raised: {errors}"


async def _shot(page: Page, name: str) -> None:
    folder = ARTIFACTS / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=folder / f"{name}.png", full_page=True)


async def _sign_up(page: Page) -> str:
    email = f"dash-{secrets.token_hex(4)}@example.com"
    await page.goto("/")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.get_by_role("link", name="Create one").click()
    await page.get_by_label("Name").fill("Dana Ops")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password (at least 8 characters)").fill(PASSWORD)
    await page.get_by_role("button", name="Create account").click()
    await expect(page.get_by_role("heading", name="Projects", exact=True)).to_be_visible()
    return email


async def _create_project_and_agent(page: Page, name: str) -> tuple[str, str]:
    """Create a project and an agent in it; return the project id and the shown key."""
    await page.get_by_text("Create a project").click()
    await page.get_by_label("Name").fill(name)
    await page.get_by_role("button", name="Create project").click()
    await expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible()
    project_id = page.url.rsplit("/", 1)[1]

    await page.get_by_label("New agent name").fill("staging agent")
    await page.get_by_role("button", name="Create agent").click()
    panel = page.get_by_role("alert").filter(has_text="shown only once")
    await expect(panel).to_be_visible()
    key = await page.get_by_label("Agent key").input_value()
    assert re.fullmatch(r"sa_agent_key_[0-9a-f]{32}", key), key
    return project_id, key


async def _send_run(http: httpx.AsyncClient, key: str) -> str:
    """Run the kind of test an agent runs: timeouts, a duplicate, a lost write."""
    agent = {"X-Agent-Key": key}
    created = await http.post(
        "/api/runs",
        json={"target_url": "https://orders.example.com/orders", "method": "POST",
              "scenario": "timeout_retry", "status": "running"},
        headers=agent,
    )  # fmt: skip
    assert created.status_code == 201, created.text
    run_id = created.json()["data"]["id"]

    events = [
        {"event_id": f"sent-{n}", "event_type": "request_sent", "message": f"POST /orders #{n}"}
        for n in range(60)
    ]
    events += [
        {"event_id": "t1", "event_type": "request_timeout", "severity": "warning",
         "message": "no answer within 0.5 s"},
        {"event_id": "t2", "event_type": "request_timeout", "severity": "warning",
         "message": "no answer within 0.5 s"},
        {"event_id": "d1", "event_type": "duplicate_detected", "severity": "error",
         "message": "order 7 stored twice after a retry", "payload": {"order": 7, "copies": 2}},
        {"event_id": "l1", "event_type": "data_loss_risk_detected", "severity": "critical",
         "message": "order 12 acknowledged but missing on read-back"},
    ]  # fmt: skip
    sent = await http.post(f"/api/runs/{run_id}/events", json={"events": events}, headers=agent)
    assert sent.status_code == 202, sent.text
    assert sent.json()["data"]["accepted"] == len(events), sent.text

    report = await http.post(
        f"/api/runs/{run_id}/report",
        json={
            "summary": "1 write lost and 1 duplicated out of 20",
            "raw_json": {"writes": 20, "lost": 1},
        },
        headers=agent,
    )
    assert report.status_code == 201, report.text
    finished = await http.post(f"/api/runs/{run_id}/finish", headers=agent)
    assert finished.status_code == 200, finished.text
    return run_id


async def test_new_user_sees_run_scored(page: Page, server: str, consumers: list) -> None:
    await _sign_up(page)
    project_id, key = await _create_project_and_agent(page, "Orders API")

    async with httpx.AsyncClient(base_url=server, timeout=30) as http:
        run_id = await _send_run(http, key)
        token = await page.evaluate("localStorage.getItem('softadastra.token')")
        # 100 - 35 (data loss) - 20 (duplicate) - 10 (timeout) - 15 - 8 - 6 (severities)
        score = await wait_settled(http, run_id, {"Authorization": f"Bearer {token}"})
    assert (score["score"], score["grade"]) == (6, "F")

    # The project page lists the run with its score, grade and flags.
    await page.reload()
    row = page.get_by_role("row").filter(has_text="timeout_retry")
    await expect(row).to_contain_text("6")
    await expect(row.locator(".grade")).to_have_text("F")
    for flag in ("Data loss", "Duplicates", "Timeouts"):
        await expect(row).to_contain_text(flag)
    await expect(page.locator(".trend circle")).to_have_count(1)
    await _shot(page, "project")

    # The run page: score, settled, deductions, timeline and report.
    await row.get_by_role("link", name="timeout_retry").click()
    await expect(page.get_by_role("heading", name="Run: timeout_retry")).to_be_visible()
    await expect(page.get_by_test_id("score")).to_have_text("6")
    await expect(page.get_by_text("Settled: every accepted event is counted")).to_be_visible()
    deductions = page.locator("table.deductions tbody tr")
    await expect(deductions).to_have_count(6)
    await expect(page.locator("table.timeline tbody tr")).to_have_count(50)
    await expect(page.get_by_text("1–50 of 64 events")).to_be_visible()
    await expect(page.get_by_text("1 write lost and 1 duplicated out of 20")).to_be_visible()
    await _shot(page, "run")

    # Each deduction links to the events behind it.
    await deductions.filter(has_text="data_loss_risk_detected").get_by_role("link").click()
    timeline = page.locator("table.timeline tbody tr")
    await expect(timeline).to_have_count(1)
    await expect(page.get_by_role("heading", name="Event timeline")).to_be_focused()
    await expect(timeline).to_contain_text("order 12 acknowledged but missing on read-back")

    # The projects page shows the latest score and the flagged-run counts.
    await page.get_by_role("link", name="Projects").first.click()
    card = page.get_by_role("listitem").filter(has_text="Orders API")
    await expect(card.locator(".latest .score")).to_have_text("6")
    await expect(card.locator(".counts")).to_contain_text("Data loss1")
    await expect(card.locator(".counts")).to_contain_text("Duplicates1")
    await _shot(page, "projects")
    assert project_id in await card.get_by_role("link").get_attribute("href")


async def test_token_survives_reload_until_sign_out(page: Page) -> None:
    email = await _sign_up(page)
    await page.reload()
    await expect(page.get_by_role("heading", name="Projects", exact=True)).to_be_visible()
    await expect(page.get_by_text(email)).to_be_visible()

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert await page.evaluate("localStorage.getItem('softadastra.token')") is None
    await page.goto("/#/projects")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()

    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill("not the password")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("password")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Projects", exact=True)).to_be_visible()


async def test_key_rotate_and_delete(page: Page, server: str) -> None:
    await _sign_up(page)
    _, first_key = await _create_project_and_agent(page, "Billing API")
    run = {"target_url": "https://billing.example.com/pay", "scenario": "slow_network"}

    async with httpx.AsyncClient(base_url=server, timeout=30) as http:
        assert (
            await http.post("/api/runs", json=run, headers={"X-Agent-Key": first_key})
        ).status_code == 201

        await page.get_by_role("button", name="Rotate key").click()
        rotated = page.get_by_label("Agent key")
        await expect(rotated).not_to_have_value(first_key)
        second_key = await rotated.input_value()
        old = await http.post("/api/runs", json=run, headers={"X-Agent-Key": first_key})
        assert old.status_code == 401, old.text
        assert (
            await http.post("/api/runs", json=run, headers={"X-Agent-Key": second_key})
        ).status_code == 201

        await page.get_by_role("button", name="Delete").click()
        await expect(page.get_by_text("No agents yet")).to_be_visible()
        gone = await http.post("/api/runs", json=run, headers={"X-Agent-Key": second_key})
        assert gone.status_code == 401, gone.text


async def test_runs_table_server_paging(page: Page, pool: asyncpg.Pool) -> None:
    await _sign_up(page)
    project_id, _ = await _create_project_and_agent(page, "Search API")
    # 60 runs straight into the tables: every fifth finished with data loss flagged.
    async with pool.acquire() as conn:
        project_key = await conn.fetchval(
            "SELECT id FROM projects WHERE public_id = $1", project_id
        )
        run_keys = await conn.fetch(
            """
            INSERT INTO runs (public_id, project_id, status, target_url, method, scenario,
                              started_at, finished_at)
            SELECT 'run_' || md5(random()::text), $1, 'finished', 'https://search.example.com',
                   'GET', 'scenario_' || n, now() - interval '1 hour', now()
            FROM generate_series(1, 60) AS n
            RETURNING id, scenario
            """,
            project_key,
        )
        for row in run_keys:
            lost = int(row["scenario"].split("_")[1]) % 5 == 0
            await conn.execute(
                "INSERT INTO run_scores (run_id, project_id, data_loss, critical, score, grade)"
                " VALUES ($1, $2, $3, $3, $4, $5)",
                row["id"], project_key, int(lost), 50 if lost else 100, "D" if lost else "A",
            )  # fmt: skip

    await page.reload()
    await expect(page.get_by_text("1–25 of 60 runs")).to_be_visible()
    await expect(page.locator("table.runs tbody tr").first).to_contain_text("scenario_60")
    await page.get_by_role("link", name="Next").click()
    await expect(page.get_by_text("26–50 of 60 runs")).to_be_visible()

    await page.get_by_label("Risk flag", exact=True).select_option("data_loss")
    await page.get_by_role("button", name="Apply").first.click()
    rows = page.locator("table.runs tbody tr")
    await expect(rows).to_have_count(12)
    await expect(page.locator(".pager")).to_have_count(0)
    for index in range(12):
        await expect(rows.nth(index)).to_contain_text("Data loss")

    # Hostile or out-of-range values in the address are ignored or clamped.
    await page.goto(f"/#/projects/{project_id}?flag=constructor")
    await expect(page.get_by_text("1–25 of 60 runs")).to_be_visible()
    await page.goto(f"/#/projects/{project_id}?offset=99999999999999999999999")
    await expect(page.get_by_text("This page is past the end: there are 60 runs.")).to_be_visible()
    await page.get_by_role("link", name="Go to the first page").click()
    await expect(page.get_by_text("1–25 of 60 runs")).to_be_visible()

    await page.get_by_label("Risk flag", exact=True).select_option("data_loss")
    await page.get_by_label("Status", exact=True).select_option("running")
    await page.get_by_role("button", name="Apply").first.click()
    await expect(page.get_by_text("No run matches these filters.")).to_be_visible()


async def test_run_page_on_phone(page: Page, server: str, consumers: list) -> None:
    await _sign_up(page)
    _, key = await _create_project_and_agent(page, "Mobile API")
    async with httpx.AsyncClient(base_url=server, timeout=30) as http:
        run_id = await _send_run(http, key)
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto(f"/#/runs/{run_id}")
    await expect(page.get_by_text("Settled: every accepted event is counted")).to_be_visible()
    # Nothing wider than the screen but the tables, which scroll inside their frame.
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow} px wider than a phone screen"
    await _shot(page, "run-phone")


async def _audit(page: Page, axe: Path) -> list[str]:
    """Run axe-core's WCAG A and AA rules on the page; return one line per violation."""
    await page.add_script_tag(path=axe)
    result = await page.evaluate(
        "rules => axe.run(document, {runOnly: {type: 'tag', values: rules}})", AXE_RULES
    )
    return [
        f"{violation['id']} ({violation['impact']}): {violation['help']} at "
        + ", ".join(str(node["target"]) for node in violation["nodes"][:3])
        for violation in result["violations"]
    ]


async def test_main_pages_pass_wcag_checks(
    browser: Browser, server: str, clean: None, consumers: list, axe_script: Path
) -> None:
    # axe-core is injected as a script, which the page's own policy would block.
    page = await _new_page(browser, server, bypass_csp=True)
    try:
        await _sign_up(page)
        project_id, key = await _create_project_and_agent(page, "Orders API")
        async with httpx.AsyncClient(base_url=server, timeout=30) as http:
            run_id = await _send_run(http, key)
        pages = {
            "projects": ("/#/projects", ".project-card .latest .score"),
            "project": (f"/#/projects/{project_id}", "table.runs"),
            "run": (f"/#/runs/{run_id}", "text=Settled: every accepted event is counted"),
            "sign-in": ("/#/signin", "form"),
        }
        for name, (url, ready) in pages.items():
            if name == "sign-in":
                await page.get_by_role("button", name="Sign out").click()
            await page.goto(url)
            await expect(page.locator(ready).first).to_be_visible()
            violations = await _audit(page, axe_script)
            assert violations == [], f"{name} page: {violations}"
    finally:
        await page.context.close()


async def test_rename_and_delete_from_dashboard(page: Page, server: str, consumers: list) -> None:
    await _sign_up(page)
    project_id, key = await _create_project_and_agent(page, "Old Name")
    async with httpx.AsyncClient(base_url=server, timeout=30) as http:
        run_id = await _send_run(http, key)

    await page.get_by_text("Project settings").click()
    await page.get_by_label("Name", exact=True).fill("Payments API")
    await page.get_by_role("button", name="Save changes").click()
    await expect(page.get_by_role("heading", name="Payments API", exact=True)).to_be_visible()

    await page.goto(f"/#/runs/{run_id}")
    await page.get_by_role("button", name="Delete this run").click()
    await expect(page.get_by_role("heading", name="Payments API", exact=True)).to_be_visible()
    await expect(page.get_by_text("No runs yet.")).to_be_visible()

    await page.get_by_text("Project settings").click()
    await page.get_by_role("button", name="Delete this project").click()
    await expect(page.get_by_text("No projects yet.")).to_be_visible()
    await page.goto(f"/#/projects/{project_id}")
    await expect(page.get_by_role("heading", name="Not found")).to_be_visible()
