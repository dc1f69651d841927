"""Benchmark (figures, not a test): TCG translation-cache sizes side by side, in one invocation.

    sudo .venv/bin/python ci/bench_tb_cache.py [--scenario smoke] [--sizes 0,256,128] [--reports DIR]

Starts one `harness run SCENARIO` per size at the same time (HARNESS_TCG_TB_CACHE=<MiB>; 0 is QEMU's
default of 1 GiB), so every size sees the same host load. While they run, samples each VM's QEMU
resident memory every few seconds; at the end prints, and writes to DIR/tb-cache.md, per size: the
phase seconds (summary.json) and the peak and final RSS per VM and per cluster. Every run destroys
its own cluster (no --keep); an interrupt is passed on to the runs, which tear down.
Exit 1 if a run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.provider import libvirt as lv

HARNESS = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "harness"
SAMPLE_S = 5.0
PHASES = ("up", "provision", "idempotence", "verify")


def sample(peaks: dict[str, int], last: dict[str, int]) -> None:
    for pidfile in lv.QEMU_PID_DIR.glob("hx-*.pid"):
        domain = pidfile.name.removesuffix(".pid")
        rss = lv.qemu_rss_mib(domain)
        if rss is not None:
            peaks[domain] = max(peaks.get(domain, 0), rss)
            last[domain] = rss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ci/bench_tb_cache.py", description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="smoke")
    parser.add_argument("--sizes", default="0,256,128", help="MiB per VM, comma-separated (0: QEMU's default)")
    parser.add_argument("--reports", type=Path, default=Path(os.environ.get("HARNESS_REPORT_DIR", "reports")))
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    out = args.reports / f"bench-tb-cache-{args.scenario}"
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    runs: dict[int, subprocess.Popen[bytes]] = {}
    for size in sizes:
        env = {**os.environ, "HARNESS_TCG_TB_CACHE": str(size)}
        log = (out / f"run-{size}.log").open("wb")
        argv_run = [str(HARNESS), "run", args.scenario, "--report-dir", str(out / f"tb-{size}")]
        runs[size] = subprocess.Popen(argv_run, env=env, stdout=log, stderr=subprocess.STDOUT)
    peaks: dict[str, int] = {}
    last: dict[str, int] = {}
    try:
        while any(p.poll() is None for p in runs.values()):
            sample(peaks, last)
            time.sleep(SAMPLE_S)
    except KeyboardInterrupt:
        for p in runs.values():
            p.send_signal(signal.SIGINT)
        for p in runs.values():
            p.wait()
        return 130
    lines = [
        f"# TCG translation cache, scenario {args.scenario}, {len(sizes)} runs side by side "
        f"({time.strftime('%Y-%m-%d %H:%M', time.localtime(started))}, {time.time() - started:.0f} s, "
        f"load average at end {os.getloadavg()[0]:.1f})",
        "",
        "| tb-cache | status | up | provision | idempotence | verify | peak RSS per VM | peak cluster RSS |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    failed = False
    for size, proc in runs.items():
        summary_path = out / f"tb-{size}" / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        run_id = summary.get("run_id") or summary.get("metadata", {}).get("run_id", "")
        phases = summary.get("phases", {})
        mine = {d: r for d, r in peaks.items() if run_id and d.startswith(f"hx-{run_id}-")}
        failed |= proc.returncode != 0
        cells = [f"{phases[p]['seconds']:.0f} s" if p in phases else "-" for p in PHASES]
        per_vm = ", ".join(f"{r}" for _d, r in sorted(mine.items())) or "-"
        total = sum(mine.values())
        label = f"{size} MiB" if size else "default (1024 MiB)"
        lines.append(
            f"| {label} | {summary.get('status', f'exit {proc.returncode}')} | {' | '.join(cells)} "
            f"| {per_vm} MiB | {total} MiB |"
        )
    text = "\n".join(lines) + "\n"
    (out / "tb-cache.md").write_text(text)
    sys.stdout.write(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
