"""unittest_main.py — how every Python test program here ends: unittest's
main with meson's exit codes (1 on a failure, 77 when every test skipped,
0 otherwise). Standard library only and no side effects at import, so the
tests that must not import harness (it makes the process a subreaper) use
it too."""
import sys
import unittest

SKIP = 77


def run():
    result = unittest.main(exit=False, verbosity=2).result
    if not result.wasSuccessful():
        sys.exit(1)
    if result.testsRun and len(result.skipped) == result.testsRun:
        sys.exit(SKIP)
    sys.exit(0)
