"""The /metrics response every llmcell edge serves (Prometheus text exposition format 0.0.4)."""

from __future__ import annotations

from starlette.responses import Response

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def metrics_response(text: bytes | str) -> Response:
    return Response(text, media_type=CONTENT_TYPE)
