"""The contract between the host (bottle_tui) and the sidecar bundle: what one side writes and the
other reads, defined once and imported by both.

Standard library only: the git gate, the status daemon and init run on the image's bare python3.
The host maps this package in pyproject.toml; the bundle finds it through the ``pythonpath`` of
each daemon in daemons.json. A rule written here must not be written again on either side
(tests/host/test_contract_once.py walks both).

- ``files``: atomic replace, the queue lock, JSONL append with a size cap and rotation
- ``layout``: the names of the state folders and files both sides share, and their caps
- ``ports``: where each daemon of the bundle listens
"""
