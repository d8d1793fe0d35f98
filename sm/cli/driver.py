"""`sm driver TYPE REQUEST`: run one SMAPIv1 request, exactly as `bin/<Type>SR REQUEST` does."""

from __future__ import annotations

import sys

import click


@click.command("driver")
@click.argument("type_name", metavar="TYPE")
@click.argument("request", metavar="REQUEST")
def driver(type_name: str, request: str) -> None:
    """Run the XML-RPC methodCall REQUEST ("-" reads it from stdin) against SR type TYPE.

    Prints exactly the response (success or Fault) on stdout and exits 0, like a driver
    executable; logs go to stderr.
    """
    from sm.dispatch import main

    if request == "-":
        request = sys.stdin.read()
    main(type_name, [request])
