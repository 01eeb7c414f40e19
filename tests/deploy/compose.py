"""Reading docker-compose.yml as Compose does: `.env` values interpolated into `${VAR}` references first.

Docker cannot run on the development machine, so the tests read the files the way Compose would: the same
interpolation rules (``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:+alt}``, ``${VAR:?error}``,
``$$`` for a literal ``$``), then YAML (with merge keys), then the Compose JSON schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_FILE = REPO / ".env"
COMPOSE_SCHEMA = (REPO / ".." / "shared" / "schemas" / "compose-spec.json").resolve()


class InterpolationError(ValueError):
    pass


def read_env(path: Path = ENV_FILE) -> dict[str, str]:
    """KEY=VALUE lines; `#` comments and blank lines ignored; optional quotes around the value removed."""
    env: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise InterpolationError(f"{path.name}:{number}: not KEY=VALUE: {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def interpolate(text: str, env: dict[str, str], used: set[str] | None = None) -> str:
    """Compose's variable substitution on one string. Records referenced names (with whether they had a
    fallback) in `used` as "NAME" (bare) or "NAME?" (with a default/alternative)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "$":
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1 : i + 2]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "{":
            depth, j = 1, i + 2
            while j < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            if depth:
                raise InterpolationError(f"unclosed ${{ in {text!r}")
            out.append(_expand(text[i + 2 : j - 1], env, used))
            i = j
        elif nxt.isalpha() or nxt == "_":
            j = i + 1
            while j < len(text) and (text[j].isalnum() or text[j] == "_"):
                j += 1
            name = text[i + 1 : j]
            if used is not None:
                used.add(name)
            out.append(env.get(name, ""))
            i = j
        else:
            raise InterpolationError(f"invalid '$' in {text!r}: write $$ for a literal dollar")
    return "".join(out)


def _expand(expr: str, env: dict[str, str], used: set[str] | None) -> str:
    for op in (":-", ":?", ":+", "-", "?", "+"):
        name, sep, arg = expr.partition(op)
        if sep and name.isidentifier():
            break
    else:
        name, op, arg = expr, "", ""
        if not name.isidentifier():
            raise InterpolationError(f"invalid variable reference ${{{expr}}}")
    if used is not None:
        used.add(name if op in ("", ":?", "?") else name + "?")
    value = env.get(name)
    empty = value is None or (op.startswith(":") and value == "")
    if op in (":-", "-"):
        return interpolate(arg, env, used) if empty else str(value)
    if op in (":+", "+"):
        return "" if empty else interpolate(arg, env, used)
    if op in (":?", "?") and empty:
        raise InterpolationError(f"required variable {name} is missing: {arg}")
    if value is None:
        raise InterpolationError(f"variable {name} is not set and has no default")
    return value


def interpolate_tree(node: Any, env: dict[str, str], used: set[str] | None = None) -> Any:
    if isinstance(node, str):
        return interpolate(node, env, used)
    if isinstance(node, list):
        return [interpolate_tree(v, env, used) for v in node]
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env, used) for k, v in node.items()}
    return node


def load_compose(env: dict[str, str] | None = None, used: set[str] | None = None) -> dict[str, Any]:
    """docker-compose.yml with `.env` (or `env`) interpolated, YAML anchors and merge keys resolved."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    return interpolate_tree(raw, read_env() if env is None else env, used)  # type: ignore[no-any-return]
