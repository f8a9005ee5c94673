"""The roll page: rolls one die on the configured node and shows the face."""

import logging

from django.conf import settings
from django.shortcuts import render

from dice_client import Certs, Client, DiceError

log = logging.getLogger(__name__)

#: The Unicode die faces, ⚀ (1) to ⚅ (6).
FACES = "\u2680\u2681\u2682\u2683\u2684\u2685"

#: What the page says for each DiceError.kind, and the HTTP status it answers with.
FAILURES = {
    "unavailable": (503, "The dice node is down", "Could not reach the dice node {node}."),
    "timeout": (503, "The dice node is not answering", "The dice node {node} did not answer in time."),
    "tls": (502, "The dice node refused this site", "The dice node {node} refused this site's client certificate."),
    "rpc": (502, "The dice node failed", "The dice node {node} could not roll the die."),
}


def roll(request):
    """Rolls a die on ``settings.DICE_NODE`` through dice_client."""
    node = settings.DICE_NODE
    try:
        certs = Certs(settings.DICE_CA, settings.DICE_CERT, settings.DICE_KEY)
        with Client(node, certs, timeout=settings.DICE_TIMEOUT, server_name=settings.DICE_SERVER_NAME) as client:
            value = client.roll_die()
    except DiceError as error:
        # The full status goes to the log; the page gets one sentence and the code.
        log.warning("roll failed: %s", error)
        status, title, message = FAILURES[error.kind]
        return _error(request, status, title, message.format(node=node), error.kind, error.code.name)
    except OSError as error:
        log.error("cannot read this site's certificate files: %s", error)
        return _error(
            request,
            500,
            "This site is misconfigured",
            f"Could not read {error.filename}: set DICE_CA, DICE_CERT and DICE_KEY.",
            "config",
            "",
        )
    if not 1 <= value <= 6:
        log.warning("node %s rolled %d, not a die face", node, value)
        return _error(request, 502, "The dice node failed", f"The dice node {node} rolled {value}.", "rpc", "")
    context = {"node": node, "value": value, "face": FACES[value - 1]}
    return render(request, "dice/roll.html", context)


def _error(request, status, title, message, kind, code):
    context = {"title": title, "message": message, "kind": kind, "code": code, "node": settings.DICE_NODE}
    return render(request, "dice/error.html", context, status=status)
