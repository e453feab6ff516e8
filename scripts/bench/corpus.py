#!/usr/bin/env python3
"""Deterministic benchmark corpus: client records of about 300 bytes, as NDJSON on stdout.

    corpus.py KIND N     KIND: seed (metrics, logs, a few unknown types) or iot (acme-iot device messages)

The same seed always yields the same bytes, so runs are comparable across machines and commits.
"""
import json
import random
import sys


def seed_record(rng: random.Random, i: int) -> dict:
    r = rng.random()
    if r < 0.6:
        return {
            "type": "metric",
            "source": f"sensor-{rng.randrange(500):03d}.building-{rng.randrange(20)}",
            "unit": rng.choice(["C", "F", "pct", "hPa", "lux"]),
            "value": round(rng.uniform(-40, 120), 3),
            "timestamp": 1_795_341_600_000 + i * 37,
            "labels": {"region": rng.choice(["eu-central", "eu-west", "us-east"]), "rack": f"r{rng.randrange(64)}"},
            "firmware": f"{rng.randrange(1, 5)}.{rng.randrange(10)}.{rng.randrange(20)}",
            "seq": i,
            "note": "x" * rng.randrange(90, 150),
        }
    if r < 0.95:
        return {
            "type": "log",
            "service": rng.choice(["checkout", "billing", "search", "auth", "inventory"]),
            "level": rng.choice(["debug", "info", "info", "warn", "error"]),
            "message": "request handled " + "y" * rng.randrange(100, 180),
            "trace_id": f"{rng.getrandbits(64):016x}",
            "duration_ms": rng.randrange(1, 900),
            "ts": 1_795_341_600_000 + i * 37,
        }
    return {"type": rng.choice(["trace", "span", "event"]), "payload": "z" * rng.randrange(150, 250), "seq": i}


def iot_record(rng: random.Random, i: int) -> dict:
    return {
        "device": {"id": f"d-{rng.randrange(10000):05d}", "site": rng.choice(["Berlin", "Lyon", "Austin"]),
                   "fw": f"1.{rng.randrange(10)}.{rng.randrange(10)}", "owner": "ops@acme.example"},
        "ts": f"2026-11-22T10:{(i // 60) % 60:02d}:{i % 60:02d}.{rng.randrange(1000):03d}Z",
        "readings": {"temp_f": round(rng.uniform(-10, 110), 2), "humidity_pct": rng.randrange(100),
                     "battery": {"mv": rng.randrange(2800, 3300)}, "door_open": rng.random() < 0.1,
                     "rssi_dbm": -rng.randrange(30, 110)},
        "location": {"lat": round(rng.uniform(-90, 90), 5), "lon": round(rng.uniform(-180, 180), 5)},
        "tags": ["fleet-a", rng.choice(["indoor", "outdoor"]), f"batch-{rng.randrange(100)}"],
        "status": "ok" if rng.random() < 0.97 else "overheat",
    }


def main() -> int:
    kind, n = sys.argv[1], int(sys.argv[2])
    rng = random.Random(20261122)
    make = {"seed": seed_record, "iot": iot_record}[kind]
    out = sys.stdout
    for i in range(n):
        out.write(json.dumps(make(rng, i), separators=(",", ":")) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
