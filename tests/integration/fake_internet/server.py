"""The tests' fake internet: the canary of the sidecars image (sidecars/canary/canary.py, which
answers any Host with what it received) plus the package indexes and LLM API of services.py.
It runs inside a container of the sidecars image, with this folder mounted at /srv."""

import sys

sys.path.insert(0, "/opt/bottle/canary")

import canary
import services

if __name__ == "__main__":
    canary.serve(sys.argv[1:], plugins=(services.handle,))
