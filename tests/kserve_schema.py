"""Check an InferenceService against KServe's own type definitions, without importing kserve.

The kserve SDK (installed with --no-deps) ships OpenAPI-generated models, ``kserve/models/*.py``:
each class lists its fields' JSON keys (``attribute_map``) and types (``openapi_types``), read
here as literals. The Kubernetes types they refer to (V1Container, V1ObjectMeta, ...) are checked
with the strict JSON schemas that kubernetes-validate bundles.
"""

import ast
import datetime
import json
import re
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, distribution
from importlib.resources import files

import jsonschema

API_VERSION = "serving.kserve.io/v1beta1"
ROOT_TYPE = "V1beta1InferenceService"
KUBERNETES_VERSION = "1.30.0"  # as `make test` validates docker/k8s
PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "object": (object,),
    "datetime": (str, datetime.date),  # YAML reads unquoted timestamps as datetimes
}
REQUIRED = re.compile(r"Invalid value for `(\w+)`, must not be `None`")


class SchemaUnavailable(RuntimeError):
    """The kserve SDK, or its generated models, is not installed."""


@dataclass(frozen=True)
class KServeType:
    """One generated model: its fields' types by JSON key, and the keys it requires."""

    fields: dict[str, str]
    required: frozenset[str]


def model_classes(source: str) -> dict[str, KServeType]:
    """Every class in a generated model file that declares ``openapi_types``/``attribute_map``."""
    types = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        literals = {
            target.id: ast.literal_eval(statement.value)
            for statement in node.body
            if isinstance(statement, ast.Assign)
            for target in statement.targets
            if isinstance(target, ast.Name) and target.id in ("openapi_types", "attribute_map")
        }
        if len(literals) < 2:
            continue
        keys = literals["attribute_map"]
        # The generated setters refuse None for required attributes.
        required = REQUIRED.findall(ast.get_source_segment(source, node) or "")
        types[node.name] = KServeType(
            fields={keys[name]: kind for name, kind in literals["openapi_types"].items()},
            required=frozenset(keys[name] for name in required),
        )
    return types


@cache
def kserve_types() -> dict[str, KServeType]:
    """The SDK's generated models by class name; SchemaUnavailable when they are not there."""
    try:
        sdk = distribution("kserve")
    except PackageNotFoundError as exc:
        raise SchemaUnavailable(
            "the kserve SDK is not installed (make install runs pip install --no-deps kserve)"
        ) from exc
    models = [
        path
        for path in sdk.files or ()
        if path.parent.as_posix() == "kserve/models" and path.suffix == ".py"
    ]
    types = {}
    for path in models:
        types.update(model_classes(path.read_text()))
    if ROOT_TYPE not in types:
        raise SchemaUnavailable(f"kserve {sdk.version} has no generated model {ROOT_TYPE}")
    return types


@cache
def kubernetes_definitions() -> dict[str, dict]:
    """kubernetes-validate's strict definitions, e.g. ``io.k8s.api.core.v1.Container``."""
    folder = files("kubernetes_validate") / "kubernetes-json-schema"
    path = folder / f"v{KUBERNETES_VERSION}-local-strict" / "_definitions.json"
    return json.loads(path.read_text())["$defs"]


@cache
def kubernetes_aliases() -> dict[str, str]:
    """The SDK's names for Kubernetes types: V1Container, K8sIoApiAppsV1DeploymentStrategy,
    ResourceQuantity, each mapped to its definition's name."""
    # KServe's MetricQuantity wraps resource.Quantity and has no generated model of its own.
    aliases = {"V1beta1MetricQuantity": "io.k8s.apimachinery.pkg.api.resource.Quantity"}
    for name in kubernetes_definitions():
        *package, kind = name.split(".")
        dotted = ".".join(package)
        if dotted in ("io.k8s.api.core.v1", "io.k8s.apimachinery.pkg.apis.meta.v1"):
            aliases[f"V1{kind}"] = name
        if dotted.startswith("io.k8s.api.") and len(package) == 5:
            group, version = package[3:]
            aliases[f"K8sIoApi{group.capitalize()}{version.capitalize()}{kind}"] = name
        if dotted == "io.k8s.apimachinery.pkg.api.resource":
            aliases[f"Resource{kind}"] = name
    return aliases


@cache
def kubernetes_validator(definition: str) -> jsonschema.Draft202012Validator:
    schema = {"$defs": kubernetes_definitions(), "$ref": f"#/$defs/{definition}"}
    return jsonschema.Draft202012Validator(schema)


def join(path: str, key: str | int) -> str:
    """``spec.predictor``, ``containers[0]``, ``annotations["prometheus.io/path"]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return f"{path}[{json.dumps(key)}]"
    return f"{path}.{key}" if path else key


def named(path: str) -> str:
    return path or "(document)"


def validate_inference_service(doc: object) -> list[str]:
    """Every problem of an InferenceService document, each naming its JSON path."""
    problems = check(doc, ROOT_TYPE, "")
    if isinstance(doc, dict) and doc.get("apiVersion") != API_VERSION:
        problems.insert(0, f"apiVersion: expected {API_VERSION}, the version the models describe")
    return problems


def check(value: object, kind: str, path: str) -> list[str]:
    """Problems of ``value`` as the SDK type string ``kind`` (None: unset, as the API reads it)."""
    if value is None:
        return []
    if match := re.fullmatch(r"list\[(.+)\]", kind):
        if not isinstance(value, list):
            return [f"{named(path)}: expected a list, got {type(value).__name__}"]
        return [p for i, item in enumerate(value) for p in check(item, match[1], join(path, i))]
    if match := re.fullmatch(r"dict\((\w+), (.+)\)", kind):
        if not isinstance(value, dict):
            return [f"{named(path)}: expected a map, got {type(value).__name__}"]
        return [p for key, item in value.items() for p in check(item, match[2], join(path, key))]
    if kind in PRIMITIVES:
        # bool is an int to Python, never to the API.
        stray_bool = isinstance(value, bool) and kind not in ("bool", "object")
        if isinstance(value, PRIMITIVES[kind]) and not stray_bool:
            return []
        return [f"{named(path)}: expected {kind}, got {type(value).__name__} {value!r}"]
    if kind in kserve_types():
        return check_kserve(value, kserve_types()[kind], path)
    if kind in kubernetes_aliases():
        return check_kubernetes(value, kubernetes_aliases()[kind], path)
    return [f"{named(path)}: no schema for type {kind}"]


def check_kserve(value: object, kind: KServeType, path: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{named(path)}: expected an object, got {type(value).__name__}"]
    missing = sorted(kind.required - {*value})
    problems = [f"{join(path, key)}: missing required field" for key in missing]
    for key, item in value.items():
        if key not in kind.fields:
            problems.append(f"{join(path, key)}: unknown field")
        else:
            problems += check(item, kind.fields[key], join(path, key))
    return problems


def check_kubernetes(value: object, definition: str, path: str) -> list[str]:
    problems = []
    for error in kubernetes_validator(definition).iter_errors(value):
        where = path
        for key in error.absolute_path:
            where = join(where, key)
        if error.validator == "additionalProperties":
            known = error.schema.get("properties", {})
            unknown = [key for key in error.instance if key not in known]
            problems += [f"{join(where, key)}: unknown field" for key in unknown]
        else:
            problems.append(f"{named(where)}: {error.message}")
    return sorted(problems)
