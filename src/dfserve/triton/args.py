"""Which tritonserver options a user may pass through `dfserve serve`, which the launcher owns, and which it
refuses because they would undo its safe defaults.
"""

from __future__ import annotations

from collections.abc import Sequence

from dfserve.errors import ServerError
from dfserve.spec.names import (
    ADMIN_KEY_ENV,
)

LAUNCHER_OPTIONS = {
    "--model-repository": "repository",
    "--http-port": "http_port",
    "--grpc-port": "grpc_port",
    "--metrics-port": "metrics_port",
}
"""tritonserver options that a pass-through argument list (the container's, from compose or Kubernetes) may give and
that the launcher takes as its own settings."""


FIXED_OPTIONS = {"--model-control-mode": "none", "--strict-readiness": "true", "--exit-on-error": "true"}
"""Options the launcher always sets: accepted in a pass-through list with these values only."""


REFUSED_OPTIONS = {
    "--http-restricted-api": f"the admin key would be on the command line: set ${ADMIN_KEY_ENV} instead",
    "--grpc-restricted-protocol": f"the admin key would be on the command line: set ${ADMIN_KEY_ENV} instead",
    "--http-address": "the launcher binds every endpoint to its --host",
    "--grpc-address": "the launcher binds every endpoint to its --host",
    "--metrics-address": "the launcher binds every endpoint to its --host",
    "--backend-directory": "the launcher picks the backends of the Triton it runs",
}


def split_tritonserver_args(args: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Split tritonserver arguments given to the launcher (``dfserve serve -- ARGS``): the settings it owns
    (`LAUNCHER_OPTIONS`, by `TritonServer` parameter name) and the rest, passed through to tritonserver.

    Both ``--opt=value`` and ``--opt value`` are read. Options the launcher fixes are accepted only with its own
    values, and options that would undo a safeguard (a key on the command line, another bind address) are refused
    with the reason, so that a container's arguments cannot silently weaken what the launcher guarantees."""
    settings: dict[str, str] = {}
    rest: list[str] = []
    items = list(args)
    i = 0
    while i < len(items):
        arg = items[i]
        name, eq, value = arg.partition("=")
        known = name in LAUNCHER_OPTIONS or name in FIXED_OPTIONS or name in REFUSED_OPTIONS
        if known and not eq:
            if i + 1 >= len(items):
                raise ServerError(f"tritonserver option {name} has no value")
            value, i = items[i + 1], i + 1
        i += 1
        if name in REFUSED_OPTIONS:
            raise ServerError(f"tritonserver option {name} is not accepted here: {REFUSED_OPTIONS[name]}")
        if name in FIXED_OPTIONS:
            if value != FIXED_OPTIONS[name]:
                raise ServerError(f"the launcher runs tritonserver with {name}={FIXED_OPTIONS[name]}, not {value}")
            continue
        if name in LAUNCHER_OPTIONS:
            settings[LAUNCHER_OPTIONS[name]] = value
            continue
        rest.append(arg)
    return settings, rest
