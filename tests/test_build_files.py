"""Every module and test under dalle/ and tests/ has an up-to-date Bazel target."""
# bazel: manual  (it reads the whole source tree, which a Bazel sandbox does not have; CI runs the check directly)

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_build_files_are_current():
    if not os.path.exists(os.path.join(ROOT, "tools", "gen_build.py")):  # pragma: no cover - Bazel sandbox view
        return
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gen_build.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_generator_makes_a_target_per_module():
    sys.path.insert(0, ROOT)
    from tools import gen_build

    files = gen_build.generate()
    text = files[os.path.join("dalle", "BUILD")]
    assert 'name = "sharding"' in text and 'srcs = ["sharding.py"]' in text
    tests = files[os.path.join("tests", "BUILD")]
    assert 'name = "test_sharding"' in tests and '"//dalle:sharding"' in tests
