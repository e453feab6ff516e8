#!/usr/bin/env python3
"""Writes one section of BENCHMARKS.md from a benchmark run's JSON lines, keeping the other sections.

    report.py SECTION RESULTS.jsonl BENCHMARKS.md
"""
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        rustc = "rustc ?"
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, {rustc}"


def interleaved(rounds: list, name: str, wasm: str = "wasm"):
    """Median wasm/native time ratio of the rounds that ran both, with the lowest and highest, the median
    ns/record of each side and the ratio of the fastest runs of each side (noise here only ever adds time):
    (median, low, high, count, native_ns, wasm_ns, fastest), or None."""
    by_round = {}
    for d in rounds:
        side = ("native" if d["run"] == f"round-native-{name}"
                else "wasm" if d["run"] == f"round-{wasm}-{name}" else None)
        if side:
            by_round.setdefault(d["round"], {})[side] = d["r"]["ns_per_record"]
    pairs = [(x["native"], x["wasm"]) for x in by_round.values() if "native" in x and "wasm" in x]
    if not pairs:
        return None
    ratios = [w / n for n, w in pairs]
    return (statistics.median(ratios), min(ratios), max(ratios), len(pairs),
            statistics.median(n for n, _ in pairs), statistics.median(w for _, w in pairs),
            min(w for _, w in pairs) / min(n for n, _ in pairs))


def runtime_section(runs: dict, rounds: list = ()) -> str:
    def r(name):
        return runs.get(name, {})

    def headline(name, native, wasm, side="wasm"):
        """The ratio from interleaved rounds when the run has them, else from the single runs."""
        x = interleaved(list(rounds), name, side)
        if not x:
            return ratio(native, wasm)
        med, low, high, count, native_ns, wasm_ns, fastest = x
        return (f"{med:.2f}x (median of {count} interleaved rounds, {low:.2f}-{high:.2f}; "
                f"{wasm_ns:,.0f} / {native_ns:,.0f} ns per record; fastest runs {fastest:.2f}x)")

    def rate(name):
        return r(name).get("records_per_s", 0)

    def ratio(native, wasm):
        n, w = rate(native), rate(wasm)
        return f"{n / w:.2f}x" if n and w else "n/a"

    rows = []
    for name, label in [
        ("native-seed-router", "seed-router, native (baseline)"),
        ("wasm-seed-router", "seed-router, wasm (ABI v1, SDK, `wasm-opt`)"),
        ("wasm-seed-router-nofuel", "seed-router, wasm, fuel metering off (cost of fuel)"),
        ("wasm-seed-router-rustc", "seed-router, wasm as rustc built it (no `wasm-opt`)"),
        ("wasm-seed-router-simd", "seed-router, wasm, guest built with `+simd128`"),
        ("wasm-seed-compat", "seed-compat, wasm (seed contract)"),
        ("native-acme-iot", "acme-iot, native (baseline)"),
        ("wasm-acme-iot", "acme-iot, wasm (`wasm-opt`)"),
        ("wasm-acme-iot-rustc", "acme-iot, wasm as rustc built it (no `wasm-opt`)"),
        ("wasm-noop", "noop, wasm (boundary only)"),
    ]:
        x = r(name)
        if not x:
            continue
        fuel = x.get("fuel_per_record")
        rows.append(
            f"| {label} | {x['records_per_s']:,.0f} | {x['ns_per_record']:,.0f} | "
            f"{'' if not fuel else f'{fuel:,.0f}'} |"
        )
    seed, noop = r("wasm-seed-router"), r("wasm-noop")
    boundary_share = (
        f"{100 * noop['ns_per_record'] / seed['ns_per_record']:.0f}%" if seed and noop else "n/a"
    )
    rss = seed.get("rss_bytes_per_live_instance")
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {machine()}.",
        "",
        "Method: one plugin instance runs whole passes over a deterministic corpus of 10,000 records "
        f"(`scripts/bench/corpus.py`; seed corpus {seed.get('avg_record_bytes', '?')} B/record on average: "
        "60% metrics, 35% logs, 5% unknown types) for a fixed time after a warm-up pass, fuel metering and epoch "
        "deadlines on, default limits. The native baseline is the same transform's Rust source compiled for the "
        "host and driven through the SDK's host stubs over the same ABI encoding (`plugins/bench-native`), in "
        "the same run, on the same machine. Single thread: records/s is per core. The table's rows are one "
        "run each; the wasm/native ratios below come from rounds that run the native baseline, the wasm plugin "
        "and the same plugin without `wasm-opt` back to back for half a second each (`MILLRACE_BENCH_ROUNDS`), "
        "because this VM's speed drifts by several percent between seconds and one pair of runs can land on "
        "either side of a drift. The plugins are measured as `make plugins` builds them: rustc's release build "
        "with LLVM's inline threshold at 1000 (`plugins/.cargo/config.toml`; the native baseline is built with "
        "it too), then for the Rust examples `wasm-opt -O3` with larger inlining limits "
        "(`scripts/wasm-opt-flags.sh`).",
        "",
        "| run | records/s | ns/record | fuel/record |",
        "| --- | ---: | ---: | ---: |",
        *rows,
        "",
        "| figure | value | target |",
        "| --- | --- | --- |",
        f"| seed-router wasm/native time ratio | {headline('seed-router', 'native-seed-router', 'wasm-seed-router')} | <= 2x |",
        f"| acme-iot wasm/native time ratio | {headline('acme-iot', 'native-acme-iot', 'wasm-acme-iot')} | <= 2x |",
        f"| seed-router without `wasm-opt` | "
        f"{headline('seed-router', 'native-seed-router', 'wasm-seed-router-rustc', 'wasm_rustc')} | |",
        f"| acme-iot without `wasm-opt` | "
        f"{headline('acme-iot', 'native-acme-iot', 'wasm-acme-iot-rustc', 'wasm_rustc')} | |",
        f"| seed-router records/s/core | {rate('wasm-seed-router'):,.0f} | >= 400,000 |",
        f"| boundary per record (noop) | {noop.get('ns_per_record', 0):,.0f} ns ({boundary_share} of seed-router) | |",
        f"| instantiate, median (mean) | {seed.get('instantiate_median_us', 0)} us ({seed.get('instantiate_mean_us', 0)} us) | <= 10 us |",
        f"| RSS per live instance | {'n/a' if rss is None else f'{rss / 1024:.0f} KiB'} "
        f"(linear memory {seed.get('linear_memory_bytes_per_instance', 0) // 1024} KiB, mostly untouched) | <= 256 KiB |",
    ]
    go_rows = []
    for go, rust, native, label in [
        ("wasm-go-router", "wasm-seed-router", "native-seed-router", "seed-router"),
        ("wasm-go-acme-iot", "wasm-acme-iot", "native-acme-iot", "acme-iot"),
    ]:
        for name, lang in [(go, "Go (wasm)"), (rust, "Rust (wasm)"), (native, "Rust (native)")]:
            x = r(name)
            if not x:
                continue
            native_run = name.startswith("native")
            rss = x.get("rss_bytes_per_live_instance")
            fuel = x.get("fuel_per_record")
            compile_ms = x.get("compile_ms")
            cells = [
                label,
                lang,
                f"{x['records_per_s']:,.0f}",
                f"{x['ns_per_record']:,.0f}",
                f"{fuel:,.0f}" if fuel else "",
                f"{compile_ms:,.0f}" if compile_ms is not None else "",
                "" if native_run else str(x.get("instantiate_median_us", "")),
                f"{rss / 1024:,.0f}" if rss is not None and not native_run else "",
            ]
            go_rows.append("| " + " | ".join(cells) + " |")
        if r(go):
            go_rows.append(
                f"| {label} | time ratios: Go/Rust wasm {ratio(rust, go)}, Go/native {ratio(native, go)} "
                "| | | | | | |"
            )
    if go_rows:
        lines += [
            "",
            "Go guests (`plugins/sdk-go`, standard Go `GOOS=wasip1 -buildmode=c-shared`) beside the same transforms "
            "in Rust, same corpus, same run; compile is the module's compilation to native code (once per module "
            "and engine build, then the compiled cache), instantiate includes the Go runtime's `_initialize`.",
            "",
            "| transform | guest | records/s | ns/record | fuel/record | compile ms | instantiate us | RSS/instance KiB |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
            *go_rows,
        ]
    return "\n".join(lines)


def registry_section(lines: list) -> str:
    by_plugin = {}
    for d in lines:
        by_plugin.setdefault(d["plugin"], []).append(d)
    rows = []
    for plugin, runs in by_plugin.items():
        cold = statistics.median(r["cold"]["ready_ms"] for r in runs)
        disk = statistics.median(r["warm"]["ready_ms"] for r in runs)
        mem = statistics.median(x for r in runs for x in r["warm"]["repeat_ms"])
        size = runs[0]["cold"]["module_bytes"]
        rows.append(f"| {plugin} | {size / 1024:.0f} KiB | {cold:.1f} ms | {disk:.2f} ms | {mem * 1000:.1f} us |")
    return "\n".join([
        f"Measured {time.strftime('%Y-%m-%d')} on {machine()}.",
        "",
        "Method: each example plugin is pushed with the ORAS SDK to the stack's CNCF distribution registry on "
        "loopback and pulled by digest with `millrace plugin pull --json` (time inside the process, from reference "
        "to a loaded plugin). Cold: empty cache (pull manifest and module, verify sha256, compile, cache). Warm from "
        "disk: a new process with that cache (manifest, module and compiled artifact re-hashed, artifact loaded, "
        "one probe instance). Warm in memory: the same process loading it again (200 times). Medians of 3 runs.",
        "",
        "| plugin | module | cold | warm, disk | warm, memory |",
        "| --- | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        "Targets: cold <= 500 ms on loopback, warm <= 1 ms.",
    ])


def pipeline_section(lines: list) -> str:
    r = {d["run"]: d["r"] for d in lines}
    # The blackhole runs (MILLRACE_BENCH_REPEATS): the median of their rates and, separately, of their CPU.
    bhs = [d["r"] for d in lines if d["run"] == "blackhole"]
    def median(xs):
        xs = sorted(xs)
        return (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2 if xs else 0
    bh = {
        "records_per_s": median([x.get("records_per_s", 0) for x in bhs]),
        "cpu_us_per_record": median([x.get("cpu_us_per_record", 0) for x in bhs]),
        "records": median([x.get("records", 0) for x in bhs]),
        "seconds": median([x.get("seconds", 0) for x in bhs]),
    }
    raw, stores = r.get("raw", {}), r.get("stores", {})
    # The plugin alone, several runs: the fastest (noise only adds time, and this is a floor).
    plugin = min((d["r"] for d in lines if d["run"] == "plugin"), key=lambda x: x.get("ns_per_record") or 1e18,
                 default={})
    influx, ceiling = r.get("influx", {}), r.get("influx-ceiling", {})
    lat_s, lat_b = r.get("latency-stores", {}), r.get("latency-blackhole", {})
    def rate(x):
        return f"{x.get('records_per_s', 0):,.0f}"
    def of_raw(x):
        top = raw.get("records_per_s") or 0
        return f"{x.get('records_per_s', 0) / top:.1%}" if top else "n/a"
    def cpu(x):
        return f"{x.get('cpu_us_per_record', 0):.1f}"
    def ms(v):
        return "n/a" if v is None else f"<= {v * 1000:g} ms"
    def lat(x, p):
        bound, est = x.get(f"p{p}_le_s"), x.get(f"p{p}_est_s")
        return ms(bound) + ("" if est is None else f" (~{est * 1000:.0f} ms)")
    return "\n".join([
        f"Measured {time.strftime('%Y-%m-%d')} on {machine()}.",
        "",
        "Method: the seed corpus (~300 B records; 60% metrics, 35% logs, 5% unknown types that are "
        "dead-lettered) is produced to a 4-partition topic, then one `millrace worker` (release build, 2 lanes) "
        "drains it through `seed-router`. Throughput is measured from a quarter of the records finished (all "
        "outputs acknowledged or dead-lettered: the worker's `millrace_record_latency_seconds_count`, read every "
        "20 ms) to the last (plugins loaded, group joined, the start-up burst over), and the run ends when every "
        "offset is committed; CPU is the worker process's user+system time over the same span. In the "
        "same run: a do-nothing rdkafka consumer over the same topic (the broker's ceiling here; its own CPU per "
        "record is librdkafka's share of any consumer's), `seed-router` alone in the sandbox, and the worker "
        "with both stores replaced by a counting HTTP blackhole (the cost of the real stores). The broker, the "
        "stores and the worker share the machine's 2 cores. Latency: records produced at a steady rate while "
        "the worker runs, from the Kafka timestamp to all outputs acknowledged (upper bounds of histogram buckets, "
        "with in brackets the estimate within the bucket that Prometheus's histogram_quantile() makes); the "
        "do-nothing consumer of the same records joins while the worker does, before they flow. "
        f"Measured span of a blackhole run (median): {bh.get('records', 0):,.0f} records in {bh.get('seconds', 0):.1f} s "
        "(`MILLRACE_BENCH_RECORDS` per topic). The worker with blackhole stores runs "
        f"{len(bhs)} times (`MILLRACE_BENCH_REPEATS`), each on a topic of its own: single runs on this VM spread by "
        "+-15%, so the table gives the median records/s and, separately, the median CPU per record; the runs "
        "themselves are listed below it.",
        "",
        "| run | records/s | of raw consume | worker CPU us/record |",
        "| --- | ---: | ---: | ---: |",
        f"| raw consume, do-nothing consumer | {rate(raw)} | 100% | {cpu(raw)} (its own) |",
        f"| worker -> InfluxDB 1.x + Elasticsearch API | {rate(stores)} | {of_raw(stores)} | {cpu(stores)} |",
        f"| worker -> InfluxDB 1.x + blackhole documents | {rate(influx)} | {of_raw(influx)} | {cpu(influx)} |",
        f"| worker -> blackhole stores, median of {len(bhs)} | {rate(bh)} | {of_raw(bh)} | {cpu(bh)} |",
        "",
        "Blackhole runs: " + "; ".join(
            f"{rate(x)} records/s, {cpu(x)} us/record" for x in bhs
        ) + ".",
        "",
        floor_note(raw, plugin, bh),
        "",
        f"InfluxDB's own ceiling in the same run (the worker's batches and concurrency: {ceiling.get('batch', 'n/a')} "
        f"points per gzipped request, {ceiling.get('concurrency', 'n/a')} at once, no Kafka, no plugin): "
        f"{ceiling.get('points_per_s', 0):,.0f} points/s. The seed corpus gives "
        f"{ceiling.get('points_per_record', 0.6):.1f} points per record, so the store alone caps the worker at about "
        f"{ceiling.get('points_per_s', 0) / (ceiling.get('points_per_record') or 0.6):,.0f} records/s.",
        "",
        "| latency run | rate | records | p50 | p99 | do-nothing consumer p50 / p99 |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *[
            f"| {name} | {x.get('rate', 0):,}/s | {x.get('records', 0):,.0f} | {lat(x, 50)} | {lat(x, 99)} "
            f"| {x.get('raw_p50_ms')} ms / {x.get('raw_p99_ms')} ms |"
            for name, x in [("real stores", lat_s), ("blackhole stores", lat_b)]
        ],
        "",
        "Targets (issue 16): >= 250,000 records/s through `seed-router` with blackhole stores; <= 2 us of worker "
        "CPU per record; p99 <= 250 ms at 5,000 records/s with blackhole stores.",
    ])


def floor_note(raw: dict, plugin: dict, bh: dict) -> str:
    """The floor under the worker's CPU per record in this run: consuming a record and running its plugin."""
    consume = raw.get("cpu_us_per_record")
    run = (plugin.get("ns_per_record") or 0) / 1000
    if not consume or not run:
        return "Floor of the CPU per record: n/a (the do-nothing consumer's CPU or the plugin's time is missing)."
    floor = consume + run
    worker = bh.get("cpu_us_per_record") or 0
    return (
        f"Floor of the CPU per record in this run: the do-nothing consumer spent {consume:.2f} us of CPU per "
        f"record (librdkafka fetching, decoding and handing over each record, nothing else), and `seed-router` "
        f"alone takes {run:.2f} us per record in the sandbox (`millrace plugin bench` on the same corpus: encode, "
        f"call, check the outputs; the fastest of five 1 s runs). Together {floor:.2f} us, before any routing, "
        f"batching, store request, acknowledgement or offset; the worker's median {worker:.1f} us is "
        f"{worker / floor:.1f}x that floor. "
        f"Goal 2 (2 us) is {'below' if floor > 2 else 'above'} it."
    )


def many_section(lines: list) -> str:
    setup = next((d["r"] for d in lines if d["run"] == "setup"), {})
    runs = [(d.get("mode", "cold"), d["r"]) for d in lines if d["run"] == "bindings"]
    fair = next((d["r"] for d in lines if d["run"] == "fairness"), None)
    GiB, MiB = 1 << 30, 1 << 20

    def secs(v):
        return "n/a" if v is None else f"{v:.2f} s"

    def mib(v):
        return "n/a" if v is None else f"{v / MiB:,.0f} MiB"

    def ms(v):
        return "n/a" if v is None else f"{v:,.0f} ms"

    plugin = setup.get("plugin") or (runs[0][1].get("plugin") if runs else "seed_router")
    first = runs[0][1] if runs else {}
    rows = []
    for mode, r in runs:
        n = r.get("bindings") or 0
        load, load_ms = r.get("load_s"), r.get("load_ms")
        per = f" ({load_ms / n:,.{0 if load_ms >= 10 * n else 1}f} ms/binding)" if load_ms is not None and n else ""
        resident = r.get("compiled_plugins_resident")
        resident_s = "n/a" if resident is None else f"{resident:,.0f} ({mib(r.get('compiled_plugins_resident_bytes'))})"
        rows.append(
            f"| {n:,} | {mode} | {secs(load)}{per} | {secs(r.get('joined_s'))} | {secs(r.get('first_output_s'))} "
            f"| {secs(r.get('first_output_after_join_s'))} | {secs(r.get('drain_s'))} | {mib(r.get('rss_peak_bytes'))} "
            f"| {mib(r.get('rss_bytes'))} | {resident_s} |"
        )
    cold = [r for mode, r in runs if mode == "cold"]
    warm = [r for mode, r in runs if mode == "warm"]
    biggest = max(cold, key=lambda r: r.get("bindings", 0), default={})
    smallest = min(cold, key=lambda r: r.get("bindings", 0), default={})
    after_join = [r["first_output_after_join_s"] for _, r in runs if r.get("first_output_after_join_s") is not None]
    figures = []
    if biggest:
        peak = biggest.get("rss_peak_bytes")
        verdict = "" if peak is None or biggest["bindings"] < 1000 else (" (met)" if peak <= 2 * GiB else " (missed)")
        figures.append(f"| {biggest['bindings']:,} bindings, peak resident memory | {mib(peak)}{verdict} | "
                       f"{'<= 2 GiB' if biggest['bindings'] >= 1000 else '2 GiB for 1,000 bindings'} |")
    if after_join:
        worst = max(after_join)
        figures.append(f"| first output after joining, worst run | {worst:.2f} s{' (met)' if worst <= 2 else ' (missed)'} | <= 2 s |")
    if biggest.get("load_ms") is not None and biggest.get("bindings"):
        figures.append(f"| load, cold (pull, verify, compile), per binding at {biggest['bindings']:,} bindings | "
                       f"{biggest['load_ms'] / biggest['bindings']:,.0f} ms | |")
    for label, group in (("cold", cold), ("warm restart", warm)):
        per_binding = memory_slope(group)
        if per_binding:
            (lo, hi, slope) = per_binding
            figures.append(f"| steady resident memory per binding, {label} ({lo:,} -> {hi:,} bindings) "
                           f"| {slope / 1024:,.0f} KiB | |")

    out = [
        f"Measured {time.strftime('%Y-%m-%d')} on {machine()}.",
        "",
        f"Method: each client has its own topic ({first.get('partitions', '?')} partitions), its own digest of "
        f"`{plugin}` (the example module with a custom section of its own: the same code, a distinct module to "
        f"pull, compile and keep) and {first.get('records_per_client', first.get('records', 0) // max(first.get('bindings', 1), 1)):,} "
        "records waiting in Kafka. One `millrace worker` (release build, default lanes, `memory_budget` 2 GiB: the "
        "default without a container limit) starts with all the bindings; both stores are a blackhole that notes "
        "when each output arrives. Cold: an empty plugin cache (pull, verify and compile every module); warm: a "
        "restart on the cold run's cache, in a new consumer group. Times count from the process start: every "
        "binding loaded (the worker's `initial bindings loaded`), the first partitions assigned (joined), the first "
        "output in the store, every output in the store (drained). Memory from `/proc/PID/status`: peak (`VmHWM`) "
        "and resident 3 s after the drain with every binding loaded (`VmRSS`, steady); compiled plugins resident "
        "from `millrace_compiled_plugins_resident` and `_bytes`. One run per row; broker, blackhole and worker share "
        "the machine's cores.",
        "",
        "| bindings | cache | all loaded | joined | first output | after joining | drained | peak RSS | steady RSS | compiled plugins resident |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        "| figure | value | goal |",
        "| --- | --- | --- |",
        *figures,
    ]
    if fair:
        alone, beside = fair.get("alone", {}), fair.get("beside", {})
        ratio = (f"{beside['p99_ms'] / alone['p99_ms']:.2f}x" if alone.get("p99_ms") and beside.get("p99_ms") else "n/a")
        goal = fair.get("goal_p99_ms")
        met = fair.get("met")
        out += [
            "",
            f"Fairness: one worker with one lane (`pipeline.lanes = 1`: both clients share it, the hard case). The quiet "
            f"client (`seed_router`) produces {fair.get('rate', 0):,.0f} records/s for {fair.get('seconds', 0):.0f} s alone, "
            f"then as long again beside a noisy client: `hostile`, every record spinning until its fuel runs out, "
            f"`cpu_budget = {fair.get('cpu_budget')}`, a backlog of {fair.get('backlog', 0):,} records produced just "
            "before. Latency of a quiet record: its point's arrival in the blackhole store minus the record's Kafka "
            "timestamp (set by the producer); exact percentiles over every record of the phase. The batching linger "
            "(`batching.linger`, 50 ms by default) and the broker's delivery are part of both phases.",
            "",
            "| quiet client | records | p50 | p99 | max |",
            "| --- | ---: | ---: | ---: | ---: |",
            f"| alone | {alone.get('records', 0):,} | {ms(alone.get('p50_ms'))} | {ms(alone.get('p99_ms'))} | {ms(alone.get('max_ms'))} |",
            f"| beside the noisy client | {beside.get('records', 0):,} | {ms(beside.get('p50_ms'))} | {ms(beside.get('p99_ms'))} | {ms(beside.get('max_ms'))} |",
            "",
            "| figure | value | goal |",
            "| --- | --- | --- |",
            f"| quiet p99 beside / alone | {ratio} | |",
            f"| quiet p99 beside the noisy client | {ms(beside.get('p99_ms'))}"
            f"{'' if met is None else (' (met)' if met else ' (missed)')} | <= 2 x alone p99 + one deadline "
            f"({fair.get('deadline_ms', 100):.0f} ms) = {ms(goal)} |",
            f"| noisy client during the phase | {fair.get('noisy_records_during', 0):,.0f} records, "
            f"{fair.get('noisy_cores_during', 0):.2f} cores of plugin time, throttled {fair.get('noisy_throttled_s_during', 0):.1f} s "
            f"| at most {fair.get('cpu_budget')} cores |",
        ]
    out += ["", "### Reading the many-clients figures", "", *reading_many(runs, cold, warm, biggest, smallest, fair)]
    return "\n".join(out)


def memory_slope(group: list):
    """(fewest, most, bytes per binding) of the steady resident memory between the smallest and largest run."""
    rs = [r for r in group if r.get("rss_bytes") and r.get("bindings")]
    if len(rs) < 2:
        return None
    lo, hi = min(rs, key=lambda r: r["bindings"]), max(rs, key=lambda r: r["bindings"])
    if hi["bindings"] == lo["bindings"]:
        return None
    return lo["bindings"], hi["bindings"], (hi["rss_bytes"] - lo["rss_bytes"]) / (hi["bindings"] - lo["bindings"])


def reading_many(runs, cold, warm, biggest, smallest, fair) -> list:
    """What bounds each figure, stated from the run's own numbers."""
    MiB = 1 << 20
    notes = []
    if biggest.get("load_s") and biggest.get("bindings"):
        n = biggest["bindings"]
        load_ms = biggest.get("load_ms") or biggest["load_s"] * 1000
        text = (f"- **Start-up from a cold cache is bound by compiling.** {n:,} bindings took {load_ms / 1000:.1f} s to "
                f"load (the worker's own count, from the start of loading), {load_ms / n:,.0f} ms of wall time per binding with the worker compiling as many plugins at "
                "once as there are cores (up to 8), each pulled, verified, compiled and probed")
        w = next((r for r in warm if r.get("bindings") == n and r.get("load_ms") is not None), None)
        if w:
            text += (f"; a restart on the warm cache loaded the same {n:,} in {w['load_ms'] / 1000:.2f} s "
                     f"({w['load_ms'] / n:,.1f} ms per binding: compiled artifacts read from the disk cache)")
        notes.append(text + ".")
    timed = [r for r in cold if r.get("joined_s") is not None and r.get("load_s") is not None and r.get("drain_s")]
    if timed:
        each = "; ".join(
            f"{r['bindings']:,} bindings: joined {r['joined_s']:.1f} s, all loaded {r['load_s']:.1f} s, drained "
            f"{r['drain_s']:.1f} s" for r in timed)
        notes.append(
            "- **Joining and draining follow the group's rebalances.** The worker subscribes to each binding's topics "
            "as the binding loads (bindings are published every 500 ms while the others compile), and a changed "
            "subscription gets its partitions at the group's next rebalance; on this broker a join takes about half "
            f"the session timeout (6 s here). Cold runs: {each}. After joining, the first output reaches the store "
            "within the batching linger (200 ms) plus one fetch.")
    if biggest.get("compiled_plugins_resident") is not None and biggest.get("bindings"):
        n, res = biggest["bindings"], biggest["compiled_plugins_resident"]
        size = biggest.get("compiled_plugins_resident_bytes") or 0
        each = size / res / 1024 if res else 0
        text = (f"- **Memory.** A compiled `{biggest.get('plugin')}` holds about {each:,.0f} KiB "
                f"(`millrace_compiled_plugins_resident_bytes`); at {n:,} bindings {res:,.0f} were resident "
                f"({size / MiB:,.0f} MiB)")
        if res < n:
            text += (f", and {biggest.get('compiled_plugin_unloads', 0):,.0f} unloads kept them within the "
                     "compiled-plugin quarter of the memory budget (512 MiB of 2 GiB): the least recently used leave "
                     "memory and come back from the disk cache when their binding has a record "
                     f"({biggest.get('compiled_plugin_reloads', 0):,.0f} times in this run)")
        text += "."
        slopes = [(label, memory_slope(g)) for label, g in (("cold", cold), ("after a warm restart", warm))]
        slopes = [(label, x) for label, x in slopes if x]
        if slopes:
            text += " Steady resident memory grows by " + " and ".join(
                f"{x[2] / 1024:,.0f} KiB per binding {label}" for label, x in slopes) + "."
        same = [(c, w) for c in cold for w in warm if c.get("bindings") == w.get("bindings")
                and c.get("rss_bytes") and w.get("rss_bytes")]
        if same:
            c, w = max(same, key=lambda cw: cw[0]["bindings"])
            text += (f" At {c['bindings']:,} bindings the cold run stayed at {c['rss_bytes'] / MiB:,.0f} MiB and the "
                     f"warm restart at {w['rss_bytes'] / MiB:,.0f} MiB: the difference is what compiling left resident "
                     "(the compiler's freed working memory, which the allocator keeps). The peak "
                     f"({biggest.get('rss_peak_bytes', 0) / MiB:,.0f} MiB cold at {n:,}) comes while loading, with "
                     "the compilers' working memory and the records in flight on top.")
        notes.append(text)
    if fair:
        alone, beside = fair.get("alone", {}), fair.get("beside", {})
        text = (f"- **Fairness** on one lane: the quiet client's p99 went from {alone.get('p99_ms')} ms alone to "
                f"{beside.get('p99_ms')} ms beside the noisy client, whose records each cost a run to the fuel limit "
                f"and which used {fair.get('noisy_cores_during', 0):.2f} cores of plugin time (budget "
                f"{fair.get('cpu_budget')}). A quiet record waits at most for the noisy record running when it "
                "arrives (deficit round robin; the noisy client's budget pauses its partitions when spent). Most of "
                "the quiet latency in both phases is the batching linger and the broker's delivery.")
        left = fair.get("noisy_left_after")
        if left is not None and left <= 0:
            text += (" **The noisy backlog ran out during the phase**: raise `MILLRACE_BENCH_FAIRNESS_BACKLOG` so that "
                     "it lasts; as it is, the phase ends with the quiet client alone.")
        notes.append(text)
    dups = sum(r.get("duplicates", 0) for _, r in runs) + (fair or {}).get("duplicates", 0)
    problems = sum(r.get("warnings", 0) + r.get("errors", 0) for _, r in runs)
    notes.append(f"- Outputs delivered twice: {dups:,}; warnings and errors in the workers' logs: {problems:,} "
                 "(`target/bench/many-*.log`).")
    return notes


def main() -> int:
    section, results, path = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(results) as f:
        raw = f.read()
    lines = [] if section == "host-path" else [json.loads(line) for line in raw.splitlines() if line.strip()]
    if section == "host-path":
        body = "\n".join([
            f"Measured {time.strftime('%Y-%m-%d')} on {machine()}: `cargo bench -p millrace-runtime --bench "
            "host_path` (divan), one warm instance, default limits, fuel and deadlines on. Each row is the whole "
            "per-record host path (encode the record into the guest, call, validate every output) for one "
            "record, or one output validator alone; a regression here shows without the stack. Then "
            "`cargo bench -p millrace-worker --bench record_path`: the worker's bookkeeping per record (take it "
            "in flight, a share per output, acknowledgements, the committable offset) with 256 or 4,096 records "
            "of the partition in flight, and the offsets tracker alone.",
            "",
            "```",
            raw.strip(),
            "```",
        ])
    elif section == "runtime":
        body = runtime_section(
            {d["run"]: d["r"] for d in lines if "round" not in d},
            [d for d in lines if "round" in d],
        )
    else:
        body = {"registry": registry_section, "pipeline": pipeline_section, "many": many_section}[section](lines)
    begin, end = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
    block = f"{begin}\n{body}\n{end}"
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n\nWritten by `make bench`.\n"
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        title = {"runtime": "Plugin runtime", "registry": "Plugin registry", "pipeline": "Pipeline end to end",
                 "many": "Many clients", "host-path": "Per-record host path (microbenchmark)"}.get(section, section)
        text = text.rstrip("\n") + f"\n\n## {title}\n\n{block}\n"
    with open(path, "w") as f:
        f.write(text)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
