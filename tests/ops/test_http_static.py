"""The dashboard's HTTP side, from the real service over loopback: the page, its static files
(with the content types browsers need for ES modules) and the client config endpoint.

The service runs on an in-process source (``start_service``): this is the HTTP side, and
/health answers from the fake's ping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

import broadcaster
from broadcaster.service import RunningService
from tests.services import StartService

STATIC_DIR = Path(broadcaster.__file__).parent / "static"


@pytest.fixture
async def service(start_service: StartService) -> RunningService:
    return await start_service()


@pytest.fixture
async def http(service: RunningService) -> AsyncIterator[httpx.AsyncClient]:
    # Loopback HTTP only: verify=False skips loading the CA bundle.
    async with httpx.AsyncClient(base_url=service.http_url, timeout=10, verify=False) as client:
        yield client


def test_static_files_are_inside_the_package() -> None:
    # The wheel packages the broadcaster directory, so the files ship with it.
    for name in (
        "index.html",
        "dashboard.js",
        "dashboard-options.js",
        "dashboard.css",
        "broadcaster-client.js",
    ):
        assert (STATIC_DIR / name).is_file(), name


async def test_root_serves_the_dashboard_page(http: httpx.AsyncClient) -> None:
    response = await http.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = response.text
    assert '<script type="module" src="static/dashboard.js"></script>' in page
    assert 'id="connection-state"' in page
    assert page == (STATIC_DIR / "index.html").read_text()


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("broadcaster-client.js", "text/javascript; charset=utf-8"),
        ("dashboard.js", "text/javascript; charset=utf-8"),
        ("dashboard-options.js", "text/javascript; charset=utf-8"),
        ("dashboard.css", "text/css; charset=utf-8"),
        ("index.html", "text/html; charset=utf-8"),
    ],
)
async def test_static_files_have_their_content_type(
    http: httpx.AsyncClient, name: str, content_type: str
) -> None:
    response = await http.get(f"/static/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content == (STATIC_DIR / name).read_bytes()


async def test_client_module_is_served_as_an_es_module(http: httpx.AsyncClient) -> None:
    response = await http.get("/static/broadcaster-client.js")
    assert "export class BroadcasterClient extends EventTarget" in response.text


async def test_static_files_can_be_revalidated(http: httpx.AsyncClient) -> None:
    first = await http.get("/static/dashboard.js")
    assert "no-cache" in first.headers["cache-control"]
    again = await http.get("/static/dashboard.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304


@pytest.mark.parametrize(
    "path", ["/", "/static/broadcaster-client.js", "/static/dashboard.js", "/static/dashboard.css"]
)
async def test_static_files_may_be_loaded_from_another_origin(
    http: httpx.AsyncClient, path: str
) -> None:
    """A page on another origin imports the client module: a module script is a CORS load."""
    origin = {"Origin": "https://dashboards.example.net"}
    response = await http.get(path, headers=origin)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    again = await http.get(path, headers={**origin, "If-None-Match": response.headers["etag"]})
    assert again.status_code == 304
    assert again.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize(
    "path", ["/api/client-config", "/api/websocket/status", "/health", "/metrics"]
)
async def test_api_and_operator_endpoints_send_no_cors_header(
    http: httpx.AsyncClient, path: str
) -> None:
    response = await http.get(path, headers={"Origin": "https://dashboards.example.net"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    "path",
    [
        "/static/no-such-file.js",
        "/static/../http.py",
        "/static/%2e%2e/http.py",
        "/static/..%2fhttp.py",
        "/static/__init__.py",  # not a static file type, even if it existed there
    ],
)
async def test_unknown_or_outside_files_are_not_found(http: httpx.AsyncClient, path: str) -> None:
    response = await http.get(path)
    assert response.status_code == 404
    assert "import" not in response.text


async def test_client_config_points_at_the_websocket_server(
    http: httpx.AsyncClient, service: RunningService
) -> None:
    response = await http.get("/api/client-config")
    assert response.status_code == 200
    port = service.websocket.port
    assert response.json() == {
        "websocketUrl": f"ws://127.0.0.1:{port}/ws",
        "websocketPort": port,
        "websocketPath": "/ws",
    }


@pytest.mark.parametrize(
    ("host_header", "host_in_url"),
    [
        ("dash.example.net:8080", "dash.example.net"),  # opened from another machine
        ("dash.example.net", "dash.example.net"),
        ("10.1.2.3:8080", "10.1.2.3"),
        ("[::1]:8080", "[::1]"),
        ("odd!name", "127.0.0.1"),  # valid, but no host name: the address the server bound
    ],
)
async def test_client_config_uses_the_host_the_browser_used(
    http: httpx.AsyncClient, service: RunningService, host_header: str, host_in_url: str
) -> None:
    response = await http.get("/api/client-config", headers={"Host": host_header})
    assert response.status_code == 200
    port = service.websocket.port
    assert response.json()["websocketUrl"] == f"ws://{host_in_url}:{port}/ws"
