"""deploy/k8s: every manifest of the base and the rendered example overlay is valid against the Kubernetes
API schemas (kubernetes-validate, offline, strict: no unknown field), and the manifests say what the
platform needs: probes on the health routes, resources, PDB and HPA, one worker Deployment per queue group,
one beat with Recreate, the migration Job, a ReadWriteMany volume, scrape annotations.

The overlay is rendered by a small kustomize-equivalent (resources, namespace, labels, images, replicas,
strategic-merge patches: what these kustomizations use); where `kubectl` is installed, its built-in
kustomize renders the same objects."""

import copy
import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import DEPLOY, load_all_yaml, load_yaml, procfile_queues

K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.32"


def _merge(base, patch):
    """A strategic merge patch as kustomize applies these: maps merged, lists of named items (containers,
    env, ports, volumes) merged by name, other lists replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in base + patch)
    ):
        by_name = {item["name"]: item for item in base}
        merged = [_merge(by_name[item["name"]], item) if item["name"] in by_name else item for item in patch]
        patched = {item["name"] for item in patch}
        return [item for item in base if item["name"] not in patched] + merged
    return copy.deepcopy(patch)


def _add_labels(document, pairs):
    document.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def _pod_specs(document):
    spec = document.get("spec", {})
    template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template")
    return [template["spec"]] if template else []


def render(directory):
    """The objects `kubectl kustomize directory` prints, for the features these kustomizations use."""
    kustomization = load_yaml(directory / "kustomization.yaml")
    known = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "replicas", "patches"}
    assert set(kustomization) <= known, set(kustomization) - known
    documents = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        documents += render(path) if path.is_dir() else load_all_yaml(path)
    for patch in kustomization.get("patches", []):
        patch_document = load_yaml(directory / patch["path"])
        key = (patch_document["kind"], patch_document["metadata"]["name"])
        index = next(i for i, d in enumerate(documents) if (d["kind"], d["metadata"]["name"]) == key)
        documents[index] = _merge(documents[index], patch_document)
    for replica in kustomization.get("replicas", []):
        next(d for d in documents if d["metadata"]["name"] == replica["name"])["spec"]["replicas"] = replica["count"]
    for image in kustomization.get("images", []):
        for document in documents:
            for pod in _pod_specs(document):
                for container in pod.get("containers", []) + pod.get("initContainers", []):
                    if container["image"].split(":")[0] == image["name"]:
                        container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    for labels in kustomization.get("labels", []):
        for document in documents:
            _add_labels(document, labels["pairs"])
    if "namespace" in kustomization:
        for document in documents:
            document["metadata"]["namespace"] = kustomization["namespace"]
    return documents


@pytest.fixture(scope="module")
def base():
    return {(d["kind"], d["metadata"]["name"]): d for d in render(K8S / "base")}


@pytest.fixture(scope="module")
def overlay():
    return {(d["kind"], d["metadata"]["name"]): d for d in render(K8S / "overlays" / "example")}


def test_every_manifest_is_valid_against_the_kubernetes_schemas(base, overlay):
    for documents in (base, overlay):
        for key, document in documents.items():
            try:
                kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{key}: {error.message} at {list(error.path)}")
    assert len(overlay) == 12


def test_the_validation_can_fail(base):
    web = copy.deepcopy(base[("Deployment", "mlops-web")])
    web["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}  # misspelt: strict mode refuses it
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(web, KUBERNETES_VERSION, strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (its built-in kustomize) not installed")
def test_kubectl_kustomize_renders_the_same_objects(overlay):
    output = subprocess.run(
        ["kubectl", "kustomize", str(K8S / "overlays" / "example")], capture_output=True, text=True, timeout=60
    )
    assert output.returncode == 0, output.stderr
    rendered = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(output.stdout) if d}
    assert rendered == overlay


def _container(document):
    return document["spec"]["template"]["spec"]["containers"][0]


def test_web_has_probes_resources_pdb_hpa_service_ingress_and_scrape_annotations(overlay):
    web = overlay[("Deployment", "mlops-web")]
    container = _container(web)
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert container["image"] == "registry.example.com/mlops-site:1.0.0"
    assert web["spec"]["replicas"] == 3
    annotations = web["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8000"
    selector = web["spec"]["selector"]["matchLabels"]
    assert overlay[("PodDisruptionBudget", "mlops-web")]["spec"]["selector"]["matchLabels"] == selector
    assert overlay[("Service", "mlops-web")]["spec"]["selector"] == selector
    hpa = overlay[("HorizontalPodAutoscaler", "mlops-web")]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "mlops-web"
    assert hpa["minReplicas"] >= 2
    ingress = overlay[("Ingress", "mlops-web")]
    assert ingress["spec"]["rules"][0]["host"] == "mlops.example.org"
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "on"
    config = overlay[("ConfigMap", "mlops-config")]["data"]
    assert config["ALLOWED_HOSTS"] == "mlops.example.org"
    assert config["DEBUG"] == "0"  # kept from the base by the patch


def test_workers_per_queue_group_one_beat_recreate_and_the_migration_job(overlay):
    queues = {}
    for (kind, name), document in overlay.items():
        command = _container(document)["command"] if kind == "Deployment" else []
        if command[:4] == ["celery", "-A", "mlops_site", "worker"]:
            queues[name] = set(command[command.index("--queues") + 1].split(","))
            assert document["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "9808"
    assert queues["mlops-worker-training"] == {"training"}
    consumed = set().union(*queues.values())
    assert consumed >= procfile_queues() | {"default", "monitoring"}
    assert sum(len(q) for q in queues.values()) == len(consumed)  # each queue by one group
    beat = overlay[("Deployment", "mlops-beat")]["spec"]
    assert beat["replicas"] == 1
    assert beat["strategy"] == {"type": "Recreate"}
    beats = [name for (kind, name), d in overlay.items() if kind == "Deployment" and "beat" in _container(d)["command"]]
    assert beats == ["mlops-beat"]
    job = overlay[("Job", "mlops-migrate")]["spec"]["template"]["spec"]["containers"][0]
    assert job["command"] == ["python", "manage.py", "migrate", "--noinput"]
    for (kind, name), document in overlay.items():
        if kind == "Deployment":  # every process waits for the migrations of its image
            init = document["spec"]["template"]["spec"]["initContainers"][0]
            assert "migrate --check" in init["command"][-1], name
            assert init["image"] == _container(document)["image"], name


def test_artifacts_and_signal_on_one_read_write_many_volume(overlay):
    claim = overlay[("PersistentVolumeClaim", "mlops-artifacts")]["spec"]
    assert claim["accessModes"] == ["ReadWriteMany"]
    assert claim["storageClassName"] == "nfs-client"
    signal = overlay[("ConfigMap", "mlops-config")]["data"]["SERVING_SIGNAL_FILE"]
    for (kind, name), document in overlay.items():
        if kind != "Deployment":
            continue
        volumes = {v["name"]: v for v in document["spec"]["template"]["spec"]["volumes"]}
        assert volumes["artifacts"]["persistentVolumeClaim"]["claimName"] == "mlops-artifacts", name
        mounts = {m["name"]: m["mountPath"] for m in _container(document)["volumeMounts"]}
        assert signal.startswith(mounts["artifacts"] + "/"), name
        assert document["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True, name
    secret_keys = set(overlay[("Secret", "mlops-secrets")]["stringData"])
    assert {"SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL"} <= secret_keys
