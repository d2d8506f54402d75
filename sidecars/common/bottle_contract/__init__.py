"""The contract between the host (bottle_tui) and the sidecar bundle: what one side writes and the
other reads, defined once and imported by both.

Standard library only: the git gate, the status daemon and init run on the image's bare python3.
The host maps this package in pyproject.toml; the bundle finds it through the ``pythonpath`` of
each daemon in daemons.json. A rule written here must not be written again on either side
(tests/sidecars/test_contract_once.py walks both).

- ``files``: atomic replace, an exclusive lock, line and JSONL appends under a size cap (rotation)
- ``layout``: the names of the state folders and files both sides share, and their caps
- ``ports``: where each daemon of the bundle listens
- ``hosts``: what a route host may be, wildcard matching, one pattern within another, wildcards
  over a public suffix (the Public Suffix List of the pinned ``publicsuffixlist``, imported on use)
- ``policy``: routes.yaml (schema, validation, rendering) and the DLP settings in it
- ``proposal``: the proposal format, ids, the validation of a change, the queue
- ``clock``: the timestamps written into shared files
- ``serving``: the limits of every server facing the agent, and the bounded HTTP server of the
  stdlib daemons
- ``workers``: egress's workers (``egress.workers``): their count, what init tells each, their
  shared run folder and locks, and the ready file they write together
"""
