"""The HTTP client every member (gateway, model server, endpoint picker) calls the admin with:
given several admin URLs (`--admin URL1,URL2`, one per admin sharing a PostgreSQL), it sends each
call to the one that leads and moves by itself when that changes.

A call goes to the admin it last found leading. When that admin cannot be reached, the next URL
is tried; when it answers 503 as a standby (`X-Llmcell-Leader` names the leader), the named
leader is. A body is sent again only when it can be (bytes, not a stream). With one URL it is a
plain client.
"""

from __future__ import annotations

import httpx

from llmcell.config.admins import admin_urls
from llmcell.config.security import CellSecurity

LEADER_HEADER = "x-llmcell-leader"


class LeaderTransport(httpx.AsyncBaseTransport):
    def __init__(self, urls: list[str], inner: httpx.AsyncBaseTransport) -> None:
        self.urls = urls
        self.current = urls[0]
        self.inner = inner

    def _at(self, request: httpx.Request, base: str) -> httpx.Request:
        target = httpx.URL(base)
        request.url = request.url.copy_with(scheme=target.scheme, host=target.host,
                                            port=target.port)
        request.headers["host"] = target.netloc.decode()
        return request

    def _after(self, url: str) -> str:
        i = self.urls.index(url) if url in self.urls else -1
        return self.urls[(i + 1) % len(self.urls)]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        resendable = isinstance(request.stream, httpx.ByteStream)
        for attempt in range(2 * len(self.urls)):
            last = attempt == 2 * len(self.urls) - 1
            try:
                response = await self.inner.handle_async_request(self._at(request, self.current))
            except (httpx.ConnectError, httpx.ConnectTimeout):
                if last or len(self.urls) == 1:
                    raise
                self.current = self._after(self.current)
                continue
            leader = response.headers.get(LEADER_HEADER, "").rstrip("/")
            if response.status_code != 503 or not leader or leader == self.current:
                return response
            self.current = leader if leader.startswith(("http://", "https://")) else \
                self._after(self.current)
            if last or not resendable:
                return response
            await response.aclose()
        raise httpx.ConnectError("no admin answered", request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def admin_client(security: CellSecurity, admin: str, timeout: float,
                 transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """A client for the admin(s) named by `admin`, with the member's credential and CA."""
    urls = admin_urls(admin)
    settings = security.client(base_url=urls[0], timeout=timeout)
    if len(urls) == 1:
        return httpx.AsyncClient(transport=transport, **settings)
    inner = transport or httpx.AsyncHTTPTransport(verify=settings.pop("verify"))
    settings.pop("verify", None)
    return httpx.AsyncClient(transport=LeaderTransport(urls, inner), **settings)
