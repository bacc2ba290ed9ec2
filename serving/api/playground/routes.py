"""HTTP routes of the playground: the page, its static assets, and the sample images.

The page lives at `/playground/` and uses relative URLs only, so it also works when the app is mounted
under a route prefix (e.g. `/torch/playground/`).
"""
from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse, RedirectResponse, Response

from serving.api.playground.samples import easy_vqa_samples

MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
               ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
STATIC = resources.files("serving.api.playground") / "static"
ASSETS = frozenset(entry.name for entry in STATIC.iterdir() if entry.name.endswith(tuple(MEDIA_TYPES)))

router = APIRouter(tags=["playground"])


def _asset(name: str) -> Response:
    """One shipped file; anything not shipped in static/ is a 404 (no path is ever joined from user input)."""
    if name not in ASSETS:
        raise HTTPException(status_code=404, detail=f"no playground asset {name!r}")
    suffix = name[name.rindex("."):]
    return Response((STATIC / name).read_bytes(), media_type=MEDIA_TYPES[suffix],
                    headers={"Cache-Control": "no-cache"})


@router.get("/playground", include_in_schema=False)
async def playground_redirect() -> RedirectResponse:
    # Relative, so a route prefix in front of the app is kept: /torch/playground -> /torch/playground/.
    return RedirectResponse("playground/", status_code=307)


@router.get("/playground/", include_in_schema=False)
async def playground_page() -> Response:
    return _asset("index.html")


@router.get("/playground/static/{name}", include_in_schema=False)
async def playground_asset(name: str) -> Response:
    return _asset(name)


@router.get("/playground/samples")
async def playground_samples() -> JSONResponse:
    """A few easy-VQA test images (PNG data URLs) with their question and expected answer."""
    return JSONResponse({"object": "list", "data": list(easy_vqa_samples())})
