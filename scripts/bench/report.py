#!/usr/bin/env python3
"""Writes one section of BENCHMARKS.md from a benchmark run's JSON lines, keeping the other sections.

    report.py SECTION RESULTS.jsonl BENCHMARKS.md
"""
import json
import os
import platform
import re
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


def runtime_section(runs: dict) -> str:
    def r(name):
        return runs.get(name, {})

    def rate(name):
        return r(name).get("records_per_s", 0)

    def ratio(native, wasm):
        n, w = rate(native), rate(wasm)
        return f"{n / w:.2f}x" if n and w else "n/a"

    rows = []
    for name, label in [
        ("native-seed-router", "seed-router, native (baseline)"),
        ("wasm-seed-router", "seed-router, wasm (ABI v1, SDK)"),
        ("wasm-seed-router-nofuel", "seed-router, wasm, fuel metering off (cost of fuel)"),
        ("wasm-seed-compat", "seed-compat, wasm (seed contract)"),
        ("native-acme-iot", "acme-iot, native (baseline)"),
        ("wasm-acme-iot", "acme-iot, wasm"),
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
        "the same run, on the same machine. Single thread: records/s is per core.",
        "",
        "| run | records/s | ns/record | fuel/record |",
        "| --- | ---: | ---: | ---: |",
        *rows,
        "",
        "| figure | value | target |",
        "| --- | --- | --- |",
        f"| seed-router wasm/native time ratio | {ratio('native-seed-router', 'wasm-seed-router')} | <= 1.5x |",
        f"| acme-iot wasm/native time ratio | {ratio('native-acme-iot', 'wasm-acme-iot')} | |",
        f"| seed-router records/s/core | {rate('wasm-seed-router'):,.0f} | >= 400,000 |",
        f"| boundary per record (noop) | {noop.get('ns_per_record', 0):,.0f} ns ({boundary_share} of seed-router) | |",
        f"| instantiate, median (mean) | {seed.get('instantiate_median_us', 0)} us ({seed.get('instantiate_mean_us', 0)} us) | <= 10 us |",
        f"| RSS per live instance | {'n/a' if rss is None else f'{rss / 1024:.0f} KiB'} "
        f"(linear memory {seed.get('linear_memory_bytes_per_instance', 0) // 1024} KiB, mostly untouched) | <= 256 KiB |",
    ]
    return "\n".join(lines)


def registry_section(lines: list) -> str:
    import statistics

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
    raw, stores, bh = r.get("raw", {}), r.get("stores", {}), r.get("blackhole", {})
    lat_s, lat_b = r.get("latency-stores", {}), r.get("latency-blackhole", {})
    def rate(x):
        return f"{x.get('records_per_s', 0):,.0f}"
    def ms(v):
        return "n/a" if v is None else f"<= {v * 1000:g} ms"
    return "\n".join([
        f"Measured {time.strftime('%Y-%m-%d')} on {machine()}.",
        "",
        "Method: the seed corpus (~300 B records; 60% metrics, 35% logs, 5% unknown types that are "
        "dead-lettered) is produced to a 4-partition topic, then one `millrace worker` (release build, 2 lanes) "
        "drains it through `seed-router`. Throughput is measured from the first to the last committed offset "
        "(plugins loaded, group joined); CPU is the worker process's user+system time over the same span. In the "
        "same run: a do-nothing rdkafka consumer over the same topic (the broker's ceiling here), and the worker "
        "with both stores replaced by a counting HTTP blackhole (the cost of the real stores). The broker, the "
        "stores and the worker share the machine's 2 cores. Latency: records produced at a steady rate while "
        "the worker runs, from the Kafka timestamp to all outputs acknowledged (upper bounds of histogram buckets).",
        "",
        "| run | records/s | worker CPU us/record |",
        "| --- | ---: | ---: |",
        f"| raw consume, do-nothing consumer | {rate(raw)} | |",
        f"| worker -> InfluxDB 1.x + Elasticsearch API | {rate(stores)} | {stores.get('cpu_us_per_record', 0):.1f} |",
        f"| worker -> blackhole stores | {rate(bh)} | {bh.get('cpu_us_per_record', 0):.1f} |",
        "",
        "| latency run | rate | records | p50 | p99 | do-nothing consumer p50 / p99 |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *[
            f"| {name} | {x.get('rate', 0):,}/s | {x.get('records', 0):,.0f} | {ms(x.get('p50_le_s'))} | {ms(x.get('p99_le_s'))} "
            f"| {x.get('raw_p50_ms')} ms / {x.get('raw_p99_ms')} ms |"
            for name, x in [("real stores", lat_s), ("blackhole stores", lat_b)]
        ],
        "",
        "Target: >= 150,000 records/s on 2 cores through the plugin.",
    ])


def main() -> int:
    section, results, path = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(results) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    if section == "runtime":
        body = runtime_section({d["run"]: d["r"] for d in lines})
    else:
        body = {"registry": registry_section, "pipeline": pipeline_section}[section](lines)
    begin, end = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
    block = f"{begin}\n{body}\n{end}"
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n\nWritten by `make bench`.\n"
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        title = {"runtime": "Plugin runtime", "registry": "Plugin registry", "pipeline": "Pipeline end to end"}.get(section, section)
        text = text.rstrip("\n") + f"\n\n## {title}\n\n{block}\n"
    with open(path, "w") as f:
        f.write(text)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
