"""docker/kserve/inferenceservice.yaml: an InferenceService KServe accepts, for the service it runs.

kubernetes-validate has no schema for a custom resource, so its fields are checked against the
kserve SDK's generated models (tests/kserve_schema.py); its probes answer on a real app, and its
ports, settings and budgets agree with the service and with docker/k8s.
"""

import copy
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from service.settings import Settings
from service.transport.app import create_app
from tests import kserve_schema
from tests.dockerfile import runtime_stage
from tests.test_deploy_manifests import SETTING_NAMES, assert_hardened, k8s, settings_from

MANIFEST = Path(__file__).resolve().parents[1] / "docker" / "kserve" / "inferenceservice.yaml"
PROBES = ("readinessProbe", "livenessProbe")
KSERVE_PORT = 8080  # what KServe routes to when kserve-container declares no port
ISVC_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")  # KServe's webhook rule for the name


def inference_service() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


def predictor(doc: dict | None = None) -> dict:
    return (doc or inference_service())["spec"]["predictor"]


def container(doc: dict | None = None) -> dict:
    (only,) = predictor(doc)["containers"]
    return only


def env() -> dict[str, str]:
    return {var["name"]: var["value"] for var in container()["env"]}


def made_env() -> dict[str, str]:
    return {name: value for name, value in env().items() if name.startswith("MADE")}


@pytest.fixture(scope="module")
def validate() -> Callable[[object], list[str]]:
    try:
        kserve_schema.kserve_types()
    except kserve_schema.SchemaUnavailable as exc:
        pytest.skip(str(exc))
    return kserve_schema.validate_inference_service


def test_the_manifest_matches_the_kserve_sdk_models(validate):
    assert validate(inference_service()) == []


def misspell_scale_metric(doc: dict) -> None:
    predictor(doc)["scaleMetrics"] = predictor(doc).pop("scaleMetric")


def spell_min_replicas(doc: dict) -> None:
    predictor(doc)["minReplicas"] = "one"


def misspell_readiness_probe(doc: dict) -> None:
    container(doc)["readinesProbe"] = container(doc).pop("readinessProbe")


def quote_container_port(doc: dict) -> None:
    container(doc)["ports"][0]["containerPort"] = "8080"


def drop_predictor(doc: dict) -> None:
    del doc["spec"]["predictor"]


@pytest.mark.parametrize(
    ("break_it", "problem"),
    [
        (misspell_scale_metric, "spec.predictor.scaleMetrics: unknown field"),
        (spell_min_replicas, "spec.predictor.minReplicas: expected int, got str 'one'"),
        (misspell_readiness_probe, "spec.predictor.containers[0].readinesProbe: unknown field"),
        (
            quote_container_port,
            "spec.predictor.containers[0].ports[0].containerPort: '8080' is not of type 'integer'",
        ),
        (drop_predictor, "spec.predictor: missing required field"),
    ],
)
def test_the_validator_names_each_broken_field(validate, break_it, problem):
    doc = copy.deepcopy(inference_service())
    break_it(doc)
    assert validate(doc) == [problem]


def test_probe_and_scrape_paths_answer_200_on_a_ready_app(tiny_artifact):
    paths = {probe: container()[probe]["httpGet"]["path"] for probe in PROBES}
    assert paths == {"readinessProbe": "/v2/health/ready", "livenessProbe": "/v2/health/live"}
    paths["prometheus.io/path"] = predictor()["annotations"]["prometheus.io/path"]
    with TestClient(create_app(Settings(model_dir=tiny_artifact))) as client:
        answers = {where: client.get(path).status_code for where, path in paths.items()}
        # The README's way to the name V2 requests use: /v1/models lists the artifact's.
        (model,) = client.get("/v1/models").json()["models"]
        model_ready = client.get(f"/v2/models/{model['name']}/ready").status_code
    assert answers == dict.fromkeys(paths, 200)
    assert model_ready == 200


def test_readiness_waits_for_the_model_while_liveness_does_not(tiny_artifact):
    client = TestClient(create_app(Settings(model_dir=tiny_artifact)))  # lifespan not started
    assert client.get(container()["readinessProbe"]["httpGet"]["path"]).status_code == 503
    assert client.get(container()["livenessProbe"]["httpGet"]["path"]).status_code == 200


def test_probes_container_port_and_made_port_agree(monkeypatch):
    (port,) = container()["ports"]
    settings = settings_from(made_env(), monkeypatch)
    assert settings.port == port["containerPort"] == KSERVE_PORT
    assert settings.host == "0.0.0.0"
    # Numeric: Knative rejects a probe port other than the container's, and a name is neither.
    assert [container()[probe]["httpGet"]["port"] for probe in PROBES] == [KSERVE_PORT] * 2
    assert int(predictor()["annotations"]["prometheus.io/port"]) == KSERVE_PORT


def test_every_made_variable_is_a_setting_and_parses(monkeypatch):
    made = made_env()
    assert set(made) <= SETTING_NAMES, set(made) - SETTING_NAMES
    settings_from(made, monkeypatch)  # raises when a value does not validate
    assert set(env()) - set(made) == {"PROTOCOL"}  # KServe's one variable
    assert env()["PROTOCOL"] == "v2"
    assert made["MADE_MODEL_DIR"] == runtime_stage().env()["MADE_MODEL_DIR"]  # the baked artifact
    # The same service settings as the Deployment's ConfigMap, but for KServe's port.
    configmap = k8s("ConfigMap")["data"]
    assert {**made, "MADE_PORT": configmap["MADE_PORT"]} == configmap


def test_kserve_runs_it_as_an_hpa_scaled_custom_predictor():
    doc = inference_service()
    assert ISVC_NAME.fullmatch(doc["metadata"]["name"])
    annotations = doc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "Standard"
    assert annotations["serving.kserve.io/autoscalerClass"] == "hpa"
    spec = predictor()
    assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
    # KServe's HPA validation: cpu (or memory) only, a cpu target is a 1-100 percentage.
    assert spec["scaleMetric"] == "cpu" and 1 <= spec["scaleTarget"] <= 100
    assert container()["name"] == "kserve-container"


def test_shutdown_grace_fits_inside_the_pod_grace(monkeypatch):
    grace = settings_from(made_env(), monkeypatch).shutdown_grace_s
    pre_stop = container()["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert predictor()["terminationGracePeriodSeconds"] > pre_stop + grace


def test_it_runs_as_the_image_user_read_only_with_resources():
    assert_hardened(predictor(), container())
    mounts = {mount["name"]: mount["mountPath"] for mount in container()["volumeMounts"]}
    assert mounts == {"tmp": "/tmp"}
    assert [volume["name"] for volume in predictor()["volumes"] if "emptyDir" in volume] == ["tmp"]
