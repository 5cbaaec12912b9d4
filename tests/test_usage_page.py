"""The ``/usage`` page of ``mesh serve`` in a real headless Chromium (system package, driven by
Selenium): it signs in with an admin key, shows the totals ``mesh usage`` prints for the same ledger,
and its charts render (screenshot saved under the test's tmp dir, canvas pixels checked); the page
and its API refuse requests without an admin key."""

from __future__ import annotations

import io
import json
import shutil
import tempfile

import pytest

pytest.importorskip("uvicorn")
webdriver = pytest.importorskip("selenium.webdriver")

import httpx  # noqa: E402
from test_server_harness import RunningServer  # noqa: E402

from langchain_mesh import Mesh  # noqa: E402
from langchain_mesh.cli import main as cli_main  # noqa: E402
from langchain_mesh.policies.scope import call_scope  # noqa: E402
from langchain_mesh.schema import CompletionRequest, EmbeddingRequest, Message  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ADMIN, USER = "sk-admin-0123456789abcdef", "sk-user-0123456789abcdef"
CHAT, EMB = "scripted:fake:chat", "scripted:fake:emb"


@pytest.fixture
def served(tmp_path):
    db = tmp_path / "usage.db"
    mesh = Mesh({
        "connections": {"fake": {"type": "scripted", "models": [
            {"id": "chat"}, {"id": "emb", "purposes": ["TEXT_EMBEDDING_EXTRACTION"]}]}},
        "server": {"api_keys": [{"name": "ops", "key": ADMIN, "admin": True},
                                {"name": "app", "key": USER, "team": "web"}]},
        "usage": {"path": str(db)}, "prices": {CHAT: {"input": 3.0, "output": 15.0}}})
    for key, n in (("alpha", 3), ("beta", 5)):
        with call_scope(key=key):
            for i in range(n):
                mesh.complete(mesh.get_llm(CHAT), CompletionRequest(messages=[
                    Message(role="user", content="tell me something about the number %d" % i)]))
    with call_scope(key="beta"):
        mesh.embed(mesh.get_llm(EMB), EmbeddingRequest(texts=["no price for this one"]))
    with RunningServer(mesh) as srv:
        srv.db = db
        yield srv


def test_page_and_api_refuse_requests_without_the_admin_key(served):
    for path in ("/usage/api", "/usage", "/usage/chart.umd.min.js"):
        for headers in ({}, {"authorization": f"Bearer {USER}"}, {"authorization": "Bearer nope"},
                        {"cookie": "mesh_usage=99999999999.deadbeef"}):
            r = httpx.get(served.url + path, headers=headers, timeout=10)
            assert r.status_code == 401, (path, headers, r.status_code)
            assert "ledger" not in r.text or "Sign in" in r.text
    r = httpx.post(served.url + "/usage/login", data={"key": USER}, timeout=10)
    assert r.status_code == 401 and "set-cookie" not in r.headers
    api = httpx.get(served.url + "/usage/api", headers={"authorization": f"Bearer {ADMIN}"}, timeout=10)
    assert api.status_code == 200 and api.json()["totals"][0]["requests"] == 9
    # the LLM API still refuses the admin page's cookie: it is no API key
    login = httpx.post(served.url + "/usage/login", data={"key": ADMIN}, timeout=10)
    assert login.status_code == 303 and "HttpOnly" in login.headers["set-cookie"]
    cookie = login.headers["set-cookie"].split(";")[0]
    assert httpx.get(served.url + "/usage/api", headers={"cookie": cookie}, timeout=10).status_code == 200
    assert httpx.get(served.url + "/v1/models", headers={"cookie": cookie}, timeout=10).status_code == 401


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                    reason="chromium and chromium-driver are not installed (apt-get install -y chromium "
                           "chromium-driver; CI has them)")
def test_usage_page_in_headless_chromium(served, tmp_path, capsys):
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="mesh-chromium-", dir=tmp_path)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1400,1800"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        driver.get(served.url + "/usage")
        assert driver.find_elements(By.ID, "sign-in") and not driver.find_elements(By.ID, "chart-day")
        driver.find_element(By.ID, "key").send_keys(ADMIN)
        driver.find_element(By.ID, "sign-in").click()
        WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.body.dataset.loaded") == "yes")

        def table(tid: str) -> dict[str, dict[str, str]]:
            out = {}
            for tr in driver.find_elements(By.CSS_SELECTOR, f"#{tid} tbody tr"):
                cells = {td.get_attribute("data-col"): td.text for td in tr.find_elements(By.TAG_NAME, "td")}
                out[tr.get_attribute("data-name") or "-"] = cells
            return out

        by_key, by_llm, total = table("by-key"), table("by-llm"), table("totals")["-"]
        # the same numbers as `mesh usage` on the same ledger
        for by, shown in (("key", by_key), ("llm", by_llm)):
            assert cli_main(["usage", "--db", str(served.db), "--by", by, "--format", "json"]) == 0
            cli = json.loads(capsys.readouterr().out)
            assert sorted(shown) == sorted(r[by] or "" for r in cli)
            for r in cli:
                cells = shown[r[by] or ""]
                for col in ("requests", "errors", "refused", "input_tokens", "output_tokens", "unpriced"):
                    assert cells[col] == str(r[col]), (by, r[by], col)
                assert cells["cost"] == ("unknown" if r["cost"] is None else f"{r['cost']:.6f}")
        assert cli_main(["usage", "--db", str(served.db), "--by", "", "--format", "json"]) == 0
        grand = json.loads(capsys.readouterr().out)[0]
        assert total["requests"] == str(grand["requests"]) == "9"
        assert total["cost"] == f"{grand['cost']:.6f}" and total["unpriced"] == "1"

        shot = tmp_path / "usage-page.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10000
        for cid in ("chart-day", "chart-llm", "chart-key"):
            canvas = driver.find_element(By.ID, cid)
            img = Image.open(io.BytesIO(canvas.screenshot_as_png)).convert("RGB")
            colours = img.getcolors(maxcolors=1 << 20) or []
            inked = sum(n for n, c in colours if c != (255, 255, 255))
            assert len(colours) > 20 and inked > 0.02 * img.width * img.height, (cid, len(colours), inked)
            img.save(tmp_path / f"{cid}.png")
        # the bars are drawn: the LLM chart has the price table's colour, the key chart both token colours
        llm_img = Image.open(tmp_path / "chart-llm.png")
        assert any(abs(r - 0x2a) < 8 and abs(g - 0x9d) < 8 and abs(b - 0x8f) < 8
                   for _n, (r, g, b) in llm_img.getcolors(maxcolors=1 << 20))
    finally:
        driver.quit()
