"""egress DLP: gitleaks' pinned rules over every part of an agent's request, before credentials
are injected. The package is shaped as gitleaks is:

- ``rules``: the gitleaks.toml reader, and egress's named deviations from gitleaks;
- ``database``: the Hyperscan database built at image build;
- ``detect``: the engine (Hyperscan prefilter, re2 confirm, gitleaks' filters) over one text;
- ``codecs``: one module per decoder (gitleaks' own passes, and egress's wider ones);
- ``decode``: the pipeline that turns agent data into the views the engine scans;
- ``request``: one HTTP request (head, body, stream) and its verdict;
- ``ordinary``: what ordinary traffic carries that is not a secret (nonces, public samples);
- ``provenance``: values an upstream handed the agent, as hashes, per site.
"""

from __future__ import annotations

from .codecs.gitleaks import decode_pass, find_all
from .database import compile_database, database_path, load_database, save_database
from .detect import MAX_DECODE_DEPTH, Finding, Scanner, _location, sanitize
from .rules import DEVIATIONS, RULES_PATH, Rules, RulesError, load_rules

__all__ = [
    "DEVIATIONS",
    "MAX_DECODE_DEPTH",
    "RULES_PATH",
    "Finding",
    "Rules",
    "RulesError",
    "Scanner",
    "_location",
    "compile_database",
    "database_path",
    "decode_pass",
    "find_all",
    "load_database",
    "load_rules",
    "sanitize",
    "save_database",
]
