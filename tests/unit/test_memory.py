"""server.memory: the glibc calls that give a worker's freed heap back (bench/README.md, "Memory")."""

from __future__ import annotations

import subprocess
import sys

from server import memory


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4


def test_trim_gives_freed_heap_back() -> None:
    assert memory._LIBC is not None, "glibc: the server's Docker image and CI run on Debian"
    memory.trim()
    # Many small blocks (below the mmap threshold, so they live in an arena), then all but the last freed:
    blocks = [bytearray(4000) for _ in range(40_000)]
    keep = blocks[-1]
    del blocks
    before = _rss_kib()
    assert memory.trim() is True
    assert _rss_kib() < before - 50_000  # most of the ~160 MB went back
    assert len(keep) == 4000


def test_limit_arenas_takes_effect_in_a_fresh_process() -> None:
    code = "from server import memory; print(memory.limit_arenas())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
