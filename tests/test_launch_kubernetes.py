"""launch/kubernetes: the Kubeflow Trainer TrainJob and the plain Indexed Job, rendered with their
parameters, checked against their API schemas offline, and run through the kit's own launch logic
with the variables each platform gives every pod.

The Indexed Job and its Service are validated by kubernetes-validate (the Kubernetes 1.37 OpenAPI
schemas, strict: unknown fields fail). The TrainJob is parsed by kubeflow-trainer-api's typed models
(generated from the Trainer's OpenAPI spec); they drop unknown fields, so the round trip must give
back the document unchanged.
"""

from __future__ import annotations

import re

import kubernetes_validate
import pytest
import yaml
from kubeflow_trainer_api.models.trainer_v1alpha1_train_job import TrainerV1alpha1TrainJob

from launch_env import LAUNCH, node_launch
from llava.train.command import NCCL_TIMEOUT_ENV
from llava.train.watchdog import HANG_EXIT_CODE

PARAMS = {"LLAVA_KIT_IMAGE": "registry.example/llava-kit@sha256:" + "0" * 64, "LLAVA_KIT_PVC": "llava-kit-data",
          "LLAVA_KIT_PROFILE": "fast", "STAGE": "stage2", "NNODES": "2", "GPUS_PER_NODE": "8"}
K8S_VERSION = "1.37.0"


def template(name: str) -> str:
    return (LAUNCH / "kubernetes" / name).read_text()


def render(name: str, params: dict[str, str] = PARAMS) -> list[dict]:
    """envsubst with the documented variable list: ${NAME} filled, Kubernetes' $(NAME) left alone."""
    text = re.sub(r"\$\{(\w+)\}", lambda m: params[m[1]], template(name))
    return list(yaml.safe_load_all(text))


def kubernetes_expand(value: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion of command/args from the container's variables."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), value)


@pytest.mark.parametrize("name", ["indexed-job.yaml", "trainjob.yaml"])
def test_parameters_are_the_documented_ones(name):
    """The envsubst line in the header names exactly the ${...} the manifest uses."""
    used = set(re.findall(r"\$\{(\w+)\}", template(name)))
    documented = set(re.search(r"envsubst '([^']+)'", template(name))[1].replace("$", "").split())
    assert used == documented == set(PARAMS)


def test_indexed_job_and_service_validate_against_the_kubernetes_schemas():
    docs = render("indexed-job.yaml")
    assert [d["kind"] for d in docs] == ["Service", "Job"]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    typo = render("indexed-job.yaml")[1]
    typo["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    with pytest.raises(kubernetes_validate.ValidationError, match="volumeMount"):
        kubernetes_validate.validate(typo, K8S_VERSION, strict=True)


def test_trainjob_parses_into_the_trainer_api_models_unchanged():
    doc = render("trainjob.yaml")[0]
    assert TrainerV1alpha1TrainJob.from_dict(doc).to_dict() == doc
    doc["spec"]["trainer"]["numnodes"] = 2  # a typo is dropped by the models: the round trip shows it
    assert TrainerV1alpha1TrainJob.from_dict(doc).to_dict() != doc


def container_env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def test_indexed_job_pods_launch_torchrun_for_their_node():
    service, job = render("indexed-job.yaml")
    spec = job["spec"]["template"]["spec"]
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 2 and job["spec"]["completionMode"] == "Indexed"
    assert spec["subdomain"] == service["metadata"]["name"] == job["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    container = spec["containers"][0]
    rank_source = next(e for e in container["env"] if e["name"] == "NODE_RANK")["valueFrom"]["fieldRef"]
    assert rank_source["fieldPath"] == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    for index in (0, 1):
        env = {**container_env(container), "NODE_RANK": str(index)}
        args = [kubernetes_expand(arg, env) for arg in container["args"]]
        assert container["command"] == ["llava-kit"]
        launch = node_launch(args, env)
        # pod 0's stable name under the headless service: <job>-0.<subdomain>
        assert launch["rdzv-endpoint"] == f"{job['metadata']['name']}-0.{spec['subdomain']}:29500"
        assert (launch["nnodes"], launch["node_rank"], launch["nproc_per_node"]) == ("2", str(index), "8")
        assert launch["rdzv-conf"] == f"is_host={int(index == 0)}" and launch["rdzv-backend"] == "c10d"
        assert launch["worker"] == ["train", "stage2", "--profile=fast"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in spec["volumes"]}
    assert mounts["data"] == container_env(container)["LLAVA_KIT_HOME"] == "/data" and claims["data"] == "llava-kit-data"


def test_trainjob_nodes_launch_torchrun_from_the_runtime_variables():
    """Kubeflow Trainer's torch plugin sets PET_* on the `node` container (torchrun reads them too; the
    kit's explicit flags take their place)."""
    doc = render("trainjob.yaml")[0]
    trainer = doc["spec"]["trainer"]
    assert doc["spec"]["runtimeRef"]["name"] == "torch-distributed"
    assert (trainer["numNodes"], trainer["numProcPerNode"], trainer["image"]) == (2, 8, PARAMS["LLAVA_KIT_IMAGE"])
    for rank in (0, 1):
        env = {**container_env(trainer), "PET_NNODES": "2", "PET_NODE_RANK": str(rank), "PET_NPROC_PER_NODE": "8",
               "PET_MASTER_ADDR": "llava-kit-train-node-0-0.llava-kit-train", "PET_MASTER_PORT": "29400"}
        launch = node_launch([kubernetes_expand(arg, env) for arg in trainer["args"]], env)
        assert (launch["nnodes"], launch["node_rank"], launch["nproc_per_node"]) == ("2", str(rank), "8")
        assert launch["rdzv-endpoint"] == "llava-kit-train-node-0-0.llava-kit-train:29400"
        assert launch["rdzv-conf"] == f"is_host={int(rank == 0)}"
        assert launch["worker"] == ["train", "stage2", "--profile=fast"]
    patch = doc["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    pod = patch["template"]["spec"]["template"]["spec"]
    assert patch["name"] == pod["containers"][0]["name"] == "node"
    assert {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]} == {"/data", "/dev/shm"}
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "llava-kit-data"


def test_indexed_job_restarts_a_hung_node_and_fails_on_other_errors():
    """llava-kit's hang exit code counts as a retry (up to backoffLimit), a preemption does not count,
    anything else fails the job; collectives time out (NCCL settings of the kit's launcher)."""
    job = render("indexed-job.yaml")[1]["spec"]
    rules = job["podFailurePolicy"]["rules"]
    assert [r["action"] for r in rules] == ["Count", "Ignore", "FailJob"]
    assert rules[0]["onExitCodes"] == {"containerName": "node", "operator": "In", "values": [HANG_EXIT_CODE]}
    assert rules[1]["onPodConditions"] == [{"type": "DisruptionTarget"}]
    assert rules[2]["onExitCodes"] == {"containerName": "node", "operator": "NotIn", "values": [HANG_EXIT_CODE]}
    assert job["backoffLimit"] > 0 and job["template"]["spec"]["restartPolicy"] == "Never"
    for name in ("indexed-job.yaml", "trainjob.yaml"):
        doc = render(name)[-1]
        containers = doc["spec"]["template"]["spec"]["containers"] if name == "indexed-job.yaml" \
            else [doc["spec"]["trainer"]]
        assert NCCL_TIMEOUT_ENV.items() <= container_env(containers[0]).items(), name
