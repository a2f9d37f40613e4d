"""The deploy templates (deploy/) keep their security properties: verified TLS to
PostgreSQL and Temporal wherever the traffic crosses a network, secrets as files the
service alone reads (systemd credentials, a Kubernetes secret volume), and a NetworkPolicy
that lets the pod reach PostgreSQL, Temporal and DNS only and Prometheus alone scrape the
relay. No Docker engine, Kubernetes cluster or systemd manager runs here, so these read the
files; ``systemd-analyze`` (offline) checks the unit where it is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "trigger-relay.service"
ENV_EXAMPLE = DEPLOY / "systemd" / "env.example"
KUBERNETES = DEPLOY / "kubernetes" / "django-with-trigger-relay.yaml"
COMPOSE = DEPLOY / "compose.yaml"
TEMPLATES = [UNIT, ENV_EXAMPLE, KUBERNETES, COMPOSE, DEPLOY / "README.md"]

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
POSTGRES_URL = re.compile(r"postgres(?:ql)?://[^\s\"'`<>)]+")


def compose_services() -> set[str]:
    return set(yaml.safe_load(COMPOSE.read_text())["services"])


def local(host: str | None, path: Path) -> bool:
    """Loopback, or a service of the compose stack (its own network, one machine)."""
    return host in LOOPBACK or (path == COMPOSE and host in compose_services())


def test_every_postgres_url_verifies_the_server_unless_local() -> None:
    found = []
    for path in TEMPLATES:
        for url in POSTGRES_URL.findall(path.read_text()):
            found.append(url)
            parts = urlsplit(url)
            if local(parts.hostname, path):
                continue
            assert parse_qs(parts.query).get("sslmode") == ["verify-full"], (
                f"{path.relative_to(ROOT)}: {url} crosses a network without sslmode=verify-full"
            )
    assert len(found) >= 5, found  # the templates still show their URLs


def temporal_addresses() -> list[tuple[Path, str]]:
    """Every value given to TRIGGER_RELAY_TEMPORAL_ADDRESS, commented-out defaults included."""
    pattern = re.compile(r"TRIGGER_RELAY_TEMPORAL_ADDRESS[=:]\s*\"?([^\s\"]+)")
    return [
        (path, address)
        for path in (ENV_EXAMPLE, KUBERNETES, COMPOSE)
        for address in pattern.findall(path.read_text())
    ]


def test_every_temporal_address_is_tls_unless_local() -> None:
    addresses = temporal_addresses()
    assert {path for path, _ in addresses} == {ENV_EXAMPLE, KUBERNETES, COMPOSE}
    for path, address in addresses:
        parts = urlsplit(address)
        if local(parts.hostname, path):
            continue
        assert parts.scheme == "https", f"{path.relative_to(ROOT)}: {address} is not TLS"


def test_plain_compose_connections_say_it_is_a_local_stack() -> None:
    text = COMPOSE.read_text()
    assert "Not for production" in text
    assert "plain connections" in text
    assert "sslmode=verify-full" in text  # and what to use elsewhere


# -- systemd ----------------------------------------------------------------------------------


def unit_settings(commented: bool) -> list[tuple[str, str]]:
    """(key, value) of the unit's settings; with ``commented``, of its ``#Key=value`` lines
    (the alternatives the unit offers) instead."""
    settings = []
    for line in UNIT.read_text().splitlines():
        if commented != line.startswith("#"):
            continue
        match = re.fullmatch(r"#?([A-Z][A-Za-z]+)=(.*)", line.strip())
        if match:
            settings.append((match.group(1), match.group(2)))
    return settings


@pytest.mark.parametrize("commented", [False, True], ids=["active", "offered"])
def test_unit_loads_each_file_it_points_at_as_a_credential(commented: bool) -> None:
    """Every variable that names a file names the service's copy (``%d/ID``) of a
    ``LoadCredential=ID:...`` of the same kind (active, or offered commented out), and
    every credential is used: the dynamic user reads no file of /etc/trigger-relay."""
    settings = unit_settings(commented)
    credentials = {
        value.split(":", 1)[0]: value.split(":", 1)[1]
        for key, value in settings
        if key == "LoadCredential"
    }
    pointed: dict[str, str] = {}
    for key, value in settings:
        if key != "Environment":
            continue
        variable, _, target = value.partition("=")
        assert not target.startswith("/etc/"), f"{variable} reads {target} as the dynamic user"
        if target.startswith("%d/"):
            pointed[variable] = target.removeprefix("%d/")
    assert pointed, "no variable points at a credential"
    assert sorted(pointed.values()) == sorted(credentials), (pointed, credentials)
    for source in credentials.values():
        assert source.startswith("/etc/trigger-relay/"), source
    expected = (
        {"TRIGGER_RELAY_DATABASE_URL_FILE", "PGSSLROOTCERT", "TRIGGER_RELAY_TEMPORAL_TLS_CA"}
        if not commented
        else {
            "TRIGGER_RELAY_TEMPORAL_TLS_CERT",
            "TRIGGER_RELAY_TEMPORAL_TLS_KEY",
            "TRIGGER_RELAY_TEMPORAL_API_KEY_FILE",
        }
    )
    assert set(pointed) == expected


def test_unit_runs_as_a_dynamic_user_and_keeps_secrets_out_of_its_environment() -> None:
    settings = dict(unit_settings(commented=False))
    assert settings["DynamicUser"] == "yes"
    assert settings["EnvironmentFile"] == "/etc/trigger-relay/env"
    active = [line for line in ENV_EXAMPLE.read_text().splitlines() if re.match(r"[A-Z]", line)]
    for line in active:
        variable, _, value = line.partition("=")
        assert variable not in {"TRIGGER_RELAY_DATABASE_URL", "TRIGGER_RELAY_TEMPORAL_API_KEY"}, (
            f"{line}: a secret in the environment; the unit loads it as a credential"
        )
        assert "/etc/trigger-relay" not in value, f"{line}: unreadable by the dynamic user"


def test_the_file_variables_are_the_daemons() -> None:
    """The unit's and the manifest's ``*_FILE`` variables are documented settings."""
    contract = (ROOT / "docs" / "contract.md").read_text()
    used = set(re.findall(r"TRIGGER_RELAY_[A-Z_]+_FILE", UNIT.read_text() + KUBERNETES.read_text()))
    assert used == {"TRIGGER_RELAY_DATABASE_URL_FILE", "TRIGGER_RELAY_TEMPORAL_API_KEY_FILE"}
    for variable in used:
        assert f"| {variable} |" in contract, variable


def unit_for_systemd_analyze(tmp_path: Path) -> Path:
    """The unit with ExecStart at a binary that exists here: systemd-analyze verify checks
    that it is executable, and the daemon is not installed in /usr/local/bin."""
    binary = ROOT / "target" / "debug" / "trigger-relay"
    executable = str(binary) if binary.exists() else "/bin/true"
    unit = tmp_path / "trigger-relay.service"
    installed = "ExecStart=/usr/local/bin/trigger-relay"
    unit.write_text(UNIT.read_text().replace(installed, f"ExecStart={executable}"))
    return unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    unit = unit_for_systemd_analyze(tmp_path)
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert verify.returncode == 0, verify.stderr
    assert not verify.stderr.strip(), verify.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    level = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", security.stdout)
    assert level, security.stdout + security.stderr
    assert float(level.group(1)) <= 2.0, level.group(0)


# -- Kubernetes -------------------------------------------------------------------------------


def manifest() -> dict[str, list[dict[str, Any]]]:
    documents: dict[str, list[dict[str, Any]]] = {}
    for document in yaml.safe_load_all(KUBERNETES.read_text()):
        documents.setdefault(document["kind"], []).append(document)
    return documents


def relay_container(documents: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    (deployment,) = documents["Deployment"]
    containers = deployment["spec"]["template"]["spec"]["containers"]
    (relay,) = [c for c in containers if c["name"] == "trigger-relay"]
    return relay


def test_kubernetes_relay_reads_its_secrets_from_a_volume() -> None:
    documents = manifest()
    (deployment,) = documents["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    relay = relay_container(documents)
    # No secret as environment variables (visible to `kubectl exec env`, crash dumps...).
    for source in relay.get("envFrom", []):
        assert "secretRef" not in source, source
    for container in pod["containers"]:
        for variable in container.get("env", []):
            assert "secretKeyRef" not in variable.get("valueFrom", {}), variable
    config = next(c for c in documents["ConfigMap"] if c["metadata"]["name"] == "trigger-relay")
    url_file = config["data"]["TRIGGER_RELAY_DATABASE_URL_FILE"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in relay["volumeMounts"]}
    directory, _, key = url_file.rpartition("/")
    secret_volume = volumes[mounts[directory]]
    (secret,) = documents["Secret"]
    assert secret_volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert key in secret["stringData"]
    assert secret_volume["secret"]["defaultMode"] & 0o007 == 0, "world-readable secret files"
    assert pod["securityContext"]["fsGroup"] == relay["securityContext"]["runAsGroup"]
    # Only the relay mounts its secrets.
    for container in pod["containers"]:
        if container is not relay:
            names = {m["name"] for m in container.get("volumeMounts", [])}
            assert mounts[directory] not in names, container["name"]
    # Verified TLS to Temporal: the CA comes with the https:// address.
    assert config["data"]["TRIGGER_RELAY_TEMPORAL_ADDRESS"].startswith("https://")
    ca_directory = config["data"]["TRIGGER_RELAY_TEMPORAL_TLS_CA"].rpartition("/")[0]
    assert ca_directory in mounts


def test_kubernetes_network_policy_allows_postgres_temporal_dns_and_prometheus_only() -> None:
    documents = manifest()
    (policy,) = documents["NetworkPolicy"]
    (deployment,) = documents["Deployment"]
    spec = policy["spec"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]

    metrics_port = next(
        p["containerPort"] for p in relay_container(documents)["ports"] if "metrics" in p["name"]
    )
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(metrics_port)
    metrics_rules = [
        rule
        for rule in spec["ingress"]
        if any(port["port"] == metrics_port for port in rule.get("ports", []))
    ]
    assert metrics_rules, "no rule admits Prometheus to the metrics port"
    for rule in metrics_rules:
        assert rule.get("from"), f"{metrics_port} open to every source: {rule}"
        for peer in rule["from"]:
            labels = peer.get("podSelector", {}).get("matchLabels", {})
            assert labels.get("app.kubernetes.io/name") == "prometheus", peer
            assert "ipBlock" not in peer, peer
    for rule in spec["ingress"]:
        assert rule.get("ports"), f"an ingress rule without ports opens every port: {rule}"

    egress = {
        (port["port"], port.get("protocol", "TCP"))
        for rule in spec["egress"]
        for port in rule.get("ports", [])
    }
    assert egress == {(5432, "TCP"), (7233, "TCP"), (53, "UDP"), (53, "TCP")}
    for rule in spec["egress"]:
        assert rule.get("ports"), f"egress on every port: {rule}"
        assert rule.get("to"), f"egress to anything: {rule}"
