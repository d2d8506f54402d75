"""Decoders, one module per codec: gitleaks' own passes (``gitleaks``) and egress's wider ones."""

from __future__ import annotations

from . import base64, entities, escapes, hex, percent, qp, text

# The codecs that decode runs inside a text, in the order the pipeline applies them; their
# CANDIDATES (ASCII patterns: necessary conditions for finding a run) are compiled into the
# engine's Hyperscan database, so the scan of the raw text says which codecs have work.
RUN_CODECS = (base64, hex, percent, entities, qp, escapes, text)
