"""Run the study app under uvicorn (``rltuner study serve``)."""

from __future__ import annotations

import contextlib
import secrets
import socket
from pathlib import Path

from rltuner.web.app import Limits, create_app


def lan_address() -> str | None:
    """This machine's address on the local network (for the link to share), or None if there is none."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.255.255.255", 1))  # no packet is sent: this only picks the outgoing interface
            address = str(probe.getsockname()[0])
    except OSError:
        return None
    return None if address.startswith("127.") else address


def serve(
    study_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    per_rater: int = 20,
    admin_token: str | None = None,
    limits: Limits | None = None,
    key_path: str | Path | None = None,
    echo: bool = True,
) -> None:
    """Serve the study until Ctrl-C; prints the listeners' link and the admin link with its token.

    Raises:
        DatasetError: not a study folder, or a database of another study.
    """
    import uvicorn

    token = admin_token or secrets.token_urlsafe(24)
    app = create_app(study_dir, admin_token=token, per_rater=per_rater, limits=limits, key_path=key_path)
    shown = host
    if host in ("0.0.0.0", "::"):
        shown = lan_address() or "127.0.0.1"
    store = app.state.store
    if echo:
        print(f"listeners: http://{shown}:{port}/", flush=True)
        print(f"admin:     http://{shown}:{port}/admin?token={token}", flush=True)
        print(f"each listener rates {store.per_rater} of the {len(store.pair_ids)} pairs", flush=True)
        print(f"ratings are saved to {store.path} as they come; Ctrl-C stops the server", flush=True)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", limit_concurrency=256, timeout_keep_alive=5
    )
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn shuts down gracefully, then re-raises Ctrl-C
        uvicorn.Server(config).run()
    count = len(store.export_rows())
    store.close()
    if echo:
        print(f"stopped; {count} ratings are in {store.path}", flush=True)
