"""Decoders, one module per codec: gitleaks' own passes (``gitleaks``) and egress's wider ones."""
