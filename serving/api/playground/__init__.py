"""The playground: a page, served by the same app, where a person asks a question and watches R2-T2 re-route it.

The page (static/) talks to the server only through the public HTTP API (`/v1/models`,
`/v1/chat/completions`, `/v1/indexes`, `/v1/jobs`), so it shows exactly what a client can get. The one
extra route, `GET /playground/samples`, hands it a few shipped easy-VQA test images to try in one click.
"""
from serving.api.playground.routes import router

__all__ = ["router"]
