#!/usr/bin/python3
"""Runs Python test modules for ctest, honestly: exits non-zero when any test failed or
errored, when a module ran no test at all (a typo in a name, a class that lost its base, a
discovery that found nothing), and when a test was skipped (a skip hides a missing tool or
binary; the tests call rnnserve_testkit.require_tool, which fails instead).

    run_tests.py [--dir DIR] MODULE [MODULE...]

DIR (default: the current directory) goes first on sys.path, then tests/pykit (the kit) and
tools/ (export_pytorch), so no PYTHONPATH is needed.
"""

import argparse
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=os.getcwd(), help="folder holding the modules")
    parser.add_argument("modules", nargs="+", help="module names, e.g. test_streaming")
    args = parser.parse_args(argv)
    for path in (os.path.join(ROOT, "tools"), HERE, os.path.abspath(args.dir)):
        if path not in sys.path:
            sys.path.insert(0, path)
    suite = unittest.TestSuite()
    loader = unittest.defaultTestLoader
    for name in args.modules:
        suite.addTests(loader.loadTestsFromName(name))
    if loader.errors:  # a module that failed to import becomes such an error
        for error in loader.errors:
            print(error, file=sys.stderr)
        return 1
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    ran = result.testsRun - len(result.skipped)
    problems = []
    if result.testsRun == 0:
        problems.append(f"no test ran in {', '.join(args.modules)}")
    elif ran == 0 or result.skipped:
        problems.append(f"{len(result.skipped)} test(s) skipped; a skipped test hides what "
                        "it needed: " + "; ".join(f"{t.id()}: {why}" for t, why in result.skipped))
    if not result.wasSuccessful():
        problems.append(f"{len(result.failures)} failure(s), {len(result.errors)} error(s)")
    for problem in problems:
        print(f"run_tests: FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
