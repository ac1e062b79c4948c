"""The HTTP client of the request path: the gateway's calls to model servers and a model server's
calls to its external engine, over aiohttp's connection pool.

What it is for: many concurrent requests to a few hosts. aiohttp keeps idle connections per host
in a deque (checkout is O(1), unlike a pool that scans every connection for every request),
closes idle keep-alive connections after `idle_timeout` and drops those the peer closed (no
CLOSE-WAIT pile-up). There is no connection ceiling unless one is configured (`limit`); a call
beyond it fails at once with `RelayBusy` (the caller answers 429 + Retry-After), never a wait for
a connection that ends in a 503.

Control-plane calls (the admin, KV events) stay on httpx: they are few.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import AsyncIterator

import aiohttp
from yarl import URL


class RelayError(Exception):
    """The peer could not be reached, or the exchange broke (connect, read, timeout)."""


class RelayBusy(RelayError):
    """`limit` calls are in flight already."""


class RelayResponse:
    __slots__ = ("_resp", "_relay", "status", "headers", "_closed")

    def __init__(self, resp: aiohttp.ClientResponse, relay: "Relay") -> None:
        self._resp, self._relay = resp, relay
        self.status = resp.status
        self.headers = resp.headers
        self._closed = False

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise RelayError(f"{type(e).__name__}: {e}") from None
        finally:
            self.close()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (raw bytes; SSE events may span chunks)."""
        try:
            async for data in self._resp.content.iter_any():
                yield data
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise RelayError(f"{type(e).__name__}: {e}") from None
        finally:
            self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._relay.in_flight -= 1
            self._resp.release()


class Relay:
    def __init__(self, headers: dict[str, str] | None = None,
                 ssl_context: ssl.SSLContext | bool = True, limit: int = 0,
                 connect_timeout: float = 2.0, read_timeout: float | None = None,
                 idle_timeout: float = 15.0) -> None:
        """`limit`: calls in flight at most (0: no ceiling); `read_timeout`: the longest silence
        while reading (None: none, a stream may pause)."""
        if limit < 0:
            raise ValueError(f"limit={limit} must be >= 0 (0: no ceiling)")
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.ssl = ssl_context
        self.limit = limit
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout,
                                             sock_read=read_timeout)
        self.idle_timeout = idle_timeout
        self.in_flight = 0
        self._urls: dict[str, URL] = {}
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ssl=self.ssl,
                                             keepalive_timeout=self.idle_timeout,
                                             enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout,
                                                  headers=self.headers, auto_decompress=False,
                                                  cookie_jar=aiohttp.DummyCookieJar(),
                                                  skip_auto_headers=("User-Agent",))
        return self._session

    async def post(self, url: str, body: bytes) -> RelayResponse:
        return await self.request("POST", url, body)

    async def request(self, method: str, url: str, body: bytes | None = None) -> RelayResponse:
        if self.limit and self.in_flight >= self.limit:
            raise RelayBusy(f"{self.in_flight} calls in flight (limit {self.limit})")
        self.in_flight += 1
        try:
            target = self._urls.get(url)
            if target is None:  # parsed once per replica and path
                if len(self._urls) > 4096:
                    self._urls.clear()
                target = self._urls[url] = URL(url)
            resp = await self._open().request(method, target, data=body)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            self.in_flight -= 1
            raise RelayError(f"{type(e).__name__}: {e}") from None
        except BaseException:
            self.in_flight -= 1
            raise
        return RelayResponse(resp, self)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
