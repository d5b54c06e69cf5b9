"""A stand-in webhook for Alertmanager: prints one line per alert it is sent.

docker-compose.yml runs it as the `webhook` service so that ``docker compose up`` shows
alerts end to end (``docker compose logs -f webhook``). Standard library only.

    python alertmanager/webhook_receiver.py --port 9095
"""

from __future__ import annotations

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 1 << 20


def describe(payload: dict[str, Any], path: str) -> list[str]:
    """One line per alert of an Alertmanager webhook payload (version 4)."""
    lines = []
    for alert in payload.get("alerts", []):
        labels = alert.get("labels", {})
        annotations = alert.get("annotations", {})
        lines.append(
            f"[{path}] {alert.get('status', '?').upper()} {labels.get('alertname', '?')}"
            f" severity={labels.get('severity', '-')} job={labels.get('job', '-')}"
            f" since={alert.get('startsAt', '-')}: {annotations.get('summary', '')}"
        )
    return lines


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.send_error(413)
            return
        try:
            payload = json.loads(self.rfile.read(length))
        except ValueError:
            self.send_error(400, "body is not JSON")
            return
        for line in describe(payload, self.path):
            print(line, flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=9095)
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"webhook receiver listening on {args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main(sys.argv[1:])
