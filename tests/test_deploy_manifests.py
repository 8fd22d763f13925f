"""The Dockerfile, compose file and Kubernetes manifests agree with the service they deploy.

Probe and scrape paths must answer on a real app, ports and MADE_* names must be the service's
settings, and the shutdown budgets must nest inside the orchestrators' grace periods.
"""

import json
import re
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from service.settings import Settings
from service.transport.app import create_app
from tests.dockerfile import read_stages, runtime_stage

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
SETTING_NAMES = {f"MADE_{name.upper()}" for name in Settings.model_fields}
DEFAULT_PORT = Settings.model_fields["port"].default


def k8s(kind: str) -> dict:
    docs = [
        doc
        for path in sorted((DOCKER / "k8s").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc["kind"] == kind
    ]
    assert len(docs) == 1, f"expected one {kind} in docker/k8s"
    return docs[0]


def compose_service() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]["made-serve"]


def scrape_config() -> dict:
    (job,) = yaml.safe_load((DOCKER / "prometheus.yml").read_text())["scrape_configs"]
    return job


def pod_spec() -> dict:
    return k8s("Deployment")["spec"]["template"]["spec"]


def container() -> dict:
    (only,) = pod_spec()["containers"]
    return only


def url_path(command: list[str]) -> str:
    """The path of the URL a python -c health check opens."""
    match = re.search(r"'(/[\w/.-]*)'", " ".join(command))
    assert match, f"no quoted URL path in {command}"
    return match.group(1)


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings exactly as the service would read them from this environment."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    return Settings()


def readiness_paths() -> dict[str, str]:
    return {
        "Dockerfile HEALTHCHECK": url_path(runtime_stage().healthcheck()),
        "compose healthcheck": url_path(compose_service()["healthcheck"]["test"]),
        "k8s readinessProbe": container()["readinessProbe"]["httpGet"]["path"],
    }


def scrape_paths() -> dict[str, str]:
    annotations = k8s("Deployment")["spec"]["template"]["metadata"]["annotations"]
    return {
        "prometheus.yml metrics_path": scrape_config().get("metrics_path", "/metrics"),
        "k8s prometheus.io/path": annotations["prometheus.io/path"],
    }


def liveness_path() -> str:
    return container()["livenessProbe"]["httpGet"]["path"]


def test_every_probe_and_scrape_path_answers_200_on_a_ready_app(tiny_artifact):
    paths = {**readiness_paths(), **scrape_paths(), "k8s livenessProbe": liveness_path()}
    with TestClient(create_app(Settings(model_dir=tiny_artifact))) as client:
        answers = {where: client.get(path).status_code for where, path in paths.items()}
    assert answers == dict.fromkeys(paths, 200)


def test_readiness_waits_for_the_model_while_liveness_does_not(tiny_artifact):
    client = TestClient(create_app(Settings(model_dir=tiny_artifact)))  # lifespan not started
    answers = {where: client.get(path).status_code for where, path in readiness_paths().items()}
    assert answers == dict.fromkeys(readiness_paths(), 503)
    assert client.get(liveness_path()).status_code == 200


def test_ports_agree_with_the_settings_default_and_expose():
    image = runtime_stage()
    assert image.arguments("EXPOSE") == [str(DEFAULT_PORT)]
    assert int(image.env()["MADE_PORT"]) == DEFAULT_PORT

    service = compose_service()
    port = int(service["environment"]["MADE_PORT"])
    assert [mapping.rsplit(":", 1)[1] for mapping in service["ports"]] == [str(port)]
    (target,) = scrape_config()["static_configs"][0]["targets"]
    assert target == f"made-serve:{port}"

    (http,) = container()["ports"]
    assert http["containerPort"] == int(k8s("ConfigMap")["data"]["MADE_PORT"]) == DEFAULT_PORT
    probes = [
        container()[probe]["httpGet"]["port"] for probe in ("readinessProbe", "livenessProbe")
    ]
    assert probes == [http["name"]] * 2
    assert [p["targetPort"] for p in k8s("Service")["spec"]["ports"]] == [http["name"]]
    annotations = k8s("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == http["containerPort"]


def test_every_made_variable_is_a_setting_and_parses(monkeypatch):
    sources = {
        "Dockerfile": runtime_stage().env(),
        "compose": compose_service()["environment"],
        "ConfigMap": k8s("ConfigMap")["data"],
    }
    for where, env in sources.items():
        made = {name: value for name, value in env.items() if name.startswith("MADE")}
        assert made, where
        assert set(made) <= SETTING_NAMES, f"{where}: {set(made) - SETTING_NAMES}"
        settings_from(made, monkeypatch)  # raises when a value does not validate
    assert all(name.startswith("MADE_") for name in sources["ConfigMap"])


def test_model_dir_is_where_the_artifact_is(monkeypatch):
    image = runtime_stage()
    baked = [dest for sources, dest in image.copies() if sources == ["/build/artifact"]]
    assert baked == [image.env()["MADE_MODEL_DIR"]] == [k8s("ConfigMap")["data"]["MADE_MODEL_DIR"]]
    service = compose_service()
    targets = [volume["target"] for volume in service["volumes"]]
    assert service["environment"]["MADE_MODEL_DIR"] in targets


def test_shutdown_grace_fits_inside_the_orchestrators_grace(monkeypatch):
    grace = settings_from(k8s("ConfigMap")["data"], monkeypatch).shutdown_grace_s
    pre_stop = container()["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod_spec()["terminationGracePeriodSeconds"] > pre_stop + grace

    service = compose_service()
    grace = settings_from(service["environment"], monkeypatch).shutdown_grace_s
    stop = re.fullmatch(r"(\d+)s", service["stop_grace_period"])
    assert stop and int(stop.group(1)) > grace


def assert_hardened(pod: dict, container: dict) -> None:
    """The image's non-root user, a read-only root, no privileges, and CPU and memory bounds."""
    user = int(runtime_stage().arguments("USER")[0].split(":")[0])
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == user != 0
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    for bound in ("requests", "limits"):
        assert set(container["resources"][bound]) == {"cpu", "memory"}, bound


def test_deployment_runs_as_the_image_user_read_only_with_resources():
    assert_hardened(pod_spec(), container())
    assert container()["envFrom"] == [
        {"configMapRef": {"name": k8s("ConfigMap")["metadata"]["name"]}}
    ]


def test_service_and_autoscaler_select_the_deployment():
    deployment = k8s("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert k8s("Service")["spec"]["selector"].items() <= labels.items()
    hpa = k8s("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count


def test_runtime_stage_has_only_the_serve_extra_and_an_exec_entrypoint():
    stages = read_stages()
    runtime = runtime_stage()
    installs = " ".join(runtime.arguments("RUN"))
    assert '"/src[serve]"' in installs
    assert "torch" not in installs and "train" not in installs
    (entrypoint,) = runtime.arguments("ENTRYPOINT")
    command = json.loads(entrypoint)  # exec form: the server is PID 1 and receives SIGTERM
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(rf'^{re.escape(command[0])} = "service\.cli:main"$', pyproject, re.M)
    torch_pin = next(
        line for line in (ROOT / "constraints.txt").read_text().splitlines() if "torch" in line
    )
    assert torch_pin in " ".join(stages["build"].arguments("RUN"))
