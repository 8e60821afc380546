"""`python -m fleetflow.access`: the gateway process `fleetflow stack up` starts.

The users' store URL (it may hold the database password) comes from the environment
(FLEETFLOW_ACCESS_STORE), the server's credential from the stack's private file: neither
is in argv, where `ps` shows it.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import uvicorn

from fleetflow.access._gateway import Gateway, GatewayConfig
from fleetflow.access._store import AccessStore

STORE_VARIABLE = "FLEETFLOW_ACCESS_STORE"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m fleetflow.access")
    parser.add_argument("--upstream", required=True, help="the Prefect server, http://HOST:PORT")
    parser.add_argument("--auth-file", type=Path, required=True, help="the server's user:password")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4200)
    parser.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, help="and this private key (PEM)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    store = AccessStore(os.environ[STORE_VARIABLE], as_gateway=True)
    config = GatewayConfig(upstream=args.upstream, internal_auth=args.auth_file.read_text().strip())
    uvicorn.run(
        Gateway(config, store).app(),
        host=args.host,
        port=args.port,
        ssl_certfile=args.tls_cert,
        ssl_keyfile=args.tls_key,
        access_log=False,  # the audit table is the record; a log of every GET is noise
        proxy_headers=False,  # the caller's own address, not one a header claims
        log_level="info",
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
