"""Where a member finds the admin: one URL, or several (admins sharing a PostgreSQL, one of them
leading), written `URL1,URL2`."""

from __future__ import annotations


def admin_urls(admin: str) -> list[str]:
    """The URLs of `admin`; ValueError naming what is not an http(s) URL."""
    urls = [u.strip().rstrip("/") for u in admin.split(",") if u.strip()]
    bad = [u for u in urls if not u.startswith(("http://", "https://"))]
    if not urls or bad:
        raise ValueError(f"admin={admin!r}: {', '.join(bad) or 'nothing'} is not an http(s) "
                         "URL (give one, or several separated by commas)")
    return urls
