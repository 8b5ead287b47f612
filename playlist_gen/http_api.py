"""`generate_playlist.py --serve`: the playlist service over HTTP (FastAPI on uvicorn) and the web page at `/`.

Routes only route: the work is PlaylistService's (playlist_gen.service). Bodies are pydantic models, so the
OpenAPI page (/docs) documents them. A bad request gets a 4xx with one sentence ({"error": ...}); nothing sends a
stack trace to a client.
"""

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Literal

from config import SHOWN

from .service import MAX_SONGS, MAX_TITLE, PlaylistService, ServiceError

log = logging.getLogger(__name__)
PAGE = Path(__file__).with_name("static") / "index.html"


def make_app(service: PlaylistService):
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from pydantic import BaseModel, Field
    from starlette.exceptions import HTTPException

    class PlaylistRequest(BaseModel):
        title: str = Field(description="a playlist title or a mood, in any language", max_length=MAX_TITLE * 4)
        seed_songs: list[str] = Field(default=[], description="song ids or `name - artist`", max_length=50)
        num_songs: int | None = Field(default=None, ge=1, le=MAX_SONGS)
        pick: Literal[SHOWN] | None = Field(default=None, description="how the shown songs are drawn")

    class FeedbackRequest(BaseModel):
        like: list[int] = Field(default=[], description="positions liked: they seed the next songs", max_length=500)
        skip: list[int] = Field(default=[], description="positions skipped: never again", max_length=500)
        action: Literal["more", "new"] | None = Field(default=None, description="more: the next songs; new: "
                                                                                   "forget the likes")

    class SongOut(BaseModel):
        position: int
        id: str
        name: str
        artist: str
        cluster: str | None
        score: float | None
        reason: str

    class PlaylistOut(BaseModel):
        id: str
        title: str
        songs: list[SongOut]
        seed_songs: list[str]
        note: str

    class FeedbackOut(BaseModel):
        recorded: bool
        playlist: PlaylistOut | None

    app = FastAPI(title="generate_playlist", description="Type a title or a mood, get a playlist; like and skip.")

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, e: ServiceError):
        return JSONResponse({"error": str(e)}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "body"
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        return JSONResponse({"error": str(e.detail)}, status_code=e.status_code)

    @app.exception_handler(Exception)
    async def internal(request: Request, e: Exception):
        log.exception("request %s %s failed", request.method, request.url.path)
        return JSONResponse({"error": "internal error; the service log says more"}, status_code=500)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page():
        return PAGE.read_text(encoding="utf-8")

    @app.post("/playlists", response_model=PlaylistOut)
    def create(body: PlaylistRequest):
        return asdict(service.create(body.title, body.seed_songs, body.num_songs, body.pick))

    @app.post("/playlists/{playlist_id}/feedback", response_model=FeedbackOut)
    def feedback(playlist_id: str, body: FeedbackRequest):
        playlist = service.feedback(playlist_id, body.like, body.skip, body.action)
        return {"recorded": True, "playlist": asdict(playlist) if playlist else None}

    @app.get("/songs", response_model=list[SongOut])
    def songs(q: str = "", limit: int = 10):
        return [asdict(s) for s in service.search(q, max(1, min(limit, 50)))]

    @app.get("/health")
    def health():
        return service.health()

    return app


def serve(cfg) -> None:
    """Load the service once, then answer until Ctrl-C."""
    import uvicorn

    from .feedback_log import FeedbackLog

    service = PlaylistService(cfg)
    service.log = FeedbackLog(cfg.feedback_db_path, service.versions)
    g = cfg.generate
    print(f"serving on http://{g.host}:{g.port}/ (API docs at /docs); feedback goes to {cfg.feedback_db_path}",
          flush=True)
    uvicorn.run(make_app(service), host=g.host, port=g.port, log_level="warning")
