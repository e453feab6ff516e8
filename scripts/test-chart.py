#!/usr/bin/env python3
"""Tests of the Helm chart (part of `make test`): lint and render it with every values file in
charts/millrace/ci/ using the Helm SDK, validate every rendered manifest with kubernetes-validate --strict,
check the chart's invariants, check that the worker accepts the configuration the chart renders, and run the
PrometheusRule's alerts through `promtool test rules` (Debian's prometheus package) on synthetic series."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import helm_python as helm
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHART = os.path.join(ROOT, "charts", "millrace")
CI = os.path.join(CHART, "ci")
VENV_BIN = os.path.dirname(sys.executable)
MILLRACE = os.environ.get("MILLRACE_BIN", os.path.join(ROOT, "target", "debug", "millrace"))
CUSTOM_KINDS = {"ScaledObject", "ServiceMonitor", "PodMonitor", "PrometheusRule"}
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print(f"  FAIL {what}", file=sys.stderr)


def render(values, name="rel"):
    return helm.Chart.load(CHART).render(values, name=name, namespace="data", is_install=True)


def docs(manifests):
    out = []
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        for d in yaml.safe_load_all(text):
            if d:
                out.append(d)
    return out


def by_kind(objs, kind):
    return [o for o in objs if o["kind"] == kind]


def validate(objs, label):
    core = [o for o in objs if o["kind"] not in CUSTOM_KINDS]
    with tempfile.TemporaryDirectory() as d:
        files = []
        for i, o in enumerate(core):
            p = os.path.join(d, f"{i}-{o['kind']}.yaml")
            with open(p, "w") as f:
                yaml.safe_dump(o, f)
            files.append(p)
        r = subprocess.run([os.path.join(VENV_BIN, "kubernetes-validate"), "--strict", "--quiet", *files],
                           capture_output=True, text=True)
        check(r.returncode == 0, f"{label}: kubernetes-validate --strict: {r.stdout}{r.stderr}")
    for o in objs:
        if o["kind"] in CUSTOM_KINDS:
            check(o.get("apiVersion") and o.get("metadata", {}).get("name") and o.get("spec"),
                  f"{label}: {o['kind']} is well formed")


def check_invariants(objs, values, label):
    deps = by_kind(objs, "Deployment")
    check(len(deps) == 1, f"{label}: one Deployment")
    if not deps:
        return
    pod = deps[0]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    psc, sc = pod["securityContext"], c["securityContext"]
    check(psc.get("runAsNonRoot") is True, f"{label}: runAsNonRoot")
    check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{label}: seccomp RuntimeDefault")
    check(sc.get("readOnlyRootFilesystem") is True, f"{label}: read-only root filesystem")
    check(sc.get("allowPrivilegeEscalation") is False, f"{label}: no privilege escalation")
    check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{label}: all capabilities dropped")
    check(c["livenessProbe"]["httpGet"]["path"] == "/healthz", f"{label}: liveness on /healthz")
    check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", f"{label}: readiness on /readyz")
    check("limits" in c["resources"] and "requests" in c["resources"], f"{label}: resources set")
    drain = values.get("drainTimeoutSeconds", 30)
    check(pod["terminationGracePeriodSeconds"] > drain, f"{label}: grace period longer than the drain")
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    check(env.get("MILLRACE__PIPELINE__DRAIN_TIMEOUT") == f"{drain}s", f"{label}: drain timeout passed to the worker")
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    check("subPath" not in mounts["bindings"], f"{label}: bindings mounted as a directory (live updates)")
    for v in values.get("extraVolumes", []):
        check(any(x["name"] == v["name"] for x in pod["volumes"]), f"{label}: extra volume {v['name']}")
    for m in values.get("extraVolumeMounts", []):
        check(mounts.get(m["name"], {}).get("mountPath") == m["mountPath"], f"{label}: extra mount {m['name']}")
    check(pod["topologySpreadConstraints"], f"{label}: topology spread")
    check(by_kind(objs, "PodDisruptionBudget"), f"{label}: PodDisruptionBudget")
    check("checksum/config" in deps[0]["spec"]["template"]["metadata"]["annotations"], f"{label}: config checksum")
    cache = next(v for v in pod["volumes"] if v["name"] == "cache")
    persistence = values.get("cache", {}).get("persistence", {}).get("enabled")
    check(("persistentVolumeClaim" in cache) == bool(persistence), f"{label}: cache volume kind")
    check(("emptyDir" in cache) == (not persistence), f"{label}: cache emptyDir by default")
    if persistence:
        check(by_kind(objs, "PersistentVolumeClaim"), f"{label}: PVC rendered")
    scaled = values.get("autoscaling", {})
    check(bool(by_kind(objs, "HorizontalPodAutoscaler")) == bool(scaled.get("hpa", {}).get("enabled")), f"{label}: HPA")
    keda = by_kind(objs, "ScaledObject")
    check(bool(keda) == bool(scaled.get("keda", {}).get("enabled")), f"{label}: KEDA")
    if keda:
        trig = keda[0]["spec"]["triggers"][0]["metadata"]
        check(trig["allowIdleConsumers"] == "false", f"{label}: KEDA never exceeds the partitions by default")
        check("replicas" not in deps[0]["spec"], f"{label}: no fixed replicas under an autoscaler")
    existing = values.get("existingConfigMap")
    cms = {o["metadata"]["name"]: o for o in by_kind(objs, "ConfigMap")}
    if existing:
        check(not any(n.endswith("-config") or n.endswith("-bindings") for n in cms), f"{label}: no ConfigMap rendered")
        vol = next(v for v in pod["volumes"] if v["name"] == "config")
        check(vol["configMap"]["name"] == existing, f"{label}: the existing ConfigMap is used")
    else:
        check_worker_accepts(cms, label)
    if values.get("registryCredentials", {}).get("existingSecret"):
        check(any(v["name"] == "registry-credentials" for v in pod["volumes"]), f"{label}: registry credentials mounted")
    trust = values.get("pluginTrust", {})
    if trust.get("keysSecret"):
        vol = next((v for v in pod["volumes"] if v["name"] == "plugin-trust"), None)
        check(vol and vol["secret"]["secretName"] == trust["keysSecret"], f"{label}: trusted keys mounted")
    if values.get("cache", {}).get("compiledKeySecret"):
        check(any(v["name"] == "cache-key" for v in pod["volumes"]), f"{label}: compiled-cache key mounted")
    config = next((o for o in by_kind(objs, "ConfigMap") if o["metadata"]["name"].endswith("-config")), None)
    if config:
        registry = yaml.safe_load(config["data"]["worker.yaml"])["registry"]
        check(registry["cache_dir"].startswith("/var/cache/millrace/"),
              f"{label}: the cache is a subdirectory of the volume (the worker creates it private)")
        check(len(registry.get("trust", [])) == len(trust.get("rules", [])), f"{label}: one trust rule per rule")


def check_worker_accepts(cms, label):
    """The worker parses the configuration and bindings the chart renders."""
    config = next(v for k, v in cms.items() if k.endswith("-config"))["data"]["worker.yaml"]
    bindings = next(v for k, v in cms.items() if k.endswith("-bindings"))["data"]["bindings.yaml"]
    with tempfile.TemporaryDirectory() as d:
        b = os.path.join(d, "bindings.yaml")
        with open(b, "w") as f:
            f.write(bindings)
        # Files the chart mounts from Secrets: made here, so that the worker can read them.
        trust = os.path.join(d, "trust")
        os.mkdir(trust)
        for key in sorted(set(re.findall(r"/etc/millrace/trust/([^\s\"',\]]+)", config))):
            r = subprocess.run([MILLRACE, "plugin", "keygen", os.path.join(trust, key + ".pair")],
                               capture_output=True, text=True)
            check(r.returncode == 0, f"{label}: keygen: {r.stderr.strip()}")
            os.rename(os.path.join(trust, key + ".pair.pub"), os.path.join(trust, key))
        cache_key = os.path.join(d, "compiled-key")
        with open(cache_key, "w") as f:
            f.write("a key of at least sixteen bytes\n")
        w = os.path.join(d, "worker.yaml")
        with open(w, "w") as f:
            f.write(config.replace("/etc/millrace/bindings/bindings.yaml", b)
                    .replace("/etc/millrace/trust/", trust + "/")
                    .replace("/etc/millrace/cache-key/compiled-key", cache_key))
        r = subprocess.run([MILLRACE, "config", "check", w], capture_output=True, text=True)
        check(r.returncode == 0, f"{label}: the worker accepts the rendered configuration: {r.stderr.strip()}")


def check_alerts():
    """The PrometheusRule's alerts fire when they should, and not otherwise (promtool's rule unit tests)."""
    promtool = shutil.which("promtool")
    check(promtool is not None, "promtool (Debian package prometheus) is installed")
    if not promtool:
        return
    rule = by_kind(docs(render({"metrics": {"prometheusRule": {"enabled": True}}})), "PrometheusRule")[0]
    rules = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    job = re.search(r'job="([^"]+)"', rules["MillraceRolloutRefused"]["expr"]).group(1)

    def expect(alert, **labels):
        r = rules[alert]
        labels = {**labels, **r.get("labels", {})}
        ann = {k: re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), v)
               for k, v in r.get("annotations", {}).items()}
        return {"exp_labels": labels, "exp_annotations": ann}

    sel = f'job="{job}",instance="w1"'
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {   # a refusal fires at once; the counter starts at zero (the worker creates every reason at zero)
                "interval": "1m",
                "input_series": [
                    {"series": f'millrace_reloads_total{{{sel},result="refused",reason="plugin"}}', "values": "0x5 1x30"},
                    {"series": f'millrace_reloads_total{{{sel},result="applied",reason="changed"}}', "values": "0x5 1x30"},
                ],
                "alert_rule_test": [
                    {"eval_time": "4m", "alertname": "MillraceRolloutRefused", "exp_alerts": []},
                    {"eval_time": "8m", "alertname": "MillraceRolloutRefused",
                     "exp_alerts": [expect("MillraceRolloutRefused", job=job, instance="w1", result="refused",
                                           reason="plugin")]},
                    {"eval_time": "30m", "alertname": "MillraceRolloutRefused", "exp_alerts": []},
                ],
            },
            {   # a store down for good fires after 5 minutes; a blip does not
                "interval": "1m",
                "input_series": [
                    {"series": f'millrace_sink_up{{{sel},sink="elasticsearch"}}', "values": "1 1 0x20"},
                    {"series": f'millrace_sink_up{{{sel},sink="influxdb"}}', "values": "1 0 0 1x20"},
                ],
                "alert_rule_test": [
                    {"eval_time": "4m", "alertname": "MillraceStoreFailing", "exp_alerts": []},
                    {"eval_time": "10m", "alertname": "MillraceStoreFailing",
                     "exp_alerts": [expect("MillraceStoreFailing", sink="elasticsearch")]},
                ],
            },
            {   # 2 dead letters/s for 10 minutes fires; 0.5/s does not (threshold 1/s)
                "interval": "1m",
                "input_series": [
                    {"series": f'millrace_dead_letters_total{{{sel},kind="invalid_input"}}', "values": "0+120x30"},
                    {"series": f'millrace_dead_letters_total{{{sel},kind="trap"}}', "values": "0+30x30"},
                ],
                "alert_rule_test": [
                    {"eval_time": "8m", "alertname": "MillraceDeadLetterRateHigh", "exp_alerts": []},
                    {"eval_time": "20m", "alertname": "MillraceDeadLetterRateHigh",
                     "exp_alerts": [expect("MillraceDeadLetterRateHigh", kind="invalid_input")]},
                ],
            },
            {   # lag above the threshold and growing for 15 minutes fires; high but shrinking does not
                "interval": "1m",
                "input_series": [
                    {"series": f'millrace_consumer_lag{{{sel},topic="acme",partition="0"}}', "values": "150000+2000x40"},
                    {"series": f'millrace_consumer_lag{{{sel},topic="globex",partition="0"}}', "values": "250000-1000x40"},
                ],
                "alert_rule_test": [
                    {"eval_time": "10m", "alertname": "MillraceConsumerLagGrowing", "exp_alerts": []},
                    {"eval_time": "35m", "alertname": "MillraceConsumerLagGrowing",
                     "exp_alerts": [expect("MillraceConsumerLagGrowing", topic="acme")]},
                ],
            },
        ],
    }
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "rules.yaml"), "w") as f:
            yaml.safe_dump({"groups": rule["spec"]["groups"]}, f)
        with open(os.path.join(d, "tests.yaml"), "w") as f:
            yaml.safe_dump(tests, f, sort_keys=False)
        r = subprocess.run([promtool, "check", "rules", "rules.yaml"], cwd=d, capture_output=True, text=True)
        check(r.returncode == 0, f"promtool check rules: {r.stdout}{r.stderr}")
        r = subprocess.run([promtool, "test", "rules", "tests.yaml"], cwd=d, capture_output=True, text=True)
        check(r.returncode == 0, f"promtool test rules: {r.stdout}{r.stderr}")


def main():
    for name in sorted(os.listdir(CI)):
        path = os.path.join(CI, name)
        values = yaml.safe_load(open(path)) or {}
        label = name
        print(f"chart: {label}", file=sys.stderr)
        report = helm.lint(CHART, values, strict=True)
        errors = [m for m in report["messages"] if m["severity"] >= 2] + report.get("errors", [])
        check(not errors, f"{label}: helm lint --strict: {errors}")
        objs = docs(render(values))
        validate(objs, label)
        check_invariants(objs, values, label)

    print("chart: refusals and checksums", file=sys.stderr)
    try:
        render({"autoscaling": {"hpa": {"enabled": True}, "keda": {"enabled": True}}})
        check(False, "HPA and KEDA together must not render")
    except helm.HelmError as e:
        check("cannot both be true" in str(e), f"HPA+KEDA refusal names the problem: {e}")
    try:
        render({"pluginTrust": {"rules": [{"prefix": "r.example/clients", "keys": ["k.pub"]}]}})
        check(False, "a trust rule without keysSecret must not render")
    except helm.HelmError as e:
        check("pluginTrust.keysSecret" in str(e), f"the refusal names pluginTrust.keysSecret: {e}")
    try:
        render({"replicaCount": "two"})
        check(False, "values.schema.json refuses a string replicaCount")
    except helm.HelmError:
        pass

    def checksum(values):
        d = by_kind(docs(render(values)), "Deployment")[0]
        return d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    base = checksum({})
    check(checksum({"config": {"kafka": {"brokers": "other:9092"}}}) != base, "a config change changes the checksum")
    check(checksum({"bindings": [{"name": "x", "topic": "t", "plugin": "r.example/p:v1"}]}) == base,
          "a bindings change does not roll the pods")
    print("chart: alerts (promtool test rules)", file=sys.stderr)
    check_alerts()
    notes = render({})["millrace/templates/NOTES.txt"]
    check("oras push" in notes and "bindings" in notes, "NOTES.txt says how to push and bind a plugin")
    dash = json.load(open(os.path.join(CHART, "dashboards", "millrace.json")))
    check(len(dash["panels"]) >= 10, "dashboard has its panels")

    if failures:
        print(f"chart: {len(failures)} failure(s)", file=sys.stderr)
        return 1
    print("chart: all checks passed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
