"""Prints the worker's environment as one JSON line; torchrun needs a Python
script, so the parity test runs this under both launchers."""
import json
import os
import sys

if __name__ == "__main__":
    # One write(2): workers sharing a pipe never interleave within a line.
    os.write(1, (json.dumps(dict(os.environ), sort_keys=True) + "\n").encode())
    code = int(os.environ.get("HP_EXIT_RANK_CODE", "0") or 0)
    if code and os.environ.get("RANK") == os.environ.get("HP_EXIT_RANK"):
        sys.exit(code)
