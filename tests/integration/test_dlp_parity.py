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

from tests.support.dlp_corpus import generate
from tests.support.sidecars import egress_module

from tests.support.bottles import sh

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
    sh("docker", "run", "--rm", "--network", "none", "--user", f"{os.getuid()}:{os.getgid()}",
       "-v", f"{corpus}:/scan:ro", "-v", f"{report.parent}:/out", "--entrypoint", "gitleaks", image,
       "dir", "/scan", "--no-banner", "--max-decode-depth", "5", "--exit-code", "0",
       "--report-format", "json", "--report-path", f"/out/{report.name}", "--log-level", "error", timeout=900)
    return {(Path(f["File"]).name, f["RuleID"], f["StartLine"], f["Secret"]) for f in json.loads(report.read_text())}


def test_engine_matches_gitleaks_binary(built_images: dict[str, str], image_rules: Path, tmp_path: Path) -> None:
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

    loaded = dlp.load_database(rules, dlp.database_path(image_rules))
    assert loaded is not None, "the image's Hyperscan database does not load here"
    scanner = dlp.Scanner(rules, *loaded)
    ours = {(name, f.rule_id, f.line, f.secret.decode("utf-8", "replace"))
            for name, text in texts for f in scanner.scan(text.encode())}

    by_name = dict(texts)
    missed = sorted(theirs - ours)
    extra = sorted(ours - theirs)
    diff = [f"  gitleaks only: {n} {rule} line {line} secret {secret!r}\n    text: {by_name[n]!r}"
            for n, rule, line, secret in missed[:15]]
    diff += [f"  engine only:   {n} {rule} line {line} secret {secret!r}\n    text: {by_name[n]!r}"
             for n, rule, line, secret in extra[:15]]
    assert not diff, (f"{len(missed)} findings only gitleaks made, {len(extra)} only the engine made "
                      f"(of {len(theirs)} by gitleaks over {len(texts)} texts):\n" + "\n".join(diff))
    # the corpus exercises the rules: many rules fire, and decoded secrets are among them
    assert len({f[1] for f in theirs}) >= 40
    assert len(theirs) >= 1000
    print(f"parity: {len(texts)} texts, {len(theirs)} findings, {len({f[1] for f in theirs})} rules, no difference")


def test_agent_placeholders_and_a_real_token_in_headers(image_rules: Path) -> None:
    """DLP runs before injection, so the agent's placeholders (bottle_tui/plan.py) reach it:
    with gitleaks' real rules they must pass, while a real-looking token in the same header
    is blocked and named without its value."""
    dlp, dr = egress_module("dlp"), egress_module("dlp.request")
    rs = dr.RequestScanner(dlp.Scanner.load(image_rules))
    basic = base64.b64encode(b"x-access-token:bottle-placeholder-GH_TOKEN").decode()
    headers = [("x-api-key", "bottle-placeholder-ANTHROPIC_API_KEY"),
               ("Authorization", "Bearer bottle-placeholder-GITHUB_TOKEN"),
               ("Proxy-Authorization", f"Basic {basic}"), ("anthropic-version", "2023-06-01")]
    assert not rs.scan_head("/v1/messages?beta=true", headers).blocked
    token = "ghp_" + "Zr8QwE2tY6uI0oP4aS8dF2gH6jK0lZ4xC8vB"
    v = rs.scan_head("/v1/messages", headers + [("Authorization", f"Bearer {token}")])
    assert [(h.rule_id, h.where) for h in v.hits] == [("github-pat", "header Authorization")]
    assert token not in v.reason() and token not in json.dumps(v.to_json())
