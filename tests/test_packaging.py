"""Installed as people install it, Queuey's commands and twistd plugins are found: an editable install
(``pip install -e .``, what ``make setup`` does) and a plain one, each run from another directory."""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.processes import spawn_command

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
SOURCES = ("pyproject.toml", "setup.py", "README.rst", "LICENSE", "queuey", "qdo", "twisted")
PLUGINS = ("import sys; from twisted.plugin import getPlugins; from twisted.application.service import IServiceMaker;"
           "from twisted.plugins import queuey_plugin; import queuey.tap;"
           "print(sorted(p.tapname for p in getPlugins(IServiceMaker) if p.tapname in ('queuey', 'qdo')));"
           "print(queuey_plugin.__file__); print(queuey.tap.__file__)")


class InstallTests(TestCase):
    timeout = 300

    def setUp(self) -> None:
        self.elsewhere = os.path.abspath(self.mktemp())
        os.makedirs(self.elsewhere)

    async def command(self, argv: list[str], **env: str) -> str:
        process = spawn_command(self, argv, env=env, cwd=self.elsewhere)
        code = await process.ended
        self.assertEqual(code, 0, (process.out + process.err).decode())
        return process.out.decode()

    async def _editable(self) -> None:
        listed = await self.command([os.path.join(BIN, "twistd"), "--help"])
        self.assertIn("queuey ", listed)
        self.assertIn("qdo ", listed)
        found = (await self.command([sys.executable, "-c", PLUGINS])).splitlines()
        self.assertEqual(found[0], "['qdo', 'queuey']")
        self.assertTrue(found[1].startswith(os.path.join(REPO, "twisted", "plugins")), found)
        self.assertIn("queuey", await self.command([os.path.join(BIN, "queuey"), "--version"]))

    def test_editable_install(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._editable())

    async def _plain(self) -> None:
        source = os.path.join(self.elsewhere, "source")  # built from a copy: the checkout stays as it is
        os.makedirs(source)
        for name in SOURCES:
            copy: Any = shutil.copytree if os.path.isdir(os.path.join(REPO, name)) else shutil.copy
            kwargs = {"ignore": shutil.ignore_patterns("__pycache__", "dropin.cache")} if copy is shutil.copytree else {}
            copy(os.path.join(REPO, name), os.path.join(source, name), **kwargs)
        target = os.path.join(self.elsewhere, "installed")
        await self.command([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                            "--target", target, source])
        self.assertEqual(sorted(os.listdir(os.path.join(target, "twisted"))), ["plugins"])  # Twisted's own stays
        self.assertNotIn("__init__.py", os.listdir(os.path.join(target, "twisted", "plugins")))
        found = (await self.command([sys.executable, "-c", PLUGINS], PYTHONPATH=target)).splitlines()
        self.assertEqual(found[0], "['qdo', 'queuey']")
        self.assertEqual([path.startswith(target) for path in found[1:]], [True, True], found)
        self.assertIn("queuey", await self.command([os.path.join(target, "bin", "queuey"), "--version"],
                                                   PYTHONPATH=target))

    def test_plain_install(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._plain())
