"""The playground's routes and shipped assets, without a model server: the page and everything it loads come
from the package, nothing from the internet, and the sample images are real easy-VQA test PNGs."""
from __future__ import annotations

import base64
import fnmatch
import io
import re
import tomllib
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from serving.api.playground import router
from serving.api.playground.routes import ASSETS, STATIC

ROOT = Path(__file__).resolve().parents[1]
SVG_NAMESPACE = "http://www.w3.org/2000/svg"  # a name, never fetched


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    app.include_router(router)
    return TestClient(app)


def test_page_redirects_relative_and_serves_html(client: TestClient) -> None:
    moved = client.get("/playground", follow_redirects=False)
    assert moved.status_code == 307 and moved.headers["location"] == "playground/"  # keeps any route prefix
    page = client.get("/playground/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="static/app.js">' in page.text


def test_every_referenced_asset_is_served_with_its_type(client: TestClient) -> None:
    html = client.get("/playground/").text
    referenced = set(re.findall(r'(?:src|href)="static/([^"]+)"', html))
    for name in ASSETS:
        if name.endswith(".js"):
            referenced |= set(re.findall(r'from "\./([^"]+)"', (STATIC / name).read_text()))
    shipped = {"app.js", "style.css", "api.js", "charts.js", "results.js", "indexes.js", "dom.js", "feedback.js"}
    assert shipped <= referenced
    types = {".js": "text/javascript", ".css": "text/css"}
    for name in referenced:
        reply = client.get(f"/playground/static/{name}")
        assert reply.status_code == 200, name
        assert reply.headers["content-type"].startswith(types[name[name.rindex("."):]]), name


def test_nothing_is_fetched_from_elsewhere() -> None:
    for name in ASSETS:
        text = (STATIC / name).read_text().replace(SVG_NAMESPACE, "")
        assert not re.search(r"https?://|(?:src|href)=\"//|@import", text), f"{name} refers outside the package"


def test_only_shipped_assets_are_served(client: TestClient) -> None:
    for name in ("routes.py", "__init__.py", "missing.js", "..%2Froutes.py"):
        assert client.get(f"/playground/static/{name}").status_code == 404, name


def test_samples_are_easy_vqa_test_pngs(client: TestClient) -> None:
    import easy_vqa

    samples = client.get("/playground/samples").json()["data"]
    assert len(samples) >= 4 and len({s["image"] for s in samples}) == len(samples)
    # The first rewords an easy-VQA question (the paraphrase split), as README.md's first example says.
    assert samples[0]["reworded_from"] == "what color is the rectangle?" != samples[0]["question"]
    for sample in samples:
        assert sample["question"].endswith("?") and sample["answer"] in easy_vqa.get_answers()
        prefix, payload = sample["image"].split(",", 1)
        assert prefix == "data:image/png;base64"
        image = Image.open(io.BytesIO(base64.b64decode(payload)))
        assert image.format == "PNG" and image.size == (64, 64)


def test_package_data_ships_every_asset() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["serving"]
    for name in ASSETS:
        assert any(fnmatch.fnmatch(f"api/playground/static/{name}", p) for p in patterns), name
