"""What every benchmark does around its measurement: a throw-away directory, the processes it
started stopped whatever happens, and one JSON report under bench/results/ with the machine,
the configuration, the figures, the targets and a `pass` object (one boolean per target and
`all`). The exit status says whether every target held."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

from bench.orders import _cpu_model, log, stop_owned


def passed(checks: Mapping[str, bool]) -> dict[str, bool]:
    """The `pass` object: the checks, and `all` of them."""
    return {**checks, "all": all(checks.values())}


def write_report(out: Path, name: str, *, config: Mapping[str, Any], results: Mapping[str, Any],
                 targets: Mapping[str, Any], checks: Mapping[str, bool], started: float,
                 stamp: str) -> int:
    report = {
        "benchmark": name,
        "timestamp": stamp,
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "processor": _cpu_model()},
        "config": dict(config),
        **results,
        "targets": dict(targets),
        "pass": passed(checks) if "all" not in checks else dict(checks),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    log(f"pass: {report['pass']}")
    log(f"wrote {out} ({report['wall_seconds']}s)")
    return 0 if report["pass"]["all"] else 1


def run(name: str, out: Path, measure: Callable[[Path], Awaitable[dict[str, Any]]], *,
        config: Mapping[str, Any], targets: Mapping[str, Any],
        verdict: Callable[[dict[str, Any]], Mapping[str, bool]]) -> int:
    """Run `measure(tmp)` on uvloop, stop what it started, write the report; 130 when it was
    interrupted (nothing written)."""
    started = time.perf_counter()
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    tmp = Path(tempfile.mkdtemp(prefix=f"cartage-bench-{name}-"))
    try:
        results = uvloop.run(measure(tmp))
    except asyncio.CancelledError:
        log("interrupted; stopped the processes this run started")
        return 130
    finally:
        stop_owned()
        shutil.rmtree(tmp, ignore_errors=True)
    return write_report(out, name, config=config, results=results, targets=targets,
                        checks=verdict(results), started=started, stamp=stamp)
