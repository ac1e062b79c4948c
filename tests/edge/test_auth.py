"""The shared auth check: what identifies a caller, what each refusal says, and the route rules,
with an app built from the middleware alone."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from llmcell.edge.auth import (CELL_ONLY, OPEN, AuthError, Authenticator, AuthMiddleware,
                               KeyTable, principal_of)
from llmcell.protocol.auth import KEY, KeyRecord, bearer, key_hash, new_key

SECRET = b"s" * 32
CELL_TOKEN = "c" * 40


def record(key: str, role: str = "user", **kw) -> KeyRecord:
    return KeyRecord(kw.pop("id", "key_1"), "team-a", role, key_hash(SECRET, key), **kw)


def test_keys_are_256_bits_of_url_safe_text():
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100 and all(KEY.match(k) for k in keys)


@pytest.mark.parametrize("header,message", [
    (None, "no API key"), ("Basic abc", "must be 'Bearer <key>'"), ("Bearer", "must be"),
    ("Bearer a b", "must be"), ("Bearer " + "x" * 600, "over 512 characters"),
    ("Bearer sk-llmcell-" + "A" * 43, "not valid"),  # the right shape, an unknown body
    ("Bearer sk-llmcell-short", "not valid"), ("Bearer " + "c" * 39, "not valid"),
])
def test_what_is_not_a_valid_credential(header, message):
    auth = Authenticator(CELL_TOKEN, lambda: KeyTable.of(SECRET, []))
    with pytest.raises(AuthError, match=message) as e:
        auth.identify(header)
    assert e.value.status == 401 and e.value.code == "invalid_api_key"


def test_keys_revoked_or_expired_are_refused_and_the_cell_token_is_the_cell():
    live, gone, old = new_key(), new_key(), new_key()
    now = [1000.0]
    table = KeyTable.of(SECRET, [record(live, id="k1", expires=2000.0),
                                 record(gone, id="k2", revoked=True),
                                 record(old, id="k3", expires=999.0)])
    auth = Authenticator(CELL_TOKEN, lambda: table, clock=lambda: now[0])
    assert auth.identify(f"Bearer {live}").key_id == "k1"
    with pytest.raises(AuthError, match="k2 has been revoked"):
        auth.identify(f"Bearer {gone}")
    with pytest.raises(AuthError, match="k3 has expired"):
        auth.identify(f"Bearer {old}")
    now[0] = 2000.0  # the live one's expiry passes
    with pytest.raises(AuthError, match="expired"):
        auth.identify(f"bearer {live}")
    assert auth.identify(f"Bearer {CELL_TOKEN}").cell
    assert bearer("  Bearer  tok ") == "tok"


def test_no_table_yet_refuses_keys_but_not_the_cell():
    auth = Authenticator(CELL_TOKEN, lambda: None)
    with pytest.raises(AuthError):
        auth.identify(f"Bearer {new_key()}")
    assert auth.identify(f"Bearer {CELL_TOKEN}").cell


def app_with(table: KeyTable) -> TestClient:
    async def who(request):
        p = principal_of(request)
        return JSONResponse({"tenant": p.tenant if p else None, "role": p.role if p else None})

    routes = [Route(path, who, methods=["GET", "POST"])
              for path in ("/health", "/internal", "/read", "/write", "/other")]
    app = Starlette(routes=routes)
    app.add_middleware(
        AuthMiddleware, authenticator=Authenticator(CELL_TOKEN, lambda: table),
        rules=[("GET", "/health", OPEN), ("*", "/internal", CELL_ONLY), ("GET", "/read", "viewer"),
               ("POST", "/write", "admin")], default="user",
        error=lambda scope, e: JSONResponse({"detail": e.message, "code": e.code}, e.status))
    return TestClient(app)


def test_rules_pick_the_level_by_method_and_path():
    viewer, user, admin = new_key(), new_key(), new_key()
    client = app_with(KeyTable.of(SECRET, [record(viewer, "viewer", id="v"),
                                           record(user, "user", id="u"),
                                           record(admin, "admin", id="a")]))

    def call(method, path, key=None):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return client.request(method, path, headers=headers)

    assert call("GET", "/health").json() == {"tenant": None, "role": None}  # open: no principal
    assert call("POST", "/health").status_code == 401  # the open rule is GET only
    assert call("GET", "/read", viewer).status_code == 200
    r = call("POST", "/write", user)
    assert r.status_code == 403 and r.json()["code"] == "insufficient_role"
    assert "'admin' role" in r.json()["detail"]
    assert call("POST", "/write", admin).json()["role"] == "admin"
    assert call("GET", "/other", viewer).status_code == 403  # the default: user
    assert call("GET", "/other", user).status_code == 200
    r = call("GET", "/internal", admin)  # an API key, however strong, is not the cell
    assert r.status_code == 403 and "cell" in r.json()["detail"]
    assert call("GET", "/internal", CELL_TOKEN).json()["tenant"] == "cell"
    assert call("GET", "/read").status_code == 401


def test_a_key_limited_to_models_may_use_only_those():
    key = new_key()
    r = record(key, models=("/sax/test/*", "/sax/prod/chat"))
    assert r.may_use("/sax/test/a") and r.may_use("/sax/prod/chat")
    assert not r.may_use("/sax/prod/other") and not r.may_use("/sax/testing/a")
    assert record(key).may_use("/sax/anything/at-all")


def test_a_bad_rule_level_is_a_configuration_error():
    with pytest.raises(ValueError, match="'superuser'"):
        AuthMiddleware(None, Authenticator(None, lambda: None), [("*", "/x", "superuser")],
                       "user", None)
