"""The web page at ``/``: static files shipped inside the package; the page itself calls /v1."""

from importlib.resources import files

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC = files("service.transport") / "static"
MEDIA_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# The files change with the package, not per request; revalidate so an upgrade shows at once.
HEADERS = {"Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(
        str(STATIC / "index.html"), media_type=MEDIA_TYPES["index.html"], headers=HEADERS
    )


@router.get("/static/{name}")
async def static_file(name: str) -> FileResponse:
    """Only the page's own files, by exact name: nothing else on disk is reachable."""
    if name not in MEDIA_TYPES:
        raise HTTPException(status_code=404, detail=f"no static file {name!r}")
    return FileResponse(str(STATIC / name), media_type=MEDIA_TYPES[name], headers=HEADERS)
