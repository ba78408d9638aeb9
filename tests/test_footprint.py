"""The unit's import footprint (issue 17, ADR 0019): what `liuhen run` holds before any
media. A fresh interpreter imports the daemon exactly as the service does and reports
its memory from /proc; the test fails when the service path grows past the budget or
loads a library it does not run (a table or console library, the centre, numpy)."""

from __future__ import annotations

import json
import subprocess
import sys

# Private (anonymous) memory is what the imports cost the Pi: file-backed pages of shared
# libraries (PyAV's libavcodec above all) are shared and reclaimable. Both are bounded.
ANON_BUDGET_MB = 40
RSS_BUDGET_MB = 80
NOT_IN_THE_SERVICE_PATH = (
    "numpy", "sqlite_utils", "rich", "jsonschema", "referencing", "click", "pluggy",
    "central", "django", "sqlalchemy", "boto3", "psycopg", "playwright", "hypothesis",
)  # fmt: skip

PROBE = """
import json, re, sys
import firmware_py.cli, firmware_py.daemon
status = open('/proc/self/status').read()
kb = lambda key: int(re.search(key + r':\\s+(\\d+)', status).group(1))
print(json.dumps({"rss_kb": kb('VmRSS'), "anon_kb": kb('RssAnon'),
                  "modules": sorted({m.split('.')[0] for m in sys.modules})}))
"""


def test_the_daemon_imports_fit_the_budget_and_load_only_what_the_unit_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    seen = json.loads(out.stdout)
    loaded = sorted(set(seen["modules"]) & set(NOT_IN_THE_SERVICE_PATH))
    assert not loaded, f"the service path imports {loaded}; load them where first used"
    anon_mb, rss_mb = seen["anon_kb"] / 1024, seen["rss_kb"] / 1024
    assert anon_mb <= ANON_BUDGET_MB, f"imports hold {anon_mb:.1f} MB private memory"
    assert rss_mb <= RSS_BUDGET_MB, f"imports hold {rss_mb:.1f} MB resident"
