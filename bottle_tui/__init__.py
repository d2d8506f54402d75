"""bottle-tui: an operator console and sandbox for AI coding agents."""

__version__ = "0.1.0"
