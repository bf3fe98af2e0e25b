"""The Helm chart (deploy/k8s), with a real helm (v4, from PyPI: deploy/helm.py) and the
Kubernetes 1.37 schemas (kubernetes-validate); there is no cluster here.

- `helm lint --strict` and `helm template` with the default and the production values;
- every rendered object validated against the Kubernetes schemas (strict: unknown fields fail);
- assertions on what was rendered: every registry service has its Deployment, Service,
  ServiceAccount, PDB, HPA and NetworkPolicy; every container probes, limits and the hardened
  security context; secrets only by reference; the NetworkPolicies allow only the arrows;
- Envoy's ConfigMap, as rendered, accepted by the real `envoy --mode validate`;
- a bad values file fails with the schema's message; a registry service missing in values.yaml
  fails the check.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from deploy import chart
from deploy.helm import helm_binary
from gateway.envoy_config import envoy_binary
from services import registry
from services.registry import ServiceEntry

K8S_VERSION = "1.37.0"
RELEASE, NAMESPACE = "tms", "logistics"
FULLNAME = f"{RELEASE}-cartage"
HARDENED = {
    "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
    "allowPrivilegeEscalation": False, "privileged": False, "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
}
PROD = chart.CHART / "values-prod.yaml"
METRICS = 9464


@pytest.fixture(scope="module")
def helm() -> Path:
    return helm_binary()


@pytest.fixture(scope="module")
def chart_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the chart with its generated files built from the contracts (make chart)."""
    target = tmp_path_factory.mktemp("chart") / "cartage"
    shutil.copytree(chart.CHART, target, ignore=shutil.ignore_patterns("envoy.yaml",
                                                                       "cartage.binpb"))
    chart.build_files(target / "files")
    return target


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120)


def render(helm: Path, chart_dir: Path, *values: Path, sets: tuple[str, ...] = ()
           ) -> list[dict[str, Any]]:
    args = ["template", RELEASE, str(chart_dir), "--namespace", NAMESPACE]
    for path in values:
        args += ["-f", str(path)]
    for item in sets:
        args += ["--set", item]
    result = run_helm(helm, *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=["default", "prod"])
def rendered(request: pytest.FixtureRequest, helm: Path, chart_dir: Path
             ) -> list[dict[str, Any]]:
    return render(helm, chart_dir, *([PROD] if request.param == "prod" else []))


def objects(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def component(name: str) -> str:
    return f"{FULLNAME}-{name}"


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(d["metadata"]["name"], d["spec"]["template"]["spec"])
            for d in docs if d["kind"] in ("Deployment", "Job")]


# --- helm itself ------------------------------------------------------------------------------

@pytest.mark.parametrize("values", [[], [PROD]], ids=["default", "prod"])
def test_helm_lint_strict(helm: Path, chart_dir: Path, values: list[Path]) -> None:
    args = ["lint", "--strict", str(chart_dir)]
    for path in values:
        args += ["-f", str(path)]
    result = run_helm(helm, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_every_rendered_object_matches_the_kubernetes_schemas(
        rendered: list[dict[str, Any]]) -> None:
    assert len(rendered) > 20
    for doc in rendered:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validator_can_fail(rendered: list[dict[str, Any]]) -> None:
    deployment = json.loads(json.dumps(next(d for d in rendered if d["kind"] == "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpcc"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


# --- what every service gets -------------------------------------------------------------------

def test_every_registry_service_has_all_its_objects(rendered: list[dict[str, Any]]) -> None:
    for entry in registry.SERVICES:
        name = component(entry.name)
        for kind in ("Deployment", "Service", "ServiceAccount", "PodDisruptionBudget",
                     "HorizontalPodAutoscaler", "NetworkPolicy"):
            assert name in objects(rendered, kind), f"{kind} {name}"
        service = objects(rendered, "Service")[name]
        assert service["spec"]["clusterIP"] == "None"  # headless: Envoy balances over pods
        assert [p["port"] for p in service["spec"]["ports"]] == [entry.default_port, METRICS]
        container = objects(rendered, "Deployment")[name]["spec"]["template"]["spec"][
            "containers"][0]
        assert container["args"] == [entry.name, "serve"]
        env = {e["name"]: e for e in container["env"]}
        assert env[entry.address_env]["value"] == f"0.0.0.0:{entry.default_port}"
        assert env["MIGRATE_ON_START"]["value"] == "false"
        assert env[f"{entry.env_prefix}_METRICS_PORT"]["value"] == str(METRICS)
        # grpc.health.v1 probes on the gRPC port: readiness is the overall entry (it follows
        # Postgres and NATS), liveness and startup the kit's `liveness` entry.
        assert container["readinessProbe"]["grpc"] == {"port": entry.default_port}
        for probe in ("livenessProbe", "startupProbe"):
            assert container[probe]["grpc"] == {"port": entry.default_port,
                                                "service": "liveness"}
    for other in ("gateway", "auth", "audit"):
        for kind in ("Deployment", "Service", "ServiceAccount", "PodDisruptionBudget",
                     "NetworkPolicy"):
            assert component(other) in objects(rendered, kind), f"{kind} {other}"


def test_every_container_probes_is_limited_and_hardened(rendered: list[dict[str, Any]]) -> None:
    specs = pod_specs(rendered)
    assert len(specs) >= 2 * len(registry.SERVICES) + 4
    for name, spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            assert container["securityContext"] == HARDENED, name
            limits = container["resources"]["limits"]
            assert limits["cpu"] and limits["memory"], name
            assert container["resources"]["requests"]["memory"], name
            if name.startswith(component("migrate")):
                continue
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in container, f"{name}: {probe}"
        if not name.startswith(component("migrate")):
            keys = {c["topologyKey"] for c in spec["topologySpreadConstraints"]}
            assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}


def test_disruption_budgets_let_a_node_drain(rendered: list[dict[str, Any]]) -> None:
    deployments = objects(rendered, "Deployment")
    hpas = objects(rendered, "HorizontalPodAutoscaler")
    for name, pdb in objects(rendered, "PodDisruptionBudget").items():
        replicas = (hpas[name]["spec"]["minReplicas"] if name in hpas
                    else deployments[name]["spec"]["replicas"])
        assert replicas >= 2, name
        if "minAvailable" in pdb["spec"]:
            assert pdb["spec"]["minAvailable"] < replicas, name
        else:
            assert pdb["spec"]["maxUnavailable"] >= 1, name


def test_secrets_are_only_referenced(rendered: list[dict[str, Any]]) -> None:
    assert not [d for d in rendered if d["kind"] == "Secret"]
    values = yaml.safe_load((chart.CHART / "values.yaml").read_text())
    secret_names = {ref["name"] for ref in values["secrets"].values()} | {
        "cartage-prod-database", "cartage-prod-auth", "cartage-prod-webhooks"}
    for name, spec in pod_specs(rendered):
        env = {e["name"]: e for c in spec["containers"] for e in c.get("env", [])}
        for secret in ("DATABASE_URL", "AUTH_KEY_ENCRYPTION_KEY"):
            if secret in env:
                assert "value" not in env[secret], f"{name}: {secret} in clear"
                assert env[secret]["valueFrom"]["secretKeyRef"]["name"] in secret_names
        assert "DATABASE_URL" in env or name.endswith("-gateway"), name
    # And nothing the chart renders carries the key of a Secret it would have made.
    for doc in rendered:
        assert "stringData" not in json.dumps(doc)


def test_secret_env_maps_a_variable_to_an_existing_secret(helm: Path, chart_dir: Path) -> None:
    docs = render(helm, chart_dir,
                  sets=("services.order.secretEnv.ORDER_WEBHOOK_KEY=webhookSecretKey",))
    container = objects(docs, "Deployment")[component("order")]["spec"]["template"]["spec"][
        "containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["ORDER_WEBHOOK_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "cartage-webhooks", "key": "secret-key"}


def test_migrations_run_as_hook_jobs_one_per_schema(rendered: list[dict[str, Any]]) -> None:
    jobs = objects(rendered, "Job")
    expected = {*registry.names(), "auth"}
    assert set(jobs) == {component(f"migrate-{name}") for name in expected}
    for name in expected:
        job = jobs[component(f"migrate-{name}")]
        assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == [name, "migrate"]
        assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


# --- network policies --------------------------------------------------------------------------

def _selects(peer: dict[str, Any]) -> str | None:
    return peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")


def test_default_deny_and_only_envoy_reaches_the_services(
        rendered: list[dict[str, Any]]) -> None:
    policies = objects(rendered, "NetworkPolicy")
    deny = policies[f"{FULLNAME}-default-deny"]["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny and "egress" not in deny
    assert deny["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "cartage", "app.kubernetes.io/instance": RELEASE}
    for entry in registry.SERVICES:
        spec = policies[component(entry.name)]["spec"]
        rule, scrape = spec["ingress"]
        assert [_selects(p) for p in rule["from"]] == ["gateway"]
        assert rule["ports"] == [{"protocol": "TCP", "port": entry.default_port}]
        # Prometheus (metrics.from: the monitoring namespace) reaches the metrics port only.
        assert scrape["ports"] == [{"protocol": "TCP", "port": METRICS}]
        assert scrape["from"][0]["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": "monitoring"}
        egress_ports = {p["port"] for r in spec["egress"] for p in r["ports"]}
        other_ports = {s.default_port for s in registry.SERVICES}
        assert not egress_ports & other_ports, "no arrow between services by default"
        assert {53, 5432, 4222} <= egress_ports
    gateway = policies[component("gateway")]["spec"]
    reached = {_selects(r["to"][0]) for r in gateway["egress"]} - {None}  # None: DNS
    assert reached == {*registry.names(), "auth", "audit"}
    for name in ("auth", "audit"):
        ports = {p["port"] for r in policies[component(name)]["spec"]["egress"]
                 for p in r["ports"]}
        assert ports == {53, 5432}, f"{name} reaches only DNS and Postgres"
        scrape = policies[component(name)]["spec"]["ingress"][-1]
        assert scrape["ports"] == [{"protocol": "TCP", "port": METRICS}]
        env = {e["name"]: e.get("value") for e in objects(rendered, "Deployment")[
            component(name)]["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env[f"{name.upper()}_METRICS_PORT"] == str(METRICS)


def test_a_grpc_arrow_opens_exactly_that_path(helm: Path, chart_dir: Path) -> None:
    first, second = registry.SERVICES[0], registry.SERVICES[1]
    docs = render(helm, chart_dir, sets=(f"grpcCalls.{first.name}={{{second.name}}}",))
    policies = objects(docs, "NetworkPolicy")
    callee = policies[component(second.name)]["spec"]["ingress"][0]
    assert sorted(_selects(p) for p in callee["from"]) == sorted(["gateway", first.name])
    caller = policies[component(first.name)]["spec"]
    assert any(_selects(r["to"][0]) == second.name
               and r["ports"] == [{"protocol": "TCP", "port": second.default_port}]
               for r in caller["egress"])
    # The arrow has a direction.
    back = policies[component(second.name)]["spec"]
    assert not any(_selects(r["to"][0]) == first.name for r in back["egress"])


# --- the gateway -------------------------------------------------------------------------------

def test_envoy_config_in_the_configmap_is_valid_and_points_at_kubernetes_services(
        rendered: list[dict[str, Any]], tmp_path: Path) -> None:
    configmap = objects(rendered, "ConfigMap")[component("gateway")]
    text = configmap["data"]["envoy.yaml"]
    assert "@@" not in text
    config = json.loads(text)
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    for entry in registry.SERVICES:
        cluster = clusters[entry.cluster]
        assert cluster["type"] == "STRICT_DNS"
        (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        assert endpoint["endpoint"]["address"]["socket_address"] == {
            "address": f"{component(entry.name)}.{NAMESPACE}.svc.cluster.local",
            "port_value": entry.default_port}
    providers = json.dumps(config).count('"issuer": "https://auth.cartage.example.com"')
    assert providers == 1
    # Envoy reads the descriptor set from the same ConfigMap: validate exactly what ships.
    descriptors = tmp_path / "cartage.binpb"
    descriptors.write_bytes(base64.b64decode(configmap["binaryData"]["cartage.binpb"]))
    path = tmp_path / "envoy.yaml"
    path.write_text(text.replace(chart.DESCRIPTOR_MOUNT, str(descriptors)))
    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path),
                             "--disable-hot-restart", "--log-level", "error"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout
    deployment = objects(rendered, "Deployment")[component("gateway")]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:3] == ["envoy", "-c", "/etc/cartage/envoy/envoy.yaml"]
    assert deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def test_the_service_monitor_is_off_by_default_and_scrapes_every_port(
        helm: Path, chart_dir: Path, rendered: list[dict[str, Any]]) -> None:
    assert not [d for d in rendered if d["kind"] == "ServiceMonitor"]
    docs = render(helm, chart_dir, sets=("metrics.serviceMonitor.enabled=true",))
    (monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert {(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]} == {
        ("metrics", "/metrics"), ("stats", "/stats/prometheus")}
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_the_chart_refuses_to_render_without_its_generated_files(
        helm: Path, chart_dir: Path, tmp_path: Path) -> None:
    bare = tmp_path / "cartage"
    shutil.copytree(chart_dir, bare)
    (bare / "files" / "envoy.yaml").unlink()
    result = run_helm(helm, "template", RELEASE, str(bare))
    assert result.returncode != 0
    assert "make chart" in result.stderr


# --- values ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("values", "message"), [
    ({"defaults": {"replicas": "two"}}, "at '/defaults/replicas': got string, want integer"),
    ({"logLevel": "LOUD"}, "at '/logLevel'"),
    ({"image": {"digest": "latest"}}, "at '/image/digest'"),
    ({"services": {"order": {"env": {"DATABASE_URL": "postgresql://u:p@db/x"}}}},
     "invalid propertyName 'DATABASE_URL'"),
    ({"services": {"order": {"replica": 3}}}, "replica"),
    ({"nats": {"url": "nats://user:password@nats:4222"}}, "at '/nats/url'"),
    # nats-py takes one URL as a string (a list only from code); the server tells the client
    # the cluster's other addresses.
    ({"nats": {"url": "nats://a:4222,nats://b:4222"}}, "at '/nats/url'"),
    ({"networkPolicy": {"postgres": {"port": 5432, "to": []}}},
     "at '/networkPolicy/postgres/to'"),
], ids=["type", "enum", "digest", "secret-in-env", "unknown-key", "credentials-in-url",
        "url-list", "no-peers"])
def test_a_bad_values_file_fails_with_the_schemas_message(
        helm: Path, chart_dir: Path, tmp_path: Path, values: dict[str, Any],
        message: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(values))
    result = run_helm(helm, "template", RELEASE, str(chart_dir), "-f", str(bad))
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr


def test_an_unknown_secret_reference_fails_with_the_list(helm: Path, chart_dir: Path) -> None:
    result = run_helm(helm, "template", RELEASE, str(chart_dir),
                      "--set", "services.order.secretEnv.X_KEY=nope")
    assert result.returncode != 0
    assert "is not one of the `secrets` references" in result.stderr


def test_values_list_every_registry_service() -> None:
    assert chart.check_values() == []
    values = yaml.safe_load(chart.VALUES.read_text())
    assert set(values["services"]) == set(registry.names())
    for entry in registry.SERVICES:
        assert values["services"][entry.name] == {
            "module": entry.package, "envPrefix": entry.env_prefix, "port": entry.default_port}


def test_a_registry_service_missing_in_values_fails_the_check(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, helm: Path, chart_dir: Path) -> None:
    extra = ServiceEntry(name="ledger", package="services.ledger", default_port=50990,
                         env_prefix="LEDGER", proto_package="cartage.ledger.v1",
                         grpc_services=("cartage.ledger.v1.LedgerService",))
    values = tmp_path / "values.yaml"
    values.write_text(chart.VALUES.read_text())
    monkeypatch.setattr(registry, "SERVICES", (*registry.SERVICES, extra))
    assert chart.check_values(values) == [
        "service 'ledger' of services.registry is missing in values.yaml"]
    chart.sync_values(values)
    assert chart.check_values(values) == []
    assert "  ledger:\n    module: services.ledger\n    envPrefix: LEDGER\n" in values.read_text()
    # What sync-values wrote renders (schema included): the new service joins the chart
    # with all its objects, and its migration Job, without a template change.
    synced = tmp_path / "cartage"
    shutil.copytree(chart_dir, synced)
    shutil.copyfile(values, synced / "values.yaml")
    docs = render(helm, synced)
    for kind in ("Deployment", "Service", "ServiceAccount", "PodDisruptionBudget",
                 "HorizontalPodAutoscaler", "NetworkPolicy"):
        assert component("ledger") in objects(docs, kind), kind
    assert component("migrate-ledger") in objects(docs, "Job")
