"""The HTTP API of postsched, on FastAPI: see ``docs/http-api.md``."""

from scheduler.http.app import HttpSettings, create_http_app

__all__ = ["HttpSettings", "create_http_app"]
