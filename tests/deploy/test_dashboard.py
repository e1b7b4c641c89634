"""The compose stack's monitoring config against a real server: every metric the Grafana
dashboard, prometheus.yml and the alert rules use must really be exported by rnnserve (name,
labels, counter-or-gauge use), and every JSON/YAML file under deploy/ must parse.

Compose itself cannot run on the CI machines, so this is what keeps deploy/compose honest.
    (cd tests/deploy && /usr/bin/python3 ../pykit/run_tests.py test_dashboard)
"""

import glob
import json
import os
import re
import shutil
import tempfile
import unittest

import grpc
import numpy as np
import yaml

import deploy_harness as harness
from deploy_harness import kit

COMPOSE = os.path.join(harness.ROOT, "deploy", "compose")
DASHBOARD = os.path.join(COMPOSE, "grafana", "dashboards", "rnnserve.json")
# A metric name; not one followed by a regex (`rnnserve_.*` in a relabel rule).
METRIC = re.compile(r"\b(rnnserve_[a-z0-9_]*[a-z0-9])\b(?![.*(])")
BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
SESSION_END_REASONS = {"closed", "idle_timeout", "evicted", "shutdown"}
# Labels Prometheus adds itself at scrape time, or Grafana's.
TARGET_LABELS = {"instance", "job", "le"}


def dashboard_exprs():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
              for v in dash.get("templating", {}).get("list", []) if v.get("type") == "query"]
    return exprs


def rule_exprs():
    with open(os.path.join(COMPOSE, "rules.yml")) as f:
        rules = yaml.safe_load(f)
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def prometheus_patterns():
    """The metric-name regexes of prometheus.yml's relabel rules on __name__."""
    with open(os.path.join(COMPOSE, "prometheus.yml")) as f:
        prom = yaml.safe_load(f)
    return [r["regex"] for job in prom["scrape_configs"]
            for r in job.get("metric_relabel_configs", []) if "__name__" in r.get("source_labels", [])]


def family(name, types):
    """The metric family of a sample name (histogram samples end in _bucket, _sum, _count)."""
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and types.get(name[: -len(suffix)]) in ("histogram", "summary"):
            return name[: -len(suffix)]
    return name


class DashboardMetricsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="rnnserve-dashboard-")
        cls.server = kit.ServerProcess(flags=["--threads=1"], drain_timeout=None,
                                       log_path=os.path.join(cls.tmp, "rnnserve.log"))
        cls.server.start().wait_serving()
        try:
            cls.run_workload()
            cls.samples, cls.types = kit.parse_samples(kit.scrape(cls.server.metrics_url))
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        rc = cls.server.stop()
        if rc != 0:
            print(cls.server.stderr_text())
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def run_workload(cls):
        """With the Python client: streamed sessions (ended, closed, left open), a Forward, a
        failing start and a failing GetModel."""
        rc = kit.client_module()
        rng = np.random.default_rng(0)
        with rc.RnnServeClient(cls.server.target) as client:
            model = client.list_models()[0]
            c = model.config.input_size
            with client.open_stream() as stream:
                sessions = [stream.start(model.name, chunk=rng.standard_normal((4, 2, c), dtype=np.float32)).session_id
                            for _ in range(3)]
                for sid in sessions:
                    stream.send(rng.standard_normal((3, 2, c), dtype=np.float32), session_id=sid)
                stream.end(sessions[0])
                client.close_session(sessions[1])
                try:
                    stream.start("no-such-model")
                    raise AssertionError("a start with an unknown model should fail")
                except rc.RnnServeError as e:
                    assert e.code == grpc.StatusCode.NOT_FOUND, e
            client.forward(model.name, rng.standard_normal((5, 1, c), dtype=np.float32))
            try:
                client.get_model("no-such-model")
                raise AssertionError("GetModel of an unknown model should fail")
            except rc.RnnServeError as e:
                assert e.code == grpc.StatusCode.NOT_FOUND, e

    def exported(self):
        return {n for n, _, _ in self.samples}

    def labels_of(self, fam):
        return {k for n, labels, _ in self.samples if family(n, self.types) == fam for k in labels}

    def check_expr(self, expr, where):
        names = METRIC.findall(expr)
        self.assertTrue(names, f"{where}: no rnnserve metric in {expr!r}")
        families = set()
        for name in names:
            self.assertIn(name, self.exported(), f"{where}: {name} is not exported by rnnserve ({expr!r})")
            families.add(family(name, self.types))
        labels = set().union(*(self.labels_of(f) for f in families))
        for group in BY.findall(expr):
            for label in filter(None, (x.strip() for x in group.split(","))):
                if label not in TARGET_LABELS:
                    self.assertIn(label, labels, f"{where}: label {label} not on {sorted(families)}")
        for label, op, value in MATCHER.findall(expr):
            if label in TARGET_LABELS or label == "__name__" or "$" in value:
                continue
            self.assertIn(label, labels, f"{where}: label {label} not on {sorted(families)}")
            if label == "reason" and op in ("=", "!="):
                self.assertIn(value, SESSION_END_REASONS, where)
            if label == "code" and op in ("=", "!="):
                codes = {l[label] for n, l, _ in self.samples if label in l}
                self.assertIn(value, codes, f"{where}: no request has code {value!r} (codes: {codes})")
        # rate() and friends only on counters and histogram series; histogram_quantile on buckets.
        for fn, name in re.findall(r"\b(rate|irate|increase)\(\s*(rnnserve_[a-z0-9_]+)", expr):
            fam = family(name, self.types)
            kind = self.types.get(fam)
            self.assertTrue(kind == "counter" or (kind == "histogram" and name != fam),
                            f"{where}: {fn}() of {name}, a {kind}")
        if "histogram_quantile" in expr:
            self.assertRegex(expr, r"_bucket\b", where)
            self.assertRegex(expr, r"by \([^)]*\ble\b", f"{where}: histogram_quantile needs `by (le)`")

    def test_dashboard_metrics_are_exported(self):
        exprs = dashboard_exprs()
        self.assertGreaterEqual(len(exprs), 8)
        for expr in exprs:
            with self.subTest(expr=expr):
                self.check_expr(expr, "dashboard")

    def test_dashboard_covers_the_brief(self):
        text = " ".join(dashboard_exprs())
        for needle in ("rnnserve_sessions_active", "histogram_quantile(0.5, sum by (le) (rate(rnnserve_chunk_duration",
                       "histogram_quantile(0.99, sum by (le) (rate(rnnserve_chunk_duration",
                       "rate(rnnserve_timesteps_total", "rnnserve_batch_size", "rnnserve_requests_total",
                       "rnnserve_session_state_bytes"):
            self.assertIn(needle, text)

    def test_rules_use_exported_metrics(self):
        for expr in rule_exprs():
            if METRIC.search(expr):
                with self.subTest(expr=expr):
                    self.check_expr(expr, "rules.yml")

    def test_prometheus_keeps_every_exported_metric(self):
        patterns = prometheus_patterns()
        self.assertTrue(patterns)
        for name in self.exported():
            if name.startswith("rnnserve_"):
                self.assertTrue(any(re.fullmatch(p, name) for p in patterns),
                                f"prometheus.yml's relabel rules drop {name}")

    def test_metrics_follow_conventions(self):
        for fam, kind in self.types.items():
            if not fam.startswith("rnnserve_"):
                continue
            if kind == "counter":
                self.assertTrue(fam.endswith("_total"), fam)
            self.assertNotIn("session_id", self.labels_of(fam), f"{fam} has a session id label")
        buckets = [float(l["le"]) for n, l, _ in self.samples
                   if n == "rnnserve_chunk_duration_seconds_bucket" and l.get("le") not in (None, "+Inf")]
        self.assertTrue(buckets and min(buckets) < 0.001, "chunk latency needs sub-millisecond buckets")
        self.assertGreater(kit.metric_sum(self.samples, "rnnserve_timesteps_total"), 0)
        self.assertGreater(kit.metric_sum(self.samples, "rnnserve_chunk_duration_seconds_count"), 0)
        self.assertEqual(kit.metric_sum(self.samples, "rnnserve_sessions_started_total"), 3)


class DeployFilesTest(unittest.TestCase):
    def test_json_and_yaml_parse(self):
        files = glob.glob(os.path.join(harness.ROOT, "deploy", "**", "*.*"), recursive=True)
        files += [os.path.join(harness.ROOT, "deploy", ".yamllint")]
        parsed = 0
        for path in files:
            with self.subTest(path=os.path.relpath(path, harness.ROOT)), open(path) as f:
                if path.endswith(".json"):
                    json.load(f)
                    parsed += 1
                elif path.endswith((".yaml", ".yml", ".yamllint")):
                    self.assertTrue(list(yaml.safe_load_all(f)))
                    parsed += 1
        self.assertGreaterEqual(parsed, 12)

    def test_grafana_provisioning_is_consistent(self):
        with open(os.path.join(COMPOSE, "docker-compose.yaml")) as f:
            compose = yaml.safe_load(f)
        with open(os.path.join(COMPOSE, "grafana", "provisioning", "datasources", "prometheus.yaml")) as f:
            datasource = yaml.safe_load(f)["datasources"][0]
        with open(os.path.join(COMPOSE, "grafana", "provisioning", "dashboards", "rnnserve.yaml")) as f:
            provider = yaml.safe_load(f)["providers"][0]
        with open(DASHBOARD) as f:
            dash = json.load(f)
        # Every panel queries the provisioned datasource, and ids are unique.
        ids = [p["id"] for p in dash["panels"]]
        self.assertEqual(len(ids), len(set(ids)))
        for panel in dash["panels"]:
            for ds in [panel["datasource"]] + [t["datasource"] for t in panel["targets"]]:
                self.assertEqual(ds["uid"], datasource["uid"], panel["title"])
        # The dashboards folder is mounted where the provider reads it; Prometheus is reachable.
        mounts = {v.split(":")[1]: v.split(":")[0] for v in compose["services"]["grafana"]["volumes"]}
        self.assertIn(provider["options"]["path"], mounts)
        self.assertEqual(os.path.normpath(os.path.join(COMPOSE, mounts[provider["options"]["path"]])),
                         os.path.dirname(DASHBOARD))
        self.assertIn("prometheus", compose["services"])
        self.assertTrue(datasource["url"].startswith("http://prometheus:"))
        prom_mounts = [v.split(":")[0] for v in compose["services"]["prometheus"]["volumes"]]
        for f in ("./prometheus.yml", "./rules.yml"):
            self.assertIn(f, prom_mounts)
        with open(os.path.join(COMPOSE, "prometheus.yml")) as f:
            prom = yaml.safe_load(f)
        target = prom["scrape_configs"][0]["static_configs"][0]["targets"][0]
        self.assertEqual(target.split(":")[0], "rnnserve")
        self.assertIn(f"{target.split(':')[1]}:{target.split(':')[1]}", compose["services"]["rnnserve"]["ports"])


if __name__ == "__main__":
    unittest.main()
