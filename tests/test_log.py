"""sm.log: loggers that import logging only when a record is due, and the driver's set-up."""

from __future__ import annotations

import subprocess
import sys
import xmlrpc.client
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _py(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=ROOT, env={"PATH": "/usr/bin:/bin", **env})


def test_below_threshold_never_imports_logging() -> None:
    out = _py("import sys, sm.log; l = sm.log.get_logger('t'); l.debug('d'); l.info('i'); "
              "print('logging' in sys.modules, l.isEnabledFor(20))")
    assert out.stdout.split() == ["False", "False"]
    assert out.stderr == ""


def test_a_warning_imports_logging_and_reaches_stderr() -> None:
    out = _py("import sys, sm.log; l = sm.log.get_logger('t'); l.warning('w %s', 1); "
              "print('logging' in sys.modules)")
    assert out.stdout.strip() == "True"
    assert "w 1" in out.stderr


def test_setup_runs_once_before_the_first_record() -> None:
    code = ("import sm.log\n"
            "calls = []\n"
            "def setup():\n"
            "    import logging, sys\n"
            "    calls.append(1)\n"
            "    logging.basicConfig(level=10, stream=sys.stdout, format='%(name)s %(message)s')\n"
            "sm.log.configure(setup, 10)\n"
            "l = sm.log.get_logger('t.x')\n"
            "l.debug('a'); l.info('b')\n"
            "try:\n"
            "    1 / 0\n"
            "except ZeroDivisionError:\n"
            "    l.exception('c')\n"
            "print(len(calls))\n")
    lines = _py(code).stdout.splitlines()
    assert lines[:3] == ["t.x a", "t.x b", "t.x c"]
    assert "ZeroDivisionError" in "\n".join(lines)
    assert lines[-1] == "1"


def _driver(doc: str, tmp: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "bin" / "FileSR"), doc],
                          capture_output=True, text=True, check=True,
                          env={"PATH": "/usr/bin:/bin", "SM_STATE_DIR": str(tmp / "state"),
                               "SM_RUN_DIR": str(tmp / "run"), **env})


def test_driver_logs_at_its_level_to_stderr_and_the_log_file(tmp_path: Path) -> None:
    info = xmlrpc.client.dumps(({"command": "sr_get_driver_info", "device_config": {}},),
                               "sr_get_driver_info")
    quiet = _driver(info, tmp_path)
    assert quiet.stderr == ""
    loud = _driver(info, tmp_path, SM_LOG_LEVEL="info", SM_LOG_FILE=str(tmp_path / "sm.log"))
    assert "file: sr_get_driver_info" in loud.stderr
    assert "INFO" in (tmp_path / "sm.log").read_text()
    # a failing command logs a warning at the default level, with the usual format
    bad = xmlrpc.client.dumps(({"command": "sr_attach", "device_config": {},
                                "sr_uuid": "not-a-uuid"},), "sr_attach")
    failed = _driver(bad, tmp_path, SM_LOG_FILE=str(tmp_path / "w.log"))
    assert "Fault" in failed.stdout or "faultCode" in failed.stdout
    assert "WARNING" in failed.stderr and "sr_attach failed" in failed.stderr
    assert "sr_attach failed" in (tmp_path / "w.log").read_text()
