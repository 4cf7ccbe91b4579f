"""`/docs` without a CDN: Swagger UI's files come from the `swagger-ui-bundle` package and are
served by the API itself, so the page works on a machine without internet access.

FastAPI's own `/docs` page loads Swagger UI from cdn.jsdelivr.net (blank offline), and its
`/redoc` page loads ReDoc from there too; `serve_docs_offline` replaces the first and removes the
second (no package ships ReDoc's bundle).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.routing import BaseRoute

ASSETS_PATH = "/docs/assets"


def serve_docs_offline(app: FastAPI, docs_url: str = "/docs") -> None:
    """Serve Swagger UI at `docs_url` with its assets under `/docs/assets` (call once the app
    is built; it replaces FastAPI's CDN-backed `/docs` and drops `/redoc`)."""
    import swagger_ui_bundle

    oauth2_url = app.swagger_ui_oauth2_redirect_url or f"{docs_url}/oauth2-redirect"
    replaced = {docs_url, oauth2_url, app.redoc_url}
    app.router.routes[:] = [r for r in app.router.routes if _path(r) not in replaced]
    app.docs_url = docs_url
    app.redoc_url = None
    app.mount(
        ASSETS_PATH, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger-ui"
    )

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{oauth2_url}",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon-32x32.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    app.add_api_route(docs_url, swagger_ui, methods=["GET"], include_in_schema=False)
    app.add_api_route(oauth2_url, oauth2_redirect, methods=["GET"], include_in_schema=False)


def _path(route: BaseRoute) -> str | None:
    return getattr(route, "path", None)
