"""Entry point of every Bazel `py_test`: runs pytest on the test file named in `args`."""

import os
import sys

import pytest

if __name__ == "__main__":
    # Bazel runs tests from the runfiles tree: make it the import root and keep pytest's cache out of it.
    sys.path.insert(0, os.getcwd())
    sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "--rootdir", os.getcwd(), *sys.argv[1:]]))
