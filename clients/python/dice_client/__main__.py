"""Rolls dice on a node from the command line.

    python -m dice_client --addr HOST:PORT --ca FILE [--cert FILE --key FILE]
                          [--server-name NAME] [--timeout SECONDS] [--count N]
                          [--metadata KEY=VALUE ...]

Prints each value rolled on its own line. A failed RPC prints one line on
stderr, ``dice_client: node ADDR: CODE: details``, and exits 1; bad
arguments or unreadable certificate files exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from dice_client import DEFAULT_TIMEOUT, Certs, Client, DiceError

EXIT_FAILED = 1
EXIT_USAGE = 2


def _metadata(text: str) -> Tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.lower(), value


def parse(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m dice_client", description="Roll dice on a dice fleet node over mutual TLS."
    )
    parser.add_argument("--addr", required=True, help="the node, HOST:PORT (an mTLS listener or nginx)")
    parser.add_argument("--ca", required=True, type=Path, help="PEM CA bundle that signs node certificates")
    parser.add_argument("--cert", type=Path, help="PEM client certificate (with --key)")
    parser.add_argument("--key", type=Path, help="PEM client key (with --cert)")
    parser.add_argument("--server-name", help="name to check the node's certificate against")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per roll")
    parser.add_argument("--count", type=int, default=1, help="how many dice to roll, over one connection")
    parser.add_argument(
        "--metadata", type=_metadata, action="append", default=[], metavar="KEY=VALUE",
        help="send this header with every RPC (repeatable)",
    )
    args = parser.parse_args(argv)
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")
    if args.count < 1:
        parser.error("--count must be at least 1")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse(argv)
    certs = Certs(args.ca, args.cert, args.key)
    try:
        client = Client(
            args.addr, certs, timeout=args.timeout, server_name=args.server_name, metadata=args.metadata
        )
    except OSError as error:
        print(f"dice_client: {error.filename}: {error.strerror}", file=sys.stderr)
        return EXIT_USAGE
    with client:
        for _ in range(args.count):
            try:
                value = client.roll_die()
            except DiceError as error:
                print(f"dice_client: {error} (kind: {error.kind})", file=sys.stderr)
                return EXIT_FAILED
            print(value, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
