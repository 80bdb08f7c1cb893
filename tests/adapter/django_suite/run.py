"""Run Django's own test classes on shmsession, with Django's DiscoverRunner, and write what
happened to each test as JSON.

    python run.py DJANGO_TESTS_DIR OUT_JSON LABEL...

DJANGO_TESTS_DIR is the ``tests/`` folder of Django's source distribution (at least its
``cache/`` and ``sessions_tests/``); the settings are ``suite_settings`` beside this file, which
reads the stores' names and the database's folder from the environment. OUT_JSON gets
``{"run": [test ids], "failures": {id: traceback}, "errors": {...}, "skipped": {id: reason},
"expected_failures": [...], "unexpected_successes": [...]}``; a failing subtest counts against
its test.
"""

import json
import os
import sys
import unittest
from typing import Any, Dict, List

tests_dir, out_path, labels = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.path[1:1] = [tests_dir]
os.environ["DJANGO_SETTINGS_MODULE"] = "suite_settings"

import django  # noqa: E402
from django.test.runner import DiscoverRunner  # noqa: E402

django.setup()


def test_id(test: Any) -> str:
    """The test's id; a subtest's is its test's."""
    return str(getattr(test, "test_case", test).id())


class RecordingRunner(DiscoverRunner):
    def run_suite(self, suite: unittest.TestSuite, **kwargs: Any) -> unittest.TestResult:
        self.ids: List[str] = [t.id() for t in suite]  # build_suite flattens it
        return super().run_suite(suite, **kwargs)

    def suite_result(self, suite: unittest.TestSuite, result: unittest.TestResult,
                     **kwargs: Any) -> int:
        def by_id(pairs: List[Any]) -> Dict[str, str]:
            out: Dict[str, str] = {}
            for test, text in pairs:
                out[test_id(test)] = out.get(test_id(test), "") + text
            return out

        with open(out_path, "w") as f:
            json.dump({
                "run": self.ids,
                "failures": by_id(result.failures),
                "errors": by_id(result.errors),
                "skipped": by_id(result.skipped),
                "expected_failures": [test_id(t) for t, _ in result.expectedFailures],
                "unexpected_successes": [test_id(t) for t in result.unexpectedSuccesses],
            }, f, indent=1)
        return super().suite_result(suite, result, **kwargs)


sys.exit(bool(RecordingRunner(verbosity=1, interactive=False).run_tests(labels)))
