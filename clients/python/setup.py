"""Builds dice-client, generating its gRPC stubs first.

All metadata lives in pyproject.toml; this file only hooks stub generation
(generate_stubs.py) into build_py, which runs for wheels, sdists' builds and
editable installs alike.
"""

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generate_stubs  # noqa: E402


class BuildWithStubs(build_py):
    """build_py that first writes dice_client/_proto/ from proto/api.proto."""

    def run(self):
        try:
            generate_stubs.generate()
        except generate_stubs.StubError as error:
            raise SystemExit(str(error)) from error
        super().run()


setup(cmdclass={"build_py": BuildWithStubs})
