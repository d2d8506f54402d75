"""``python -m dlp compile RULES [OUT]`` builds the Hyperscan database at image build time;
``python -m dlp scan RULES FILE...`` prints findings as JSON lines (rule, line, secret: for tests)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dlp import RulesError, Scanner, compile_database, database_path, load_rules, save_database


def main(argv: list[str]) -> int:
    """``python -m dlp compile RULES [OUT]`` builds the database at image build time;
    ``python -m dlp scan RULES FILE...`` prints findings as JSON lines (rule, line, secret: for tests)."""
    if len(argv) >= 2 and argv[0] == "compile":
        rules = load_rules(argv[1])
        db, byte_mode = compile_database(rules)
        out = Path(argv[2]) if len(argv) > 2 else database_path(argv[1])
        save_database(rules, db, byte_mode, out)
        print(f"dlp: {len(rules.rules)} rules, {len(rules.keywords)} keywords, {len(byte_mode)} in byte mode -> {out}")
        return 0
    if len(argv) >= 3 and argv[0] == "scan":
        scanner = Scanner.load(argv[1])
        for name in argv[2:]:
            for f in scanner.scan(Path(name).read_bytes()):
                print(
                    json.dumps(
                        {"file": name, "rule": f.rule_id, "line": f.line, "secret": f.secret.decode("utf-8", "replace")}
                    )
                )
        return 0
    print("usage: python -m dlp compile RULES [OUT] | python -m dlp scan RULES FILE...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except RulesError as e:
        print(f"dlp: {e}", file=sys.stderr)
        sys.exit(1)
