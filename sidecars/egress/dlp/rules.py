"""gitleaks' rules file read the way gitleaks v8.30.1's config package does (config/config.go,
config/allowlist.go, config/rule.go), with egress's deviations applied where gitleaks' own
semantics would let the agent switch a check off or talk past it.

Each deviation has a name (``DEVIATIONS``); ``load_rules(..., deviations=())`` gives gitleaks'
semantics exactly, which the parity test holds against the binary. The README's DLP section
lists them.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import re2

RULES_PATH = Path(os.environ.get("BOTTLE_DLP_RULES", "/opt/gitleaks/gitleaks.toml"))

# egress's deviations from gitleaks, by name:
DEVIATIONS = (
    # gitleaks skips a line holding "gitleaks:allow": the agent writes its own lines
    "no-inline-allow",
    # an allowlist regex "^a|b|c$" anchors only its first and last branch in Go (the global
    # "(?i)^true|false|null$" allows any secret containing "false"); egress anchors it whole
    "anchored-allowlist",
    # a regexTarget "line" allowlist is judged on the match: the rest of the line is the agent's
    "line-allowlist-on-match",
    # a secret followed by a URL, CSV or markup delimiter (/ , < > & | ? # ) ] }) ends as at a
    # quote or a space
    "delimiters",
    # a token with a literal prefix is found when letters are glued before it (no leading \b)
    "glued-prefix",
)

# gitleaks' common terminator after a secret (cmd/generate/config/utils: secretSuffix)
_SUFFIX = "(?:[\\x60'\"\\s;]|\\\\[nr]|$)"
_SUFFIX_WIDE = "(?:[\\x60'\"\\s;/,<>&|?#)\\]}]|\\\\[nr]|$)"


class RulesError(ValueError):
    """The rules file cannot be used; the message is one line naming the file and rule."""


def _compile(pattern: str, where: str) -> re2._Regexp:
    try:
        return re2.compile(pattern.encode())
    except re2.error as e:
        raise RulesError(f"{where}: regex does not compile: {e}") from None


# --- rules (config/config.go, config/allowlist.go, config/rule.go) -------------------------------


@dataclass
class Allowlist:
    """One gitleaks allowlist. ``has_paths``/``has_commits`` only matter for AND conditions:
    a request has no path and no commit, so such a check is false."""

    condition_and: bool
    regex_target: str  # "" (the secret), "match" or "line"
    regex: re2._Regexp | None
    stopwords: tuple[str, ...]
    stopword_re: re2._Regexp | None
    has_paths: bool
    has_commits: bool
    paths: tuple[str, ...] = ()

    def regex_allowed(self, target: bytes) -> bool:
        if self.regex is None or not target:
            return False
        m = self.regex.search(target)
        # regexMatched: FindString(f) != "", so an empty leftmost match does not count
        return m is not None and m.end() > m.start()

    def contains_stopword(self, secret: bytes) -> bool:
        if self.stopword_re is None or not secret:
            return False
        return self.stopword_re.search(_go_lower(secret)) is not None

    def finding_allowed(self, secret: bytes, match: bytes, line: bytes) -> bool:
        target = match if self.regex_target == "match" else line if self.regex_target == "line" else secret
        if self.condition_and:
            checks = []
            if self.has_commits:
                checks.append(False)
            if self.has_paths:
                checks.append(False)
            if self.regex is not None:
                checks.append(self.regex_allowed(target))
            if self.stopwords:
                checks.append(self.contains_stopword(secret))
            return all(checks)
        return self.regex_allowed(target) or self.contains_stopword(secret)


@dataclass
class Rule:
    id: str
    regex: re2._Regexp | None
    pattern: str
    secret_group: int
    entropy: float
    keywords: tuple[str, ...]
    allowlists: list[Allowlist] = field(default_factory=list)
    skip_report: bool = False
    # A rule with a path runs only on files whose path matches; a request has no path ("").
    needs_path: bool = False


@dataclass
class Rules:
    rules: list[Rule]
    allowlists: list[Allowlist]
    keywords: list[str]
    deviations: frozenset[str] = frozenset()

    def by_id(self) -> dict[str, Rule]:
        return {r.id: r for r in self.rules}


def _go_lower(b: bytes) -> str:
    s = b.decode("utf-8", "replace")
    if s.isascii():
        return s.lower()
    return s.translate({0x130: "i", 0x212A: "k"}).lower()


def _parse_allowlist(a: dict, where: str, dev: frozenset[str]) -> Allowlist:
    if not isinstance(a, dict):
        raise RulesError(f"{where}: an allowlist must be a table")
    cond = str(a.get("condition", "")).upper()
    if cond not in ("", "OR", "||", "AND", "&&"):
        raise RulesError(f"{where}: unknown allowlist condition {a.get('condition')!r} (expected 'and', 'or')")
    target = a.get("regexTarget", "")
    if target == "secret":
        target = ""
    if target not in ("", "match", "line"):
        raise RulesError(f"{where}: unknown allowlist regexTarget {target!r} (expected 'match', 'line')")
    if target == "line" and "line-allowlist-on-match" in dev:
        target = "match"
    regexes = list(a.get("regexes") or [])
    paths = list(a.get("paths") or [])
    commits = list(a.get("commits") or [])
    stopwords = tuple(dict.fromkeys(_go_lower(w.encode()) for w in (a.get("stopwords") or [])))
    if not (regexes or paths or commits or stopwords):
        raise RulesError(f"{where}: an allowlist must contain at least one of commits, paths, regexes, stopwords")
    for i, r in enumerate(regexes):
        _compile(r, f"{where} regexes[{i}]")  # name the bad one before joining them
    if "anchored-allowlist" in dev:
        regexes = [anchor_whole(r) for r in regexes]
    # Allowlist.Validate joins the regexes into one alternation
    joined = _compile("(?:" + "|".join(regexes) + ")", where) if regexes else None
    stop_re = _compile("|".join(re2.escape(w) for w in stopwords), where) if stopwords else None
    return Allowlist(
        condition_and=cond in ("AND", "&&"),
        regex_target=target,
        regex=joined,
        stopwords=stopwords,
        stopword_re=stop_re,
        has_paths=bool(paths),
        has_commits=bool(commits),
        paths=tuple(paths),
    )


def load_rules(path: Path | str = RULES_PATH, deviations: tuple[str, ...] | frozenset[str] = DEVIATIONS) -> Rules:
    """Read a gitleaks.toml the way gitleaks v8.30.1's config.Translate does, with the named
    ``deviations`` (all of them by default; none: gitleaks' semantics)."""
    path = Path(path)
    dev = frozenset(deviations)
    unknown = dev - set(DEVIATIONS)
    if unknown:
        raise RulesError(f"{path}: unknown DLP deviation(s) {sorted(unknown)} (known: {', '.join(DEVIATIONS)})")
    try:
        raw = path.read_bytes()
        cfg = tomllib.loads(raw.decode())
    except OSError as e:
        raise RulesError(f"{path}: cannot read the rules file: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise RulesError(f"{path}: not valid TOML: {e}") from None
    if cfg.get("extend"):
        raise RulesError(f"{path}: [extend] is not supported: give the full rules file")
    rules: list[Rule] = []
    keywords: dict[str, None] = {}
    seen: set[str] = set()
    for n, vr in enumerate(cfg.get("rules") or []):
        rid = str(vr.get("id", "")).strip()
        where = f"{path}: rule {rid or n}"
        if not rid:
            raise RulesError(f"{path}: rules[{n}]: rule id is missing or empty")
        if rid in seen:
            raise RulesError(f"{where}: duplicate rule id")
        seen.add(rid)
        if vr.get("required"):
            raise RulesError(f"{where}: [[rules.required]] (multi-part rules) is not supported by the DLP engine")
        pattern = vr.get("regex", "")
        if not pattern and not vr.get("path"):
            raise RulesError(f"{where}: both regex and path are empty, this rule would have no effect")
        pattern = rewrite_pattern(pattern, dev)
        regex = _compile(pattern, where) if pattern else None
        path_re = _compile(vr["path"], f"{where} path") if vr.get("path") else None
        group = int(vr.get("secretGroup", 0))
        if regex is not None and group > regex.groups:
            raise RulesError(f"{where}: invalid secretGroup {group}, the regex has {regex.groups} groups")
        kws = tuple(k.lower() for k in vr.get("keywords") or [])
        for k in kws:
            keywords[k] = None
        if vr.get("allowlist") and vr.get("allowlists"):
            raise RulesError(f"{where}: [rules.allowlist] cannot be used alongside [[rules.allowlists]]")
        als = ([vr["allowlist"]] if vr.get("allowlist") else []) + list(vr.get("allowlists") or [])
        rules.append(
            Rule(
                id=rid,
                regex=regex,
                pattern=pattern,
                secret_group=group,
                entropy=float(vr.get("entropy", 0.0)),
                keywords=kws,
                allowlists=[_parse_allowlist(a, f"{where} allowlist", dev) for a in als],
                skip_report=bool(vr.get("skipReport")),
                needs_path=path_re is not None and path_re.search(b"") is None,
            )
        )
    if cfg.get("allowlist") and cfg.get("allowlists"):
        raise RulesError(f"{path}: [allowlist] cannot be used alongside [[allowlists]]")
    global_als: list[Allowlist] = []
    by_id = {r.id: r for r in rules}
    for a in ([cfg["allowlist"]] if cfg.get("allowlist") else []) + list(cfg.get("allowlists") or []):
        al = _parse_allowlist(a, f"{path}: [[allowlists]]", dev)
        targets = a.get("targetRules") or []
        for t in targets:
            if t not in by_id:
                raise RulesError(f"{path}: [[allowlists]] target rule id {t!r} does not exist")
            by_id[t].allowlists.append(al)
        if not targets:
            global_als.append(al)
    return Rules(rules=rules, allowlists=global_als, keywords=list(keywords), deviations=dev)


def rewrite_pattern(pattern: str, dev: frozenset[str]) -> str:
    """A rule's regex with the "delimiters" and "glued-prefix" deviations applied."""
    if "delimiters" in dev:
        pattern = pattern.replace(_SUFFIX, _SUFFIX_WIDE)
    if "glued-prefix" in dev:
        for lead in ("(?i)\\b(", "\\b("):
            if pattern.startswith(lead):
                rest = pattern[len(lead) :]
                body = rest[3:] if rest.startswith("(?:") else rest[1:] if rest.startswith("(") else rest
                if body[:1].isalnum():
                    pattern = lead.replace("\\b", "") + rest
                break
    return pattern


def anchor_whole(regex: str) -> str:
    """``^a|b|c$`` (flags first, maybe) as ``^(?:a|b|c)$``: anchored on every branch, as its
    author meant. Other regexes are returned as they are."""
    flags = ""
    body = regex
    while body.startswith("(?") and body[2:3] != ":" and ")" in body:
        end = body.index(")")
        if not all(c.isalpha() or c == "-" for c in body[2:end]):
            break
        flags += body[: end + 1]
        body = body[end + 1 :]
    if not (body.startswith("^") and body.endswith("$") and not body.endswith("\\$")):
        return regex
    inner = body[1:-1]
    if not _top_level_alternation(inner):
        return regex
    return f"{flags}^(?:{inner})$"


def _top_level_alternation(s: str) -> bool:
    depth, i, in_class = 0, 0, False
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if s[i + 1 : i + 2] == "]" or s[i + 1 : i + 3] == "^]":
                i += 2 if s[i + 1] == "]" else 3
                continue
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            return True
        i += 1
    return False
