"""`python -m esteira.collector --database postgresql://... --token-file /var/run/secrets/esteira/token`."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from aiohttp import web

from esteira.collector.app import DEFAULT_MAX_BODY, Collector, CollectorConfig
from esteira.vocabulary import ENV_COLLECTOR_TOKEN


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m esteira.collector", description=__doc__)
    parser.add_argument("--database", default=os.environ.get("ESTEIRA_COLLECTOR_DATABASE", "sqlite:///collector.db"),
                        help="sqlite:///path or postgresql://user@host/db (env ESTEIRA_COLLECTOR_DATABASE)")  # fmt: skip
    parser.add_argument("--database-file", type=Path, help="a file holding the database URL (a mounted Secret)")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--token-file", type=Path, help=f"shared secret file (or env {ENV_COLLECTOR_TOKEN})")
    parser.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY, help="largest request body in bytes")
    parser.add_argument("--retention", default="168h", help="how long records and labels are kept")
    parser.add_argument("--quality-window", default="1h", help="window of the quality gauges")
    args = parser.parse_args(argv)
    token = args.token_file.read_text().strip() if args.token_file else os.environ.get(ENV_COLLECTOR_TOKEN) or None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    database = args.database_file.read_text().strip() if args.database_file else args.database
    try:
        config = CollectorConfig(database, token, args.max_body, args.retention, args.quality_window)
    except ValueError as exc:
        parser.error(str(exc))
    web.run_app(Collector(config).app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
