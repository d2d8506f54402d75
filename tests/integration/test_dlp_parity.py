"""Parity: egress's DLP engine finds exactly what the gitleaks binary finds, on a generated corpus.

The corpus (tests/dlp_corpus.py, seeded) is written to a folder; the pinned gitleaks binary in the
sidecars image scans it with `gitleaks dir` (max decode depth 5, its CLI default) and the engine
scans each text on the host with the same gitleaks.toml copied out of the image and the
Hyperscan database compiled at image build. Any difference in (file, rule, line, secret) fails.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path

import pytest

from tests.support.bottles import sh
from tests.support.dlp_corpus import generate
from tests.support.sidecars import egress_module

pytestmark = pytest.mark.integration

CORPUS_SIZE = 1500


@pytest.fixture(scope="module")
def image_rules(built_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """gitleaks.toml and its Hyperscan database, as built into the sidecars image."""
    out = tmp_path_factory.mktemp("gitleaks-rules")
    name = f"bottle-tui-test-dlp-{uuid.uuid4().hex[:6]}"
    sh("docker", "create", "--name", name, built_images["sidecars"])
    try:
        sh("docker", "cp", f"{name}:/opt/gitleaks/gitleaks.toml", str(out / "gitleaks.toml"))
        sh("docker", "cp", f"{name}:/opt/gitleaks/gitleaks.toml.hsdb", str(out / "gitleaks.toml.hsdb"))
    finally:
        sh("docker", "rm", "-f", name, check=False)
    return out / "gitleaks.toml"


def _gitleaks(image: str, corpus: Path, report: Path) -> set[tuple[str, str, int, str]]:
    sh(
        "docker",
        "run",
        "--rm",
        "--network",
        "none",
        "--user",
        f"{os.getuid()}:{os.getgid()}",
        "-v",
        f"{corpus}:/scan:ro",
        "-v",
        f"{report.parent}:/out",
        "--entrypoint",
        "gitleaks",
        image,
        "dir",
        "/scan",
        "--no-banner",
        "--max-decode-depth",
        "5",
        "--exit-code",
        "0",
        "--report-format",
        "json",
        "--report-path",
        f"/out/{report.name}",
        "--log-level",
        "error",
        timeout=900,
    )
    return {(Path(f["File"]).name, f["RuleID"], f["StartLine"], f["Secret"]) for f in json.loads(report.read_text())}


def _findings(scanner, texts) -> set[tuple[str, str, int, str]]:
    return {
        (name, f.rule_id, f.line, f.secret.decode("utf-8", "replace"))
        for name, text in texts
        for f in scanner.scan(text.encode())
    }


def _scanner(dlp, rules_path: Path, deviations, db_dir: Path):
    """A scanner with these deviations; its Hyperscan database is compiled (seconds) only when no
    earlier one holds the same patterns (the allowlist deviations change none)."""
    rules = dlp.load_rules(rules_path, deviations)
    saved = sorted(db_dir.glob("db-*.hsdb"))
    for db in saved:
        if (loaded := dlp.load_database(rules, db)) is not None:
            return dlp.Scanner(rules, *loaded)
    compiled = dlp.compile_database(rules)
    dlp.save_database(rules, *compiled, db_dir / f"db-{len(saved)}.hsdb")
    return dlp.Scanner(rules, *compiled)


def test_engine_matches_gitleaks_binary(built_images: dict[str, str], image_rules: Path, tmp_path: Path) -> None:
    """With no deviation the engine finds exactly what gitleaks finds; with egress's deviations
    (dlp/rules.py DEVIATIONS, listed in the README) it finds at least that, and every extra
    finding is one a single named deviation makes."""
    dlp = egress_module("dlp")
    texts = generate(image_rules, CORPUS_SIZE)
    assert len(texts) >= 1000
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, text in texts:
        (corpus / name).write_text(text)
    os.chmod(corpus, 0o755)

    rules = dlp.load_rules(image_rules)
    # A path allowlist would let gitleaks skip a file the engine (which never sees paths) scans.
    for al in rules.allowlists:
        assert al.regex is not None or al.paths, "unexpected global allowlist shape"
    theirs = _gitleaks(built_images["sidecars"], corpus, tmp_path / "gitleaks.json")

    compat = _findings(_scanner(dlp, image_rules, (), tmp_path), texts)
    by_name = dict(texts)
    missed = sorted(theirs - compat)
    extra = sorted(compat - theirs)
    diff = [
        f"  gitleaks only: {n} {rule} line {line} secret {secret!r}\n    text: {by_name[n]!r}"
        for n, rule, line, secret in missed[:15]
    ]
    diff += [
        f"  engine only:   {n} {rule} line {line} secret {secret!r}\n    text: {by_name[n]!r}"
        for n, rule, line, secret in extra[:15]
    ]
    assert not diff, (
        f"{len(missed)} findings only gitleaks made, {len(extra)} only the engine made "
        f"(of {len(theirs)} by gitleaks over {len(texts)} texts):\n" + "\n".join(diff)
    )
    # the corpus exercises the rules: many rules fire, and decoded secrets are among them
    assert len({f[1] for f in theirs}) >= 40
    assert len(theirs) >= 1000

    # egress's own rules, as the image compiled them: at least gitleaks' findings ...
    loaded = dlp.load_database(rules, dlp.database_path(image_rules))
    assert loaded is not None, "the image's Hyperscan database does not load here"
    ours = _findings(dlp.Scanner(rules, *loaded), texts)
    for n, rule, line, secret in theirs - ours:
        # ... but a generic finding gives way to a specific one on its line (gitleaks' own dedupe)
        assert "generic" in rule and any(o[0] == n and o[2] == line and secret in o[3] for o in ours), (
            n,
            rule,
            line,
            secret,
            by_name[n],
        )
    # ... and each extra comes from one named deviation
    extra = ours - theirs
    single = {d: _findings(_scanner(dlp, image_rules, (d,), tmp_path), texts) for d in dlp.DEVIATIONS}
    unexplained = [f for f in extra if not any(f in found for found in single.values())]
    assert not unexplained, unexplained[:10]
    print(
        f"parity: {len(texts)} texts, {len(theirs)} findings, {len({f[1] for f in theirs})} rules, "
        f"no difference without deviations; with them {len(extra)} more: "
        + ", ".join(f"{d} {len(single[d] - theirs)}" for d in dlp.DEVIATIONS)
    )


def test_agent_placeholders_and_a_real_token_in_headers(image_rules: Path) -> None:
    """DLP runs before injection, so the agent's placeholders (bottle_tui/plan.py) reach it:
    with gitleaks' real rules they must pass, while a real-looking token in the same header
    is blocked and named without its value."""
    dlp, dr = egress_module("dlp"), egress_module("dlp.request")
    rs = dr.RequestScanner(dlp.Scanner.load(image_rules))
    basic = base64.b64encode(b"x-access-token:bottle-placeholder-GH_TOKEN").decode()
    headers = [
        ("x-api-key", "bottle-placeholder-ANTHROPIC_API_KEY"),
        ("Authorization", "Bearer bottle-placeholder-GITHUB_TOKEN"),
        ("Proxy-Authorization", f"Basic {basic}"),
        ("anthropic-version", "2023-06-01"),
    ]
    assert not rs.scan_head("/v1/messages?beta=true", headers).blocked
    token = "ghp_" + "Zr8QwE2tY6uI0oP4aS8dF2gH6jK0lZ4xC8vB"
    v = rs.scan_head("/v1/messages", headers + [("Authorization", f"Bearer {token}")])
    assert [(h.rule_id, h.where) for h in v.hits] == [("github-pat", "header Authorization")]
    assert token not in v.reason() and token not in json.dumps(v.to_json())
