"""The deployment files wire the security flags to what they mount (issue 10): the Kubernetes
servers mount the TLS Secret and the tokens Secret read-only, as whole directories (so Secret
updates reach the running pod), pass flags naming files inside those mounts, and point every
probe at the plaintext --health_port; the router gets its own certificate and only the pods'
CA; the compose stack mounts its certificates and tokens and keeps metrics plaintext. Every
flag used must be one the server defines (server/main.cc, or the issue's contract while that
lands), so a typo cannot slip through.

The objects are the kustomization rendered by `kubectl kustomize` when kubectl is installed,
otherwise by render_kustomization() below (resources, namespace, generators: all this
kustomization uses).

    (cd tests/deploy && /usr/bin/python3 ../pykit/run_tests.py test_security_manifests)
"""

import os
import re
import shutil
import subprocess
import unittest

import yaml

import deploy_harness as harness

K8S = os.path.join(harness.ROOT, "deploy", "kubernetes")
COMPOSE = os.path.join(harness.ROOT, "deploy", "compose")
# Flags of issue 10 (docs/security.md), accepted here before the server's side is merged.
CONTRACT_FLAGS = {
    "tls_cert_file", "tls_key_file", "tls_client_ca_file", "tls_refresh_interval",
    "auth_tokens_file", "auth_reload_interval", "health_port", "metrics_host", "log_level",
    "max_sessions_per_principal", "max_state_bytes_per_principal",
}


def server_flags():
    with open(os.path.join(harness.ROOT, "server", "main.cc")) as f:
        defined = set(re.findall(r"ABSL_FLAG\(\s*[\w:<>]+\s*,\s*(\w+)\s*,", f.read()))
    assert "port" in defined, "no ABSL_FLAG found in server/main.cc"
    return defined | CONTRACT_FLAGS


def render_kustomization(folder):
    with open(os.path.join(folder, "kustomization.yaml")) as f:
        kust = yaml.safe_load(f)
    objects = []
    for res in kust.get("resources", []):
        with open(os.path.join(folder, res)) as f:
            objects += [d for d in yaml.safe_load_all(f) if d]
    for gen in kust.get("secretGenerator", []):
        data = {}
        for entry in gen.get("files", []):
            key, _, path = entry.partition("=") if "=" in entry else (entry, "", entry)
            with open(os.path.join(folder, path or key)) as f:
                data[key] = f.read()
        objects.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": gen["name"]},
                        "type": gen.get("type", "Opaque"), "stringData": data})
    for obj in objects:
        if kust.get("namespace") and obj["kind"] != "Namespace":
            obj["metadata"]["namespace"] = kust["namespace"]
    return objects


def kustomize(folder):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return render_kustomization(folder)
    out = subprocess.run([kubectl, "kustomize", folder], check=True, capture_output=True,
                         text=True, timeout=60).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def flag_values(args):
    """{flag: value} from ["--name=value", ...]; AssertionError on any other shape."""
    values = {}
    for a in args:
        m = re.fullmatch(r"--(\w+)=(.*)", a)
        assert m, f"argument {a!r} is not --flag=value"
        values[m.group(1)] = m.group(2)
    return values


def mount_for(container, pod, path):
    """(volumeMount, volume) whose mountPath holds `path` (a file directly inside it)."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for m in container.get("volumeMounts", []):
        if os.path.dirname(path) == m["mountPath"].rstrip("/"):
            return m, volumes[m["name"]]
    raise AssertionError(f"{path} is not inside any volumeMount of {container['name']}")


class KubernetesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.objects = kustomize(K8S)

    def find(self, kind, name):
        for obj in self.objects:
            if obj["kind"] == kind and obj["metadata"]["name"] == name:
                return obj
        self.fail(f"no {kind}/{name} in the kustomization")

    def container(self, deployment, name):
        pod = self.find("Deployment", deployment)["spec"]["template"]["spec"]
        return next(c for c in pod["containers"] if c["name"] == name), pod

    def assert_secret_mount(self, mount, volume, secret):
        self.assertIs(mount.get("readOnly"), True, f"{mount['name']} is not mounted read-only")
        # A subPath mount never sees the Secret's updates: rotation would need a restart.
        self.assertNotIn("subPath", mount, f"{mount['name']}: subPath hides Secret updates")
        self.assertIn("secret", volume, f"volume {volume['name']} is not a Secret")
        self.assertEqual(volume["secret"]["secretName"], secret)

    def test_server_mounts_both_secrets_and_flags_name_their_files(self):
        c, pod = self.container("rnnserve", "rnnserve")
        flags = flag_values(c["args"])
        for flag, key in (("tls_cert_file", "tls.crt"), ("tls_key_file", "tls.key")):
            with self.subTest(flag=flag):
                mount, volume = mount_for(c, pod, flags[flag])
                self.assert_secret_mount(mount, volume, "rnnserve-tls")
                self.assertEqual(os.path.basename(flags[flag]), key)
        mount, volume = mount_for(c, pod, flags["auth_tokens_file"])
        self.assert_secret_mount(mount, volume, "rnnserve-tokens")
        # The generated Secret has exactly the key the flag reads, and its lines (if any) are
        # `PRINCIPAL SHA256HEX`: hashes, never tokens.
        tokens = self.find("Secret", "rnnserve-tokens")
        data = tokens.get("stringData") or tokens.get("data")
        self.assertIn(os.path.basename(flags["auth_tokens_file"]), data)
        if "stringData" in tokens:
            for line in tokens["stringData"]["tokens"].splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    self.assertRegex(line, r"^[A-Za-z0-9._:@-]{1,128} [0-9a-f]{64}$")
        self.assertIs(c["securityContext"]["readOnlyRootFilesystem"], True)
        self.assertLessEqual(set(flags), server_flags(), "flags the server does not define")

    def test_probes_use_the_plaintext_health_port(self):
        c, _ = self.container("rnnserve", "rnnserve")
        flags = flag_values(c["args"])
        health = int(flags["health_port"])
        self.assertNotEqual(health, int(flags["port"]), "the health port must not be the TLS port")
        self.assertIn(health, [p["containerPort"] for p in c["ports"]])
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            with self.subTest(probe=kind):
                self.assertEqual(c[kind]["grpc"]["port"], health, f"{kind} is not on --health_port")

    def test_router_terminates_and_reencrypts_tls(self):
        c, pod = self.container("rnnserve-router", "nginx")
        with open(os.path.join(K8S, "nginx.conf")) as f:
            conf = f.read()
        directive = lambda name: re.search(rf"^\s*{name} (\S+);$", conf, re.M).group(1)  # noqa: E731
        mount, volume = mount_for(c, pod, directive("ssl_certificate"))
        self.assert_secret_mount(mount, volume, "rnnserve-router-tls")
        self.assertEqual(mount_for(c, pod, directive("ssl_certificate_key"))[0], mount)
        # The pods' CA only: the router must not receive the pods' private key.
        mount, volume = mount_for(c, pod, directive("grpc_ssl_trusted_certificate"))
        self.assert_secret_mount(mount, volume, "rnnserve-tls")
        self.assertEqual([i["key"] for i in volume["secret"]["items"]], ["ca.crt"])
        self.assertEqual(directive("grpc_ssl_verify"), "on")
        self.assertRegex(conf, r"grpc_pass grpcs://")
        listen = int(re.search(r"^\s*listen (\d+) ssl;$", conf, re.M).group(1))
        grpc_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
        self.assertEqual(listen, grpc_port)
        # The pods' certificate must name what the router checks (cert-manager.yaml).
        with open(os.path.join(K8S, "cert-manager.yaml")) as f:
            certs = {d["metadata"]["name"]: d for d in yaml.safe_load_all(f) if d["kind"] == "Certificate"}
        self.assertIn(directive("grpc_ssl_name"), certs["rnnserve-tls"]["spec"]["dnsNames"])
        self.assertEqual(certs["rnnserve-tls"]["spec"]["secretName"], "rnnserve-tls")
        self.assertEqual(certs["rnnserve-router-tls"]["spec"]["secretName"], "rnnserve-router-tls")


class ComposeTest(unittest.TestCase):
    def test_compose_mounts_certificates_and_keeps_metrics_plaintext(self):
        with open(os.path.join(COMPOSE, "docker-compose.yaml")) as f:
            service = yaml.safe_load(f)["services"]["rnnserve"]
        flags = flag_values(service["command"])
        self.assertLessEqual(set(flags), server_flags(), "flags the server does not define")
        mounts = {}
        for v in service["volumes"]:
            source, target, mode = v.split(":")
            mounts[target] = (source, mode)
        for flag in ("tls_cert_file", "tls_key_file", "auth_tokens_file"):
            with self.subTest(flag=flag):
                folder = os.path.dirname(flags[flag])
                self.assertIn(folder, mounts, f"--{flag}={flags[flag]} is not in a mounted folder")
                self.assertEqual(mounts[folder][1], "ro")
        self.assertIs(service["read_only"], True)
        with open(os.path.join(COMPOSE, "prometheus.yml")) as f:
            job = yaml.safe_load(f)["scrape_configs"][0]
        self.assertEqual(job["static_configs"][0]["targets"], ["rnnserve:9090"])
        self.assertNotEqual(job.get("scheme", "http"), "https")


if __name__ == "__main__":
    unittest.main()
