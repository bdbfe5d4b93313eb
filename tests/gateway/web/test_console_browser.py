"""The console in a real browser against the real stack: what field engineers and duty officers do with it,
and what a viewer or a person of another city must not be able to do."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest

from tests.gateway.web.conftest import ARTIFACTS, PASSWORD, Stack
from tests.publishing import AckingPublisher

pytestmark = pytest.mark.slow
WAIT_MS = 40_000  # how long a live page may take to show what arrived (a bound, not a measured figure)


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="th-TH")
    try:
        yield context
    finally:
        context.close()


def login(context: Any, stack: Stack, username: str) -> Any:
    page = context.new_page()
    page.goto(f"{stack.url}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("[data-testid=login-submit]")
    page.wait_for_url(f"{stack.url}/devices")
    return page


def shot(page: Any, name: str) -> None:
    """A screenshot of the page in its current language, kept as a test artefact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    lang = page.get_attribute("html", "lang")
    page.screenshot(path=str(ARTIFACTS / f"{name}-{lang}.png"), full_page=True)


def shot_both(page: Any, name: str) -> None:
    shot(page, name)
    switch_language(page)
    shot(page, name)
    switch_language(page)


def bangkok_year() -> int:
    return datetime.now(ZoneInfo("Asia/Bangkok")).year


def switch_language(page: Any) -> None:
    page.click("[data-testid=lang-switch]")
    page.wait_for_load_state()


def upload(page: Any, path: Any) -> None:
    page.set_input_files("[data-testid=import-file]", str(path))
    page.click("[data-testid=import-submit]")


def publish(stack: Stack, username: str, password: str, topic: str, *payloads: dict[str, Any] | bytes) -> None:
    publisher = AckingPublisher(stack.broker.port, client_id=username, username=username, password=password)
    try:
        for payload in payloads:
            publisher.publish(topic, payload if isinstance(payload, bytes) else orjson.dumps(payload))
        assert publisher.wait_all_acked(20)
        assert publisher.refused == []
    finally:
        publisher.close()


def test_engineer_registers_a_device_publishes_with_its_credentials_and_watches_it_arrive(
    stack: Stack, context: Any
) -> None:
    page = login(context, stack, "somchai")
    page.click("[data-testid=nav-register]")
    shot_both(page, "register")
    page.fill("input[name=device_id]", "flood-lc-07")
    page.select_option("select[name=feed]", "flood")
    page.fill("input[name=city]", "laem-chabang")
    page.fill("input[name=district]", "บ่อวิน")
    page.fill("input[name=name]", "คลองบ่อวิน")
    page.fill("input[name=lat]", "13.05")
    page.fill("input[name=lon]", "101.0")
    page.fill("input[name=heartbeat_s]", "600")
    page.click("[data-testid=register-submit]")

    username = page.inner_text("[data-testid=mqtt-username]")
    password = page.inner_text("[data-testid=mqtt-password]")
    topic = page.inner_text("[data-testid=mqtt-topic]")
    example = page.inner_text("[data-testid=mqtt-example]")
    # the broker account is the device's own namespace, pinned to the same client id (deploy/SECURITY.md)
    assert (username, topic) == ("device.flood-lc-07", "city/laem-chabang/flood/flood-lc-07")
    assert f"-i {username}" in example and f"-u {username}" in example
    assert f"-P '{password}'" in example and f"-t '{topic}'" in example
    assert f"-p {stack.broker.port}" in example and '"level_m"' in example
    shot(page, "credentials")
    # switching the language re-renders the page as a GET: the password is not shown a second time
    switch_language(page)
    assert page.url == f"{stack.url}/register" and password not in page.content()
    switch_language(page)

    # the device page is open before anything is sent: what arrives must show up without a reload
    page.goto(f"{stack.url}/devices/flood-lc-07")
    live = page.locator("[data-testid=device-live]")
    assert "ยังไม่มีข้อความ" in live.inner_text()
    publish(stack, username, password, topic, {"level_m": 1.25, "ts": int(time.time() * 1000)},
            b'{"level_m": "very high"}')
    messages = page.locator("[data-testid=messages]")
    messages.wait_for(timeout=WAIT_MS)
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=messages] tbody tr').length >= 2", timeout=WAIT_MS
    )
    text = messages.inner_text()
    assert '"level_m":1.25' in text and "รับแล้ว" in text  # accepted
    assert "very high" in text and "ปฏิเสธ" in text  # rejected, with its reason
    rejected_reason = page.locator("[data-testid=messages] tr.rej td").nth(2).inner_text()
    assert rejected_reason not in ("", "–")
    # the newest message was refused: the device shows as quarantining, its quarantine entry is listed
    page.locator("[data-testid=quarantine]").wait_for(timeout=WAIT_MS)
    assert page.locator("[data-testid=device-live] [data-health]").first.get_attribute("data-health") == "quarantining"
    shot_both(page, "device")
    page.set_viewport_size({"width": 390, "height": 844})  # a phone in the field
    shot(page, "device-phone")

    page.click("[data-testid=maintenance-form] button")
    page.locator("[data-testid=done]").wait_for()
    assert page.locator("[data-testid=device-live] [data-health]").first.get_attribute("data-health") == "maintenance"
    page.once("dialog", lambda dialog: dialog.accept())  # "retire this device?"
    page.click("[data-testid=retire]")
    page.locator("[data-testid=done]").wait_for()
    assert page.inner_text("[data-testid=status]") == "ปลดระวางแล้ว"
    assert page.locator("[data-testid=rotate]").count() == 0
    history = page.inner_text("[data-testid=device-live]")
    assert "device.maintenance" in history and "device.retire" in history and "user:somchai" in history


def test_csv_with_one_bad_row_is_refused_by_line_and_column_and_nothing_is_applied(stack: Stack, context: Any,
                                                                                    tmp_path: Any) -> None:
    page = login(context, stack, "somchai")
    bad = tmp_path / "devices.csv"
    bad.write_text(
        "device_id,feed,city,district,lat,lon,name\n"
        "air-lc-20,air,laem-chabang,บางละมุง,13.1,100.9,โรงเรียน\n"
        "air-lc-21,weather,laem-chabang,บางละมุง,13.1,100.9,ตลาด\n",
        encoding="utf-8",
    )
    page.click("[data-testid=nav-import]")
    for refused in ("ไม่ได้นำเข้าข้อมูลใดเลย", "nothing was imported"):  # Thai, then the same file in English
        upload(page, bad)
        errors = page.locator("[data-testid=import-errors] tbody tr")
        assert errors.count() == 1
        cells = [errors.nth(0).locator("td").nth(i).inner_text() for i in range(2)]
        assert cells == ["3", "feed"]
        assert refused in page.inner_text("[data-testid=import-refused]")
        shot(page, "import-errors")
        switch_language(page)
    page.goto(f"{stack.url}/devices/air-lc-20")  # the good row was not applied either
    assert page.inner_text("[data-testid=message]") == "ไม่พบข้อมูล"


def test_imported_device_overbank_alert_is_acknowledged_by_the_duty_officer(
    stack: Stack, context: Any, browser: Any, tmp_path: Any
) -> None:
    page = login(context, stack, "somchai")
    good = tmp_path / "devices.csv"
    good.write_text(
        "device_id,feed,city,district,lat,lon,name,site_bank_level_m,site_ground_level_m\n"
        "flood-lc-30,flood,laem-chabang,ทุ่งสุขลา,13.08,100.92,คลองทุ่งสุขลา,2.0,0.0\n",
        encoding="utf-8",
    )
    page.click("[data-testid=nav-import]")
    upload(page, good)
    assert "เพิ่ม 1" in page.inner_text("[data-testid=import-done]")
    row = page.locator("[data-testid=import-credentials] tbody tr").first
    password = row.locator("td").nth(1).inner_text()
    shot(page, "import-done")
    switch_language(page)
    upload(page, good)  # the same file again: an upsert that changes nothing, and issues no new password
    assert "1 unchanged" in page.inner_text("[data-testid=import-done]")
    assert page.locator("[data-testid=import-credentials]").count() == 0
    shot(page, "import-done")
    switch_language(page)

    duty = browser.new_context(viewport={"width": 390, "height": 844}, locale="th-TH")  # on a phone
    try:
        officer = login(duty, stack, "malee")
        officer.goto(f"{stack.url}/alerts")
        # 2.5 m on a 2 m bank is 125 %, reported for 90 s: past `rules.show_pending_after_s` (60 s) the overbank
        # rule's pending alert is shown, live on the open page
        now_ms = int(time.time() * 1000)
        publish(stack, "device.flood-lc-30", password, "city/laem-chabang/flood/flood-lc-30",
                {"level_m": 2.5, "ts": now_ms - 90_000}, {"level_m": 2.5, "ts": now_ms})
        group = "section.group[data-group*='rule=flood_level_overbank,city=laem-chabang']"
        alert = officer.locator(f"{group} article.alert[data-device=flood-lc-30]")
        alert.wait_for(timeout=WAIT_MS)
        shot_both(officer, "alerts-phone")
        alert.locator("[data-testid=ack-comment]").fill("ส่งทีมไปตรวจแล้ว")
        alert.locator("[data-testid=ack]").click()
        officer.locator("[data-testid=done]").wait_for()
        acked = officer.locator(f"{group} article.alert[data-device=flood-lc-30] [data-testid=acked]").inner_text()
        assert "user:malee" in acked and "ส่งทีมไปตรวจแล้ว" in acked
    finally:
        duty.close()
    page.goto(f"{stack.url}/alerts")
    shot_both(page, "alerts")


def test_viewer_sees_no_change_buttons_and_the_server_refuses_the_change_anyway(stack: Stack, context: Any) -> None:
    page = login(context, stack, "prasert")
    assert page.locator("[data-testid=nav-register]").count() == 0
    page.goto(f"{stack.url}/devices/air-lc-01")
    assert page.locator("[data-testid=read-only]").count() == 1
    for action in ("rotate", "retire"):
        assert page.locator(f"[data-testid={action}]").count() == 0
    page.goto(f"{stack.url}/alerts")
    assert page.locator("article.alert").count() >= 1
    assert page.locator("[data-testid=ack]").count() == 0
    shot_both(page, "alerts-viewer")
    # the viewer's own session and CSRF token, sending the forms the page did not show
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    for path, form in (("/devices/air-lc-01/retire", {}), ("/devices/air-lc-01/rotate", {}),
                       ("/devices/air-lc-01/maintenance", {"hours": "2"})):
        answer = page.request.post(f"{stack.url}{path}", form={"csrf": csrf, **form}, max_redirects=0)
        assert answer.status == 403, path
    alert_id = page.locator("article.alert:not(:has([data-testid=acked]))").first.get_attribute("data-alert")
    answer = page.request.post(f"{stack.url}/alerts/{alert_id}/ack", form={"csrf": csrf, "comment": "x"},
                               max_redirects=0)
    assert answer.status == 403
    device = httpx.get(f"{stack.url}/devices/air-lc-01", cookies=_cookies(context), timeout=10)
    assert "ปลดระวางแล้ว" not in device.text.split("data-testid=\"status\"")[1][:60]
    page.goto(f"{stack.url}/alerts")
    assert page.locator(f"article.alert[data-alert='{alert_id}'] [data-testid=acked]").count() == 0


def test_city_scoped_engineer_never_sees_another_city(stack: Stack, context: Any) -> None:
    page = login(context, stack, "cm-eng")
    rows = page.locator("[data-testid=device-rows] tr[data-device]")
    assert [rows.nth(i).get_attribute("data-device") for i in range(rows.count())] == ["air-cm-01"]
    shot_both(page, "devices-scoped")
    # a filter or a URL naming the other city finds nothing; the page answers as for an unknown device
    page.goto(f"{stack.url}/devices?city=laem-chabang")
    assert page.locator("[data-testid=device-rows] tr[data-device]").count() == 0
    page.goto(f"{stack.url}/devices/air-lc-01")
    assert page.inner_text("[data-testid=message]") == "ไม่พบข้อมูล"
    live = page.request.get(f"{stack.url}/devices/rows?city=laem-chabang")
    assert "air-lc-01" not in live.text()
    page.goto(f"{stack.url}/alerts")
    text = page.inner_text("[data-testid=alerts-live]")
    assert "chiangmai" in text and "laem-chabang" not in text
    # registering into another city is refused by the server, whatever the form offered
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    answer = page.request.post(f"{stack.url}/register", form={
        "csrf": csrf, "device_id": "air-lc-99", "feed": "air", "city": "laem-chabang", "district": "x"})
    assert answer.status == 422
    page.goto(f"{stack.url}/devices/air-lc-99")
    assert page.inner_text("[data-testid=message]") == "ไม่พบข้อมูล"


def test_every_page_reads_in_both_languages_with_bangkok_times(stack: Stack, context: Any) -> None:
    login_page = context.new_page()
    for lang in ("th", "en"):
        login_page.goto(f"{stack.url}/login?lang={lang}")
        assert login_page.get_attribute("html", "lang") == lang
        shot(login_page, "login")
    page = login(context, stack, "somchai")
    shot_both(page, "devices")
    page.goto(f"{stack.url}/alerts")
    started = page.locator("article.alert small").first.inner_text()
    assert str(bangkok_year() + 543) in started  # Buddhist-era year in Thai
    page.click("[data-testid=lang-switch]")
    page.wait_for_load_state()
    assert page.get_attribute("html", "lang") == "en"
    assert "Active alerts" in page.inner_text("h1")
    assert str(bangkok_year()) in page.locator("article.alert small").first.inner_text()
    page.goto(f"{stack.url}/devices/air-lc-01")
    page.click("[data-testid=rotate]")  # credentials shown once, in English this time
    assert page.inner_text("[data-testid=mqtt-username]") == "device.air-lc-01"
    shot(page, "credentials")
    # the switch is remembered for the person, not the browser: a new session opens in English
    other = context.browser.new_context()
    try:
        again = login(other, stack, "somchai")
        assert again.get_attribute("html", "lang") == "en"
        assert again.inner_text("h1") == "Devices"
        again.click("[data-testid=lang-switch]")  # back to Thai for the other tests
        again.wait_for_load_state()
        assert again.get_attribute("html", "lang") == "th"
    finally:
        other.close()
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{stack.url}/devices")
    shot(page, "devices-phone")


def _cookies(context: Any) -> dict[str, str]:
    return {c["name"]: c["value"] for c in context.cookies()}
