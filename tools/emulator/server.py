"""Serve the emulator over HTTPS on 127.0.0.1 with a throw-away CA (trustme).

HTTPS is not decoration: MSAL refuses a non-HTTPS authority, and serving TLS means the
connector's real certificate verification runs too (the CA is trusted through
``REQUESTS_CA_BUNDLE``, exactly as a corporate proxy CA would be).
"""

from __future__ import annotations

import ssl
import threading
from pathlib import Path

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from tools.emulator.app import EmulatorApp
from tools.emulator.state import DefenderState

# The connector's app in the default fixture (fixture values, not real secrets).
DEFAULT_TENANT = "0f6a1f4e-8d55-4b71-9a4c-e0f1d2c3b4a5"
DEFAULT_CLIENT = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
DEFAULT_SECRET = "emulator-client-secret"  # noqa: S105 - the emulator fixture's value


class _QuietHandler(WSGIRequestHandler):
    """Calls are recorded in the state (``/emulator/state``); no per-request stderr noise."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class EmulatorServer:
    def __init__(self, state: DefenderState, *, port: int = 0, ca_file: Path) -> None:
        import trustme

        self.state = state
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(ctx)
        ca_file.parent.mkdir(parents=True, exist_ok=True)
        ca.cert_pem.write_to_path(str(ca_file))
        self.ca_file = ca_file
        self._server: BaseWSGIServer = make_server(
            "127.0.0.1", port, EmulatorApp(state), threaded=True, ssl_context=ctx, request_handler=_QuietHandler
        )
        self.port = self._server.server_port
        self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="defender-emulator", daemon=True
        )

    def connector_settings(
        self, *, tenant: str = DEFAULT_TENANT, client: str = DEFAULT_CLIENT, secret: str = DEFAULT_SECRET
    ) -> dict[str, str]:
        """The app settings that point the connector at this emulator (one app of its fixture)."""
        return {
            "DEFENDER_TENANT_ID": tenant,
            "DEFENDER_CLIENT_ID": client,
            "DEFENDER_CLIENT_SECRET": secret,
            "DEFENDER_API_URL": self.url,
            "DEFENDER_AUTHORITY_HOST": self.url,
            "GRAPH_API_URL": self.url,
            "SECURITY_API_URL": self.url,
            "REQUESTS_CA_BUNDLE": str(self.ca_file),
        }

    def start(self) -> EmulatorServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
