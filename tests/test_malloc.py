"""wmkit.malloc: glibc keeps freed memory, so a large CPU tensor reuses pages instead of faulting on each one."""

import json
import os
import subprocess
import sys

import pytest

from wmkit.malloc import _glibc

needs_glibc = pytest.mark.skipif(_glibc() is None, reason="the setting exists only for glibc's malloc")

# In a fresh interpreter: allocate and free a 64 MiB tensor eight times, then count the minor page faults per tensor
# over four more. 64 MiB = 16,384 pages of 4 KiB, above glibc's 32 MiB mmap cap, so by default every tensor is a
# fresh mapping. With freed memory kept, the first reuses can miss (PyTorch asks for 64-byte alignment, so its
# request is a little larger than the block it freed, and a block that cannot merge into the heap's top is skipped;
# measured: up to 6 blocks in turn, RSS flat), but after a few rounds every tensor lands on pages already touched.
PROBE = """
import json, resource, torch, wmkit, wmkit.malloc as m
n = 16 * 2**20                                    # floats: 64 MiB
flt = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):                                # allocated, written, freed
    torch.ones(n)
f0 = flt()
for _ in range(4):
    torch.ones(n)
print(json.dumps({"applied": m.applied(), "faults": (flt() - f0) / 4}))
"""

# Fragmentation guard: a loop of large and mid-size tensors must not grow the heap without bound.
GROWTH = """
import json, resource, torch, wmkit
n = 16 * 2**20
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
peaks = []
for k in range(60):
    a = torch.ones(n); b = torch.ones(n // 3); del a; del b
    if k in (19, 59):
        peaks.append(rss())
print(json.dumps({"peaks": peaks}))
"""


def probe(value: str | None, code: str = PROBE) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "WMKIT_KEEP_FREED_MEMORY"}
    if value is not None:
        env["WMKIT_KEEP_FREED_MEMORY"] = value
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@needs_glibc
def test_import_wmkit_keeps_freed_memory_and_a_large_tensor_reuses_touched_pages():
    on = probe(None)                          # the default of `import wmkit`
    assert on["applied"] is True
    assert on["faults"] < 200, on             # the freed 64 MiB is reused: (almost) no new pages


@needs_glibc
def test_kept_memory_does_not_grow_without_bound_in_a_loop():
    peaks = probe(None, GROWTH)["peaks"]      # MiB after 20 and after 60 rounds (measured 540 and 540)
    assert peaks[1] - peaks[0] < 64, peaks


@needs_glibc
def test_opt_out_gives_glibc_default_which_faults_on_every_page():
    off = probe("0")
    assert off["applied"] is False
    with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
        thp_always = "[always]" in f.read()
    if thp_always:                            # 2 MiB pages: 32 faults for 64 MiB, nothing to compare
        pytest.skip("transparent huge pages are 'always' here")
    assert off["faults"] >= 16_384 * 0.9, off  # one fault per 4 KiB page of the fresh mapping


def test_bad_value_is_refused_with_the_variable_named(monkeypatch):
    from wmkit.malloc import apply_default

    monkeypatch.setenv("WMKIT_KEEP_FREED_MEMORY", "yes")
    with pytest.raises(ValueError, match="WMKIT_KEEP_FREED_MEMORY must be 0 or 1, got 'yes'"):
        apply_default()


@needs_glibc
def test_bench_malloc_runs_both_allocators_in_separate_workers():
    out = subprocess.run([sys.executable, "-m", "wmkit.bench", "malloc", "--batch", "2", "--length", "8",
                          "--repeat", "1", "--warmup", "0"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    got = {(r["metric"], r.get("allocator")) for r in rows}
    for job in ("update", "image_path"):
        for mode in ("glibc_default", "keep_freed"):
            assert (f"{job}_ms", mode) in got and (f"{job}_page_faults", mode) in got
        assert (f"{job}_speedup", None) in got
    assert all(r["cpu"] for r in rows) and all(r["value"] > 0 for r in rows if r["metric"].endswith("_ms"))
