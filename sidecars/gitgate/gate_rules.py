#!/usr/bin/env python3
"""The git gate's own gitleaks config: gitleaks' full rules without the allowlists that look at
where content sits rather than what it is (paths, commits, the rest of the line).

gitleaks' stock allowlists are for scanning one's own repository; facing an agent that chooses
every path and every line, `notes.png`, `node_modules/x` or a line that also says
`--mount=type=secret,` must not switch the scan off. What stays: the rules, their keywords,
entropy and path conditions, and allowlists on the secret's own value (placeholders, stopwords).

Usage (at image build): gate_rules.py STOCK_TOML OUT_TOML
"""

from __future__ import annotations

import json
import sys
import tomllib

# Allowlist keys that judge the content's place, not the secret: never kept.
_PLACE_KEYS = ("paths", "commits")


def _value_allowlist(allow: dict) -> dict | None:
    """An allowlist reduced to what judges the secret's value, or None when nothing of it is left.

    An AND allowlist with a path or commit condition is dropped whole: without that condition it
    would allow more than before. A ``line`` target is the agent's to write, so it goes too."""
    if allow.get("regexTarget") == "line":
        return None
    if str(allow.get("condition", "OR")).upper() == "AND" and any(allow.get(k) for k in _PLACE_KEYS):
        return None
    kept = {k: v for k, v in allow.items() if k not in _PLACE_KEYS}
    return kept if kept.get("regexes") or kept.get("stopwords") else None


def gate_config(stock: dict) -> dict:
    """The gate's config from gitleaks' parsed stock config (a new dict; ``stock`` is not changed)."""
    unknown = set(stock) - {"title", "minVersion", "allowlist", "allowlists", "rules", "extend"}
    if unknown or stock.get("extend"):
        raise ValueError(
            f"gitleaks config has keys the gate does not know how to read: {sorted(unknown) or ['extend']}"
        )
    out: dict = {"title": "git gate: gitleaks rules without place-based allowlists"}
    if "minVersion" in stock:
        out["minVersion"] = stock["minVersion"]
    globals_ = [stock["allowlist"]] if "allowlist" in stock else []
    globals_ += list(stock.get("allowlists", []))
    kept = [a for a in (_value_allowlist(a) for a in globals_) if a]
    if kept:
        out["allowlists"] = kept
    rules = []
    for rule in stock.get("rules", []):
        rule = dict(rule)
        allows = [
            a
            for a in (
                _value_allowlist(a)
                for a in rule.pop("allowlists", []) + ([rule.pop("allowlist")] if "allowlist" in rule else [])
            )
            if a
        ]
        if allows:
            rule["allowlists"] = allows
        rules.append(rule)
    if not rules:
        raise ValueError("gitleaks config has no rules")
    out["rules"] = rules
    return out


# --- a TOML writer for this one shape (tomllib reads, the standard library has no writer) ----------


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # JSON's escapes are TOML basic-string escapes; DEL is the one control character JSON keeps.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007F")
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    raise ValueError(f"cannot write {type(value).__name__} values in the gate's gitleaks config")


def _table(header: str, table: dict, lines: list[str]) -> None:
    lines.append(header)
    nested = []
    for key, value in table.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            nested.append((key, value))
        elif isinstance(value, dict):
            raise ValueError(f"cannot write the table {key!r} in the gate's gitleaks config")
        else:
            lines.append(f"{key} = {_scalar(value)}")
    return nested


def to_toml(config: dict) -> str:
    lines: list[str] = []
    for key in ("title", "minVersion"):
        if key in config:
            lines.append(f"{key} = {_scalar(config[key])}")
    for allow in config.get("allowlists", []):
        lines.append("")
        _table("[[allowlists]]", allow, lines)
    for rule in config["rules"]:
        lines.append("")
        for key, subs in _table("[[rules]]", rule, lines):
            for sub in subs:
                _table(f"[[rules.{key}]]", sub, lines)
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: gate_rules.py STOCK_TOML OUT_TOML", file=sys.stderr)
        return 2
    try:
        with open(argv[0], "rb") as f:
            stock = tomllib.load(f)
        text = to_toml(gate_config(stock))
        if tomllib.loads(text)["rules"] != gate_config(stock)["rules"]:
            raise ValueError("the written config does not read back as the same rules")
    except (OSError, ValueError, tomllib.TOMLDecodeError) as e:
        print(f"gate_rules.py: {argv[0]}: {e}", file=sys.stderr)
        return 1
    with open(argv[1], "w", encoding="utf-8") as f:
        f.write(text)
    print(f"gate_rules.py: wrote {argv[1]}: {len(stock.get('rules', []))} rules, place-based allowlists removed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
