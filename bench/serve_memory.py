"""Memory of N server replicas of one model on one host: what the page cache shares.

Starts N ``bitnet serve`` processes on the same GGUF file (ports from --port up), waits until
each answers /health, sends each one short completion (so every weight page has been read),
then reads /proc/PID/smaps_rollup of every process: RSS counts shared pages in full in every
process, PSS divides each shared page among the processes that map it, and Private is what the
process alone holds (KV cache, activations, repacked weights, Python). The file's pages that
all replicas map are counted once in the sum of PSS. Linux only. Usage::

    python bench/serve_memory.py -m 2b4t.gguf --replicas 2 -- -c 4096 -np 4
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def rollup(pid: int) -> dict[str, int]:
    """smaps_rollup fields in KiB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        value = rest.split()
        if value and value[0].isdigit():
            out[key] = int(value[0])
    return out


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 600) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"a replica exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not become healthy")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-m", "--model", required=True)
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--port", type=int, default=18300)
    p.add_argument("serve_args", nargs="*", help="after --: more `bitnet serve` options")
    args = p.parse_args()
    procs = []
    try:
        for i in range(args.replicas):
            cmd = [sys.executable, "-m", "bitnet", "serve", "-m", args.model]
            cmd += ["--port", str(args.port + i), "--log-level", "warning", *args.serve_args]
            procs.append(subprocess.Popen(cmd))
        for i, proc in enumerate(procs):
            url = f"http://127.0.0.1:{args.port + i}"
            wait_healthy(url, proc)
            body = json.dumps({"prompt": "Hello", "max_tokens": 4, "temperature": 0}).encode()
            req = urllib.request.Request(
                url + "/v1/completions", body, {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=600) as r:
                r.read()
        size_mib = Path(args.model).stat().st_size / 2**20
        print(f"model file {size_mib:.0f} MiB, {args.replicas} replicas (MiB)")
        print("| replica | RSS | PSS | shared (file + libs) | private |")
        print("|---:|---:|---:|---:|---:|")
        total_rss = total_pss = 0.0
        for i, proc in enumerate(procs):
            r = rollup(proc.pid)
            shared = (r.get("Shared_Clean", 0) + r.get("Shared_Dirty", 0)) / 1024
            private = (r.get("Private_Clean", 0) + r.get("Private_Dirty", 0)) / 1024
            total_rss += r["Rss"] / 1024
            total_pss += r["Pss"] / 1024
            print(
                f"| {i} | {r['Rss'] / 1024:.0f} | {r['Pss'] / 1024:.0f} | {shared:.0f} "
                f"| {private:.0f} |"
            )
        print(f"| sum | {total_rss:.0f} | {total_pss:.0f} (actual use) | | |")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
