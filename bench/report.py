"""Turns saved pytest-benchmark runs into bench/RESULTS.md.

    python bench/report.py                      # every bench/.results/masking-*.json, and
                                                # contrastive-*.json (bench_contrastive.py)
    python bench/report.py run1.json run2.json  # chosen runs
    python bench/report.py --measure-ceilings   # also measure the ceilings now, standalone

Only runs of the newest run's build of the compiled core are combined (``--all-builds`` mixes
them), since the kernels change between builds.

Several runs combine entry by entry: the time shown is the median of the runs' medians (each
run's median is over its rounds), and the per-run medians are listed. The floor of a case is the
larger of (compulsory bytes / copy bandwidth) and (FLOPs / matmul rate), both ceilings measured
in the same runs (``test_ceiling_copy``, ``test_ceiling_matmul``); "of floor" is floor time /
measured time (1.0 = at the ceiling). Ratios are eager / pyssl and compiled / pyssl: above 1,
pyssl is faster.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(HERE, ".results")
OUT = os.path.join(HERE, "RESULTS.md")

# The targets, on fwd+bwd: (case, minimum speedup over eager, minimum fraction of floor)
TARGETS = {
    "random_masking fwd+bwd": (3.0, None),
    "gather_patches fwd+bwd": (3.0, 1 / 1.5),
    "masked_patch_loss fwd+bwd": (2.0, None),
}
ORDER = [
    "random_masking fwd+bwd",
    "random_masking fwd",
    "gather_patches fwd+bwd",
    "gather_patches fwd",
    "masked_patch_loss fwd+bwd",
    "masked_patch_loss fwd",
    "patchify fwd",
]
IMPLS = ["pyssl", "eager", "compiled"]


def load(paths: list[str]) -> list[dict[str, Any]]:
    runs = []
    for path in paths:
        with open(path) as f:
            run = json.load(f)
        run["_path"] = path
        runs.append(run)
    return runs


def combine(runs: list[dict[str, Any]], max_foreign: float | None) -> dict[str, dict[str, Any]]:
    """name -> {'medians': [per kept run, s], 'median': s, 'extra': extra_info, ...}.

    A run's entry whose timing shared the CPU with other processes (more than ``max_foreign``
    cores of foreign CPU time, as bench_masking.py records it) is dropped when at least one
    run of that entry stayed under the threshold; otherwise all are kept and flagged."""
    raw: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        for bench in run["benchmarks"]:
            raw[bench["name"]].append(bench)
    out: dict[str, dict[str, Any]] = {}
    for name, benches in raw.items():

        def foreign(b: dict[str, Any]) -> float:
            return b.get("extra_info", {}).get("foreign_cpu_cores", 0.0)

        quiet = [b for b in benches if max_foreign is None or foreign(b) <= max_foreign]
        kept = quiet or benches
        out[name] = {
            "medians": [b["stats"]["median"] for b in kept],
            "rounds": [b["stats"]["rounds"] for b in kept],
            "iqr": [b["stats"]["iqr"] for b in kept],
            "foreign": [foreign(b) for b in kept],
            "firsts": [
                b["extra_info"]["warmup_first_ms"]
                for b in kept
                if "warmup_first_ms" in b.get("extra_info", {})
            ],
            "dropped": len(benches) - len(kept),
            "contended": not quiet,
            "extra": kept[-1].get("extra_info", {}),
            "group": kept[-1].get("group"),
            "median": statistics.median(b["stats"]["median"] for b in kept),
        }
    return out


def contention(e: dict[str, Any]) -> str:
    text = " / ".join(f"{x:.2f}" for x in e["foreign"])
    if e["dropped"]:
        text += f" ({e['dropped']} contended run(s) left out)"
    if e["contended"]:
        text += " **contended**"
    return text


def first_call(e: dict[str, Any]) -> str:
    """The first warm-up call of the entry (compile time, for compiled entries), per run."""
    firsts = e.get("firsts") or []
    return " / ".join(f"{x:.1f}" for x in firsts) if firsts else "-"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:.1f} MB"


def ceilings_from(entries: dict[str, dict[str, Any]]) -> tuple[float, float, str]:
    """(bytes/s, FLOP/s, where they came from)."""
    copy = next((e for e in entries.values() if e["extra"].get("ceiling") == "copy"), None)
    mm = next((e for e in entries.values() if e["extra"].get("ceiling") == "matmul"), None)
    if copy and mm:
        return (
            copy["extra"]["bytes"] / copy["median"],
            mm["extra"]["flops"] / mm["median"],
            "measured in the benchmark runs",
        )
    sys.path.insert(0, HERE)
    import ceilings

    c = ceilings.measure()
    return c["copy_GBps"] * 1e9, c["matmul_GFLOPps"] * 1e9, "measured now by ceilings.py"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", help="pytest-benchmark JSON files")
    ap.add_argument(
        "--measure-ceilings",
        action="store_true",
        help="also measure the ceilings standalone now and show them",
    )
    ap.add_argument(
        "--max-foreign",
        type=float,
        default=0.25,
        help="drop an entry's runs during which other processes used more than this "
        "many cores, when a quieter run of it exists (default 0.25; -1 keeps all)",
    )
    ap.add_argument(
        "--all-builds",
        action="store_true",
        help="combine runs of every build of the core (default: only runs of the "
        "newest run's build, pyssl_core_build in the JSON)",
    )
    ap.add_argument("-o", "--out", default=OUT)
    args = ap.parse_args()
    paths = args.paths or sorted(glob.glob(os.path.join(RESULTS_DIR, "masking-*.json")))
    if not paths:
        sys.exit(f"no runs: give JSON paths or run bench/bench_masking.py first ({RESULTS_DIR})")
    runs = sorted(load(paths), key=lambda r: r.get("datetime", ""))
    build = runs[-1]["machine_info"].get("pyssl_core_build")
    if not args.all_builds:
        others = [r for r in runs if r["machine_info"].get("pyssl_core_build") != build]
        runs = [r for r in runs if r["machine_info"].get("pyssl_core_build") == build]
        for r in others:
            print(
                f"left out {r['_path']}: another build of the core "
                f"({r['machine_info'].get('pyssl_core_build', 'not recorded')}, newest {build})"
            )
    max_foreign = None if args.max_foreign < 0 else args.max_foreign
    entries = combine(runs, max_foreign)
    bandwidth, flop_rate, ceiling_src = ceilings_from(entries)
    cached = next((e for e in entries.values() if e["extra"].get("ceiling") == "cached_copy"), None)
    cached_bw = cached["extra"]["bytes"] / cached["median"] if cached else float("nan")
    by_group = group_by_impl(entries)
    skips: dict[str, Any] = {}
    skips_path = os.path.join(RESULTS_DIR, "skips.json")
    if os.path.exists(skips_path):
        with open(skips_path) as f:
            skips = json.load(f)

    m = runs[-1]["machine_info"]
    lines = [
        "# Masked-patch benchmarks",
        "",
        "Generated by `python bench/report.py` from pytest-benchmark runs of "
        "`bench/bench_masking.py`; do not edit by hand (notes go in `bench/NOTES.md`).",
        "",
    ]
    lines += [
        f"- machine: {m.get('cpu', {}).get('brand_raw', m.get('processor', '?'))}, "
        f"{m.get('os_cpu_count', '?')} cores, {m.get('system', '')} {m.get('release', '')}",
        f"- torch {m.get('torch', '?')} (CPU), {m.get('torch_threads', '?')} threads "
        "(torch.set_num_threads(2); pyssl's core follows it); "
        f"python {m.get('python_version', '?')}",
        f"- pyssl {m.get('pyssl', '?')} from `{m.get('pyssl_path', '?')}`, compiled core build "
        f"{m.get('pyssl_core_build', 'not recorded')} (sha256 prefix of the .so; runs of other "
        "builds are left out unless `--all-builds`)",
        f"- runs combined: {len(runs)} (time = median over runs of each run's median over rounds; "
        f"an entry's runs during which other processes used more than {max_foreign} cores "
        "are left out when a quieter run of it exists)",
    ]
    for run in runs:
        la = run["machine_info"].get("loadavg_at_end", ["?"])
        lines.append(
            f"  - `{os.path.relpath(run['_path'], os.path.dirname(HERE))}` "
            f"({run.get('datetime', '?')[:19]}, 1-min load average at end {la[0]})"
        )
    lines += [
        "",
        "Shapes: random_masking x [64, 196, 768], ratio 0.75 (K = 49); images "
        "[64, 3, 224, 224], p = 16 (L = 196, p*p*C = 768); fp32. `fwd+bwd` = forward, then "
        "`torch.autograd.grad` against a fixed upstream gradient (fresh gradient each call); "
        "`fwd` = forward under `no_grad`. Each timed call frees what it allocates.",
        "",
    ]

    lines += [
        "## Ceilings",
        "",
        f"Source: {ceiling_src}.",
        "",
        "| ceiling | median | rate | other CPU (cores) |",
        "|---|---:|---:|---|",
    ]
    for e in entries.values():
        ex = e["extra"]
        if ex.get("ceiling") == "copy":
            lines.append(
                f"| copy `dst.copy_(src)`, 256 MiB fp32, warm buffers, read+write "
                f"{mb(ex['bytes'])} | {ms(e['median'])} ms | **{bandwidth / 1e9:.2f} GB/s** "
                f"| {contention(e)} |"
            )
        if ex.get("ceiling") == "cached_copy":
            lines.append(
                f"| copy, 32 MiB fp32 (L3-resident; not the floor's rate), read+write "
                f"{mb(ex['bytes'])} | {ms(e['median'])} ms | {cached_bw / 1e9:.2f} GB/s "
                f"| {contention(e)} |"
            )
        if ex.get("ceiling") == "matmul":
            lines.append(
                f"| `torch.mm` 2048x2048 fp32, {ex['flops'] / 1e9:.1f} GFLOP "
                f"| {ms(e['median'])} ms | **{flop_rate / 1e9:.1f} GFLOP/s** | {contention(e)} |"
            )
    if args.measure_ceilings:
        sys.path.insert(0, HERE)
        import ceilings

        c = ceilings.measure()
        lines.append(
            f"| standalone now (`ceilings.py`, load {c['loadavg_1min']:.2f}) | | "
            f"{c['copy_GBps']:.2f} GB/s; {c['matmul_GFLOPps']:.1f} GFLOP/s | |"
        )
    touch = [e for e in entries.values() if "touch" in e["extra"]]
    if touch:
        lines += [
            "",
            "First touch: `torch.empty(n).fill_(1)` (fresh memory each call) against "
            "`buf.fill_(1)` of a warm buffer, same bytes.",
            "",
            "| what | median ms | GB/s (write) | other CPU (cores) |",
            "|---|---:|---:|---|",
        ]
        for e in sorted(touch, key=lambda e: e["extra"]["touch"]):
            ex = e["extra"]
            lines.append(
                f"| {ex['touch']} | {ms(e['median'])} | "
                f"{ex['bytes'] / e['median'] / 1e9:.2f} | {contention(e)} |"
            )

    lines += [
        "",
        "## Targets (fwd+bwd)",
        "",
        "| case | target | eager / pyssl | of floor (pyssl) | met |",
        "|---|---|---:|---:|---|",
    ]
    for group, (speedup, frac) in TARGETS.items():
        impls = by_group.get(group, {})
        if "pyssl" not in impls or "eager" not in impls:
            lines.append(f"| {group} | | missing | | no data |")
            continue
        t = impls["pyssl"]["median"]
        ratio = impls["eager"]["median"] / t
        ex = impls["pyssl"]["extra"]
        floor = max(ex["bytes"] / bandwidth, ex["flops"] / flop_rate)
        reached = floor / t
        target = f">= {speedup:g}x eager" + (
            f", >= {frac:.2f} of floor (within 1.5x)" if frac else ""
        )
        ok = ratio >= speedup and (frac is None or reached >= frac)
        lines.append(
            f"| {group} | {target} | {ratio:.2f}x | {reached:.2f} | "
            f"{'**yes**' if ok else '**no**'} |"
        )

    lines += ["", "## Cases", ""]
    for group in ORDER + sorted(set(by_group) - set(ORDER)):
        impls = by_group.get(group)
        if not impls:
            continue
        ref_entry = next(iter(impls.values()))
        ex = ref_entry["extra"]
        t_bytes = ex["bytes"] / bandwidth
        t_flops = ex["flops"] / flop_rate
        floor = max(t_bytes, t_flops)
        lines += [
            f"### {group}",
            "",
            f"Floor **{ms(floor)} ms** = max(bytes {mb(ex['bytes'])} / {bandwidth / 1e9:.2f} GB/s "
            f"= {ms(t_bytes)} ms, FLOPs {ex['flops'] / 1e6:.0f} M / {flop_rate / 1e9:.0f} GFLOP/s "
            f"= {ms(t_flops)} ms). Bytes counted: {ex['bytes_counted']}. (At the "
            f"L3-resident copy rate, {cached_bw / 1e9:.1f} GB/s, the bytes would take "
            f"{ms(ex['bytes'] / cached_bw)} ms.)",
            "",
            "| impl | median ms | IQR ms | per-run medians ms | rounds | time / pyssl "
            "| of floor | first call ms | other CPU (cores) |",
            "|---|---:|---:|---|---:|---:|---:|---:|---:|",
        ]
        t_pyssl = impls["pyssl"]["median"] if "pyssl" in impls else None
        for impl in IMPLS:
            e = impls.get(impl)
            name = f"{group} / {impl}"
            if e is None:
                why = skips.get(name, {}).get("reason", "not in the runs (see the pytest summary)")
                lines.append(f"| {impl} | skipped: {why} | | | | | | | |")
                continue
            ratio = f"{e['median'] / t_pyssl:.2f}x" if t_pyssl else "-"
            lines.append(
                f"| {impl} | {ms(e['median'])} | {ms(statistics.median(e['iqr']))} | "
                f"{' / '.join(ms(x) for x in e['medians'])} | {sum(e['rounds'])} | {ratio} | "
                f"{floor / e['median']:.2f} | {first_call(e)} | {contention(e)} |"
            )
        lines.append("")

    mem = [
        (g, i, e)
        for g in ORDER
        for i, e in by_group.get(g, {}).items()
        if "peak_alloc_bytes" in e["extra"]
    ]
    if mem:
        lines += [
            "## Peak memory during one fwd+bwd",
            "",
            "Bytes allocated through torch's CPU allocator during one call, beyond the "
            "inputs (torch.profiler, `profile_memory=True`; running sum of allocations and "
            "frees, peak). A [64, 196, 768] fp32 tensor is 38.5 MB; the C++ core's own "
            "O(B*L) scratch (< 0.2 MB) is not seen by the profiler.",
            "",
            "| case | impl | peak MB | allocations >= 1 MiB (MB) |",
            "|---|---|---:|---|",
        ]
        for g, i, e in sorted(mem, key=lambda t: (ORDER.index(t[0]), IMPLS.index(t[1]))):
            ex = e["extra"]
            big = ", ".join(f"{n / 1e6:.1f}" for n in ex["allocs_over_1MiB"])
            lines.append(f"| {g} | {i} | {ex['peak_alloc_bytes'] / 1e6:.1f} | {big} |")
        lines.append("")

    lines += contrastive_section(max_foreign, args.all_builds)
    lines += augment_section(max_foreign, args.all_builds)
    lines += text_section(max_foreign, args.all_builds)
    for family, title in BYTES_FAMILIES.items():
        lines += bytes_family_section(family, title, max_foreign, args.all_builds)
    lines.append(f"_Written {time.strftime('%Y-%m-%d %H:%M:%S')}._")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out} from {len(runs)} run(s)")


# The contrastive targets, on fwd+bwd: case -> (minimum speedup over eager, minimum fraction of
# floor, maximum extra peak bytes)
C_TARGETS = {
    "nt_xent fwd+bwd": (1.5, 0.5, 64 * 2**20),
    "clip_loss fwd+bwd": (1.0, None, None),
    "siglip_loss fwd+bwd": (1.0, None, None),
    "moco_loss fwd+bwd": (1.0, None, None),
}
C_IMPLS = ["pyssl", "eager", "compiled", "peer"]
LARGE_MAX_EXTRA = 2**30


def newest_build_runs(paths: list[str], all_builds: bool) -> list[dict[str, Any]]:
    """The runs in ``paths`` by date; unless ``all_builds``, only those of the newest run's
    build of the core (``pyssl_core_build``)."""
    runs = sorted(load(paths), key=lambda r: r.get("datetime", ""))
    build = runs[-1]["machine_info"].get("pyssl_core_build")
    if all_builds:
        return runs
    return [r for r in runs if r["machine_info"].get("pyssl_core_build") == build]


def group_by_impl(
    entries: dict[str, dict[str, Any]], with_mode: bool = True
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{"case mode": {impl: entry}}`` (``{case: {impl: entry}}`` without the mode) of the
    entries that name an implementation."""
    groups: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for entry in entries.values():
        ex = entry["extra"]
        if "impl" in ex:
            groups[f"{ex['case']} {ex['mode']}" if with_mode else ex["case"]][ex["impl"]] = entry
    return groups


def contrastive_section(max_foreign: float | None, all_builds: bool) -> list[str]:
    """The contrastive runs (bench_contrastive.py): contrastive-*.json and the --large run."""
    paths = sorted(glob.glob(os.path.join(RESULTS_DIR, "contrastive-*.json")))
    large_paths = [p for p in paths if os.path.basename(p).startswith("contrastive-large-")]
    paths = [p for p in paths if p not in large_paths]
    lines = ["", "# Contrastive losses", ""]
    if not paths:
        return lines + ["No runs of `bench/bench_contrastive.py` in `bench/.results/`.", ""]
    runs = newest_build_runs(paths, all_builds)
    entries = combine(runs, max_foreign)
    bandwidth, flop_rate, src = ceilings_from(entries)
    by_group = group_by_impl(entries)
    skips: dict[str, Any] = {}
    skips_path = os.path.join(RESULTS_DIR, "skips.json")
    if os.path.exists(skips_path):
        with open(skips_path) as f:
            skips = json.load(f)
    m = runs[-1]["machine_info"]
    lines += [
        "Generated from runs of `bench/bench_contrastive.py` (see its docstring for what is "
        "counted): CPU, fp32, 2 threads; fwd+bwd = the loss, then `torch.autograd.grad` against "
        "every input that needs a gradient. `peer` = lightly `NTXentLoss` / open_clip "
        "`ClipLoss` / `SigLipLoss`.",
        "",
        f"- torch {m.get('torch', '?')}, python {m.get('python_version', '?')}, pyssl core "
        f"build {m.get('pyssl_core_build', 'not recorded')}; runs combined: {len(runs)}",
    ]
    for run in runs:
        lines.append(f"  - `{os.path.relpath(run['_path'], os.path.dirname(HERE))}`")
    lines += [
        f"- ceilings ({src}): matmul **{flop_rate / 1e9:.1f} GFLOP/s**, copy "
        f"{bandwidth / 1e9:.2f} GB/s. Floor = max(bytes / copy, FLOPs / matmul); FLOPs = "
        "8*R*C*D (forward, recompute, both gradients; moco 6*N*K*D, no queue gradient).",
        "- peak memory: `alloc` = peak bytes through torch's allocator during one call "
        "(torch.profiler); `RSS` = growth of the resident set of a fresh process over one call "
        "(VmHWM - VmRSS before), which also sees the C++ core's own scratch.",
        "",
        *(
            [
                "**Contended:** other processes used more than the threshold of CPU during "
                "some timings (column `other CPU`); absolute times, and the matmul ceiling "
                "measured beside them, are inflated; the ratios are less certain than in a "
                "quiet run.",
                "",
            ]
            if any(e["contended"] for e in entries.values())
            else []
        ),
        "## Targets (fwd+bwd)",
        "",
        "| case | target | eager / pyssl | of floor (pyssl) | peak alloc / RSS MB (pyssl) | met |",
        "|---|---|---:|---:|---|---|",
    ]
    for group, (speedup, frac, max_mem) in C_TARGETS.items():
        impls = by_group.get(group, {})
        if "pyssl" not in impls or "eager" not in impls:
            lines.append(f"| {group} | | missing | | | no data |")
            continue
        t = impls["pyssl"]["median"]
        ex = impls["pyssl"]["extra"]
        ratio = impls["eager"]["median"] / t
        reached = max(ex["bytes"] / bandwidth, ex["flops"] / flop_rate) / t
        mem = max(ex.get("peak_alloc_bytes", 0), ex.get("rss_growth_bytes", 0))
        target = f"> {speedup:g}x eager" if speedup == 1.0 else f">= {speedup:g}x eager"
        if frac:
            target += f", >= {frac:.2f} of floor (within {1 / frac:g}x)"
        if max_mem:
            target += f", extra peak < {max_mem / 2**20:.0f} MiB"
        ok = (ratio > speedup if speedup == 1.0 else ratio >= speedup) and (
            frac is None or reached >= frac
        )
        ok = ok and (max_mem is None or mem < max_mem)
        lines.append(
            f"| {group} | {target} | {ratio:.2f}x | {reached:.2f} | "
            f"{ex.get('peak_alloc_bytes', 0) / 1e6:.1f} / "
            f"{ex.get('rss_growth_bytes', float('nan')) / 1e6:.1f} | "
            f"{'**yes**' if ok else '**no**'} |"
        )
    lines += ["", "## Cases", ""]
    for group in list(C_TARGETS) + sorted(set(by_group) - set(C_TARGETS)):
        impls = by_group.get(group)
        if not impls:
            continue
        ex = next(iter(impls.values()))["extra"]
        floor = max(ex["bytes"] / bandwidth, ex["flops"] / flop_rate)
        shape = f"N = {ex['n']}" + (f", K = {ex['k']}" if ex.get("k") else "") + f", D = {ex['d']}"
        lines += [
            f"### {group}",
            "",
            f"{shape}. Floor **{ms(floor)} ms** = FLOPs {ex['flops'] / 1e9:.2f} G / "
            f"{flop_rate / 1e9:.0f} GFLOP/s (bytes {mb(ex['bytes'])}: "
            f"{ms(ex['bytes'] / bandwidth)} ms).",
            "",
            "| impl | median ms | per-run medians ms | rounds | time / pyssl | of floor "
            "| first call ms | peak alloc MB | RSS growth MB | other CPU (cores) |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        t_pyssl = impls["pyssl"]["median"] if "pyssl" in impls else None
        for impl in C_IMPLS:
            e = impls.get(impl)
            if e is None:
                why = skips.get(f"{group} / {impl}", {}).get(
                    "reason", "not in the runs (see the pytest summary)"
                )
                lines.append(f"| {impl} | skipped: {why} | | | | | | | | |")
                continue
            x = e["extra"]
            rss = f"{x['rss_growth_bytes'] / 1e6:.1f}" if "rss_growth_bytes" in x else "-"
            ratio = f"{e['median'] / t_pyssl:.2f}x" if t_pyssl else "-"
            lines.append(
                f"| {impl} | {ms(e['median'])} | {' / '.join(ms(v) for v in e['medians'])} | "
                f"{sum(e['rounds'])} | {ratio} | {floor / e['median']:.2f} | {first_call(e)} | "
                f"{x.get('peak_alloc_bytes', 0) / 1e6:.1f} | {rss} | {contention(e)} |"
            )
        lines.append("")
    lines += ["## nt_xent at N = 65536 (2N = 131072), pyssl only, one fwd+bwd (`--large`)", ""]
    if not large_paths:
        return lines + ["No `--large` run in `bench/.results/`.", ""]
    with open(large_paths[-1]) as f:
        big = json.load(f)
    extra = big["rss_growth_bytes"]
    lines += [
        f"From `{os.path.relpath(large_paths[-1], os.path.dirname(HERE))}` "
        f"({big['datetime']}, core build {big.get('pyssl_core_build', '?')}; the eager "
        f"reference would need a {(2 * big['n']) ** 2 * 4 / 2**30:.0f} GiB logits matrix).",
        "",
        "| one call s | floor s (matmul rate measured then) | of floor | inputs MB | "
        "RSS growth MB | target: growth < 1 GiB | met |",
        "|---:|---:|---:|---:|---:|---|---|",
        f"| {big['one_call_s']:.1f} | {big['floor_s']:.1f} "
        f"({big['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s) | "
        f"{big['floor_s'] / big['one_call_s']:.2f} | {big['inputs_bytes'] / 1e6:.1f} | "
        f"{extra / 1e6:.1f} | < {LARGE_MAX_EXTRA / 1e6:.0f} MB | "
        f"{'**yes**' if extra < LARGE_MAX_EXTRA else '**no**'} |",
        "",
    ]
    return lines


# The text targets: case -> (impl to beat, minimum speedup over it)
T_TARGETS = {
    "lm_loss fwd+bwd": ("gathered", 1.0),
    "mask_tokens fwd": ("eager", 3.0),
    **{f"{name} sampler fwd": ("eager", 10.0)
       for name in ("beit", "simmim", "tube", "ijepa", "data2vec", "span", "time")},
}  # fmt: skip
T_IMPLS = ["pyssl", "eager", "gathered", "compiled"]


def text_section(max_foreign: float | None, all_builds: bool) -> list[str]:
    """The text runs (bench_text.py): text-*.json."""
    paths = sorted(glob.glob(os.path.join(RESULTS_DIR, "text-*.json")))
    lines = ["", "# Text: masked-token ops, LM loss and mask samplers", ""]
    if not paths:
        return lines + ["No runs of `bench/bench_text.py` in `bench/.results/`.", ""]
    runs = newest_build_runs(paths, all_builds)
    entries = combine(runs, max_foreign)
    _, flop_rate, src = ceilings_from(entries)
    by_group = group_by_impl(entries)
    m = runs[-1]["machine_info"]
    lines += [
        "Generated from runs of `bench/bench_text.py` (see its docstring for the cases): CPU, "
        "2 threads. `lm_loss`: B=8, T=512, H=768, V=30522, 15% labelled, fp32, bias; `eager` "
        "= linear + cross_entropy over all positions, `gathered` = over the labelled rows, "
        "`compiled` = torch.compile of `gathered`.",
        "",
        f"- torch {m.get('torch', '?')}, python {m.get('python_version', '?')}, pyssl core "
        f"build {m.get('pyssl_core_build', 'not recorded')}; runs combined: {len(runs)}",
        *[f"  - `{os.path.relpath(r['_path'], os.path.dirname(HERE))}`" for r in runs],
        f"- matmul ceiling ({src}): **{flop_rate / 1e9:.1f} GFLOP/s**; the LM loss floor is "
        "6*M*V*H FLOPs over it.",
        "",
        *(
            [
                "**Contended:** other processes used more than the threshold of CPU during "
                "some timings (column `other CPU`); the ratios are less certain than in a quiet "
                "run.",
                "",
            ]
            if any(e["contended"] for e in entries.values())
            else []
        ),
        "## Targets",
        "",
        "| case | target | ratio | met |",
        "|---|---|---:|---|",
    ]
    for group, (rival, speedup) in T_TARGETS.items():
        impls = by_group.get(group, {})
        if "pyssl" not in impls or rival not in impls:
            lines.append(f"| {group} | | missing | no data |")
            continue
        ratio = impls[rival]["median"] / impls["pyssl"]["median"]
        target = f">= {speedup:g}x {rival}" if speedup > 1 else f"no slower than {rival}"
        ok = ratio >= speedup
        lines.append(f"| {group} | {target} | {ratio:.2f}x | {'**yes**' if ok else '**no**'} |")
        if group == "lm_loss fwd+bwd" and "eager" in impls:
            mem = {
                i: max(e["extra"].get(k, 0) for k in ("peak_alloc_bytes", "rss_growth_bytes"))
                for i, e in impls.items()
            }
            frac = mem["pyssl"] / mem["eager"]
            lines.append(
                f"| {group} memory | peak extra <= 1/8 of eager all-positions | "
                f"{mem['pyssl'] / 1e6:.0f} / {mem['eager'] / 1e6:.0f} MB = 1/{1 / frac:.1f} | "
                f"{'**yes**' if frac <= 1 / 8 else '**no**'} |"
            )
    lines += ["", "## Cases", ""]
    for group in T_TARGETS:
        impls = by_group.get(group)
        if not impls:
            continue
        ex = impls.get("pyssl", next(iter(impls.values())))["extra"]
        flops = ex.get("flops", 0)
        head = f"FLOPs {flops / 1e9:.1f} G, floor {ms(flops / flop_rate)} ms." if flops else ""
        lines += [
            f"### {group}",
            "",
            *([head, ""] if head else []),
            "| impl | median ms | per-run medians ms | rounds | time / pyssl | first call ms "
            "| peak alloc MB | RSS growth MB | other CPU (cores) |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        t_pyssl = impls["pyssl"]["median"] if "pyssl" in impls else None
        for impl in T_IMPLS:
            e = impls.get(impl)
            if e is None:
                continue
            x = e["extra"]
            alloc = f"{x['peak_alloc_bytes'] / 1e6:.1f}" if "peak_alloc_bytes" in x else "-"
            rss = f"{x['rss_growth_bytes'] / 1e6:.1f}" if "rss_growth_bytes" in x else "-"
            ratio = f"{e['median'] / t_pyssl:.2f}x" if t_pyssl else "-"
            lines.append(
                f"| {impl} | {ms(e['median'])} | {' / '.join(ms(v) for v in e['medians'])} | "
                f"{sum(e['rounds'])} | {ratio} | {first_call(e)} | {alloc} | {rss} | "
                f"{contention(e)} |"
            )
        lines.append("")
    return lines


# The augmentation target: images/s of pyssl over the per-image eager reference pipeline.
A_TARGETS = {"simclr 2x224": 8.0, "dino 2x224+8x96": None}
A_IMPLS = ["pyssl", "eager", "torchvision"]


def augment_section(max_foreign: float | None, all_builds: bool) -> list[str]:
    """The augmentation runs (bench_augment.py): augment-*.json."""
    paths = sorted(glob.glob(os.path.join(RESULTS_DIR, "augment-*.json")))
    lines = ["", "# Augmentation", ""]
    if not paths:
        return lines + ["No runs of `bench/bench_augment.py` in `bench/.results/`.", ""]
    runs = newest_build_runs(paths, all_builds)
    entries = combine(runs, max_foreign)
    bandwidth, _, src = ceilings_from(entries)
    by_case = group_by_impl(entries, with_mode=False)
    m = runs[-1]["machine_info"]
    lines += [
        "Generated from runs of `bench/bench_augment.py` (see its docstring): CPU, 2 threads, "
        "B = 32 uint8 images of 256x256; pyssl = `SimCLRAugment()` / `DINOAugment()` called on "
        "the batch (sampling included); eager = the float32 reference one image and one op at a "
        "time; torchvision = its v1 transforms per image. Floor = compulsory bytes (uint8 crop "
        "pixels read + float32 views written) / copy bandwidth.",
        "",
        f"- torch {m.get('torch', '?')}, pyssl core build {m.get('pyssl_core_build', '?')}; "
        f"runs combined: {len(runs)}; copy bandwidth {bandwidth / 1e9:.2f} GB/s ({src})",
        "",
        "| case | impl | median ms / batch | images/s | pyssl speedup | of bytes floor "
        "| target | met | other CPU (cores) |",
        "|---|---|---:|---:|---:|---:|---|---|---:|",
    ]
    for case, target in A_TARGETS.items():
        impls = by_case.get(case, {})
        t_pyssl = impls["pyssl"]["median"] if "pyssl" in impls else None
        for impl in A_IMPLS:
            e = impls.get(impl)
            if e is None:
                lines.append(f"| {case} | {impl} | not in the runs | | | | | | |")
                continue
            ex = e["extra"]
            speed = f"{e['median'] / t_pyssl:.1f}x" if t_pyssl and impl != "pyssl" else "-"
            floor = ex["bytes"] / bandwidth / e["median"]
            goal, met = "", ""
            if impl == "eager" and target is not None and t_pyssl:
                goal = f">= {target:g}x eager"
                met = "**yes**" if e["median"] / t_pyssl >= target else "**no**"
            lines.append(
                f"| {case} | {impl} | {ms(e['median'])} | {ex['images'] / e['median']:.1f} | "
                f"{speed} | {floor:.3f} | {goal} | {met} | {contention(e)} |"
            )
    return lines + [""]


# Families whose ops are passes over memory (no FLOPs in their floor): one table per case.
BYTES_FAMILIES = {
    "pretext": "Pretext: RotNet rotations and jigsaw shuffles",
    "colour": "Colour: sRGB <-> CIELAB",
}


def bytes_family_section(
    family: str, title: str, max_foreign: float | None, all_builds: bool
) -> list[str]:
    """The runs of bench_<family>.py (<family>-*.json): per case, each impl's time, its ratio to
    pyssl's and the fraction of the bytes floor (compulsory bytes / the copy bandwidth measured
    in the same runs)."""
    paths = sorted(glob.glob(os.path.join(RESULTS_DIR, f"{family}-*.json")))
    lines = ["", f"# {title}", ""]
    if not paths:
        return lines + [f"No runs of `bench/bench_{family}.py` in `bench/.results/`.", ""]
    runs = newest_build_runs(paths, all_builds)
    entries = combine(runs, max_foreign)
    bandwidth, _, src = ceilings_from(entries)
    by_group = group_by_impl(entries)
    m = runs[-1]["machine_info"]
    lines += [
        f"Generated from runs of `bench/bench_{family}.py` (its docstring gives the shapes and "
        "the bytes counted): CPU, 2 threads, one run per file; ratios are time / pyssl's "
        "(above 1: pyssl is faster).",
        "",
        f"- torch {m.get('torch', '?')}, python {m.get('python_version', '?')}, pyssl core "
        f"build {m.get('pyssl_core_build', 'not recorded')}; runs combined: {len(runs)}",
        *[f"  - `{os.path.relpath(r['_path'], os.path.dirname(HERE))}`" for r in runs],
        f"- copy bandwidth ({src}): **{bandwidth / 1e9:.1f} GB/s**",
        "",
        "| case | impl | median ms | time / pyssl | bytes counted | of floor | peak alloc MB "
        "| other CPU (cores) |",
        "|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for group, impls in by_group.items():
        t_pyssl = impls["pyssl"]["median"] if "pyssl" in impls else None
        for impl in IMPLS:
            e = impls.get(impl)
            if e is None:
                continue
            x = e["extra"]
            floor = x.get("bytes", 0) / bandwidth
            alloc = f"{x['peak_alloc_bytes'] / 1e6:.1f}" if "peak_alloc_bytes" in x else "-"
            ratio = f"{e['median'] / t_pyssl:.2f}x" if t_pyssl else "-"
            lines.append(
                f"| {group} | {impl} | {ms(e['median'])} | {ratio} | "
                f"{mb(x.get('bytes', 0))} | {floor / e['median']:.2f} | {alloc} | "
                f"{contention(e)} |"
            )
    lines.append("")
    return lines


if __name__ == "__main__":
    main()
