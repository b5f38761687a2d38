"""The dashboards' CSV export cell by cell, in Debian's node running the page's own
``common.js`` (``ui.csvCell``): a value a spreadsheet would run as a formula is quoted
with a leading ``'``; plain numbers stay numbers. ``-1+cmd|' /C calc'!A0`` passed the
old check (a minus and a digit first were taken for a number) and ran as a formula."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

COMMON_JS = Path(__file__).resolve().parents[2] / "monitoring" / "ui" / "static" / "common.js"
NODE = shutil.which("node") or "/usr/bin/node"

CASES = {
    "=1+1": "'=1+1",
    "+1+1": "'+1+1",
    "@SUM(A1)": "'@SUM(A1)",
    "-1+cmd|' /C calc'!A0": "'-1+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0": "'-2+3+cmd|' /C calc'!A0",
    "-1e3+cmd": "'-1e3+cmd",
    "\tcmd": "'\tcmd",
    '=HYPERLINK("http://x","y")': '"\'=HYPERLINK(""http://x"",""y"")"',
    "-12.5": "-12.5",
    "-1e-3": "-1e-3",
    "3.25": "3.25",
    "api": "api",
    'a,"b"': '"a,""b"""',
}


def test_formula_like_cells_are_quoted_and_numbers_kept() -> None:
    if not Path(NODE).exists():
        pytest.fail("node is needed (Debian's nodejs package)")
    script = (
        "const vm = require('vm'); const fs = require('fs');"
        "const ctx = { window: {} }; vm.createContext(ctx);"
        f"vm.runInContext(fs.readFileSync({json.dumps(str(COMMON_JS))}, 'utf8'), ctx);"
        "const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "process.stdout.write(JSON.stringify(cases.map((c) => ctx.window.ui.csvCell(c))));"
    )
    out = subprocess.run(
        [NODE, "-e", script], input=json.dumps(list(CASES)), capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    got = dict(zip(CASES, json.loads(out.stdout), strict=True))
    assert got == CASES
    numbers = subprocess.run(
        [NODE, "-e", script.replace("cases.map((c) =>", "[-5, 0.5, null].map((c) =>")],
        input="[]", capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert json.loads(numbers.stdout) == ["-5", "0.5", ""]
