"""Command-line shim for the operator emulator in hp_operator.py.

Run it as a script (python3 tests/integration/operator.py run --ports ...).
To use the emulator from Python, import hp_operator: a module named
"operator" cannot be imported, the standard library's is loaded at start-up.
"""
import os
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import hp_operator

    sys.exit(hp_operator.main())
else:
    # Imported under the name "operator" only when this directory shadows the
    # standard library (python -S): keep the standard module's contents so
    # nothing that relies on it breaks.
    from _operator import *  # noqa: F401,F403
