# llava-kit eval image: `llava-kit eval --backend vlmevalkit` on a GPU, with VLMEvalKit's code from the
# one pinned PyPI artifact (docker/vlmevalkit.txt: ms-vlmeval 0.0.20 and its sha256, ModelScope's packaging
# of VLMEvalKit 354a485c; the CPU test installs the same file), its requirements resolved by the lock.
# Same digest-pinned Debian bookworm base as docker/Dockerfile; no DeepSpeed or flash-attn needed:
# VLMEvalKit's LLaVA_OneVision_HF loads the HF-native checkpoint with plain from_pretrained.
# torch is the train image's: torch 2.13.0's CUDA 13.0 build from PyPI (driver R580+), with its paired
# torchvision 0.28.0 (vlmeval.dataset imports it; llava/resources/torch_cuda.yaml), both in
# docker/requirements-eval.lock with the nvidia-* libraries they pin and every file's sha256.
ARG BASE_IMAGE=debian:bookworm-slim@sha256:88200866dfff7ea7f5cbcb6ec7c8a701889efe6fe859fe64d6990e4b07ea4171

FROM ${BASE_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# libgl1/libglib2.0-0: opencv-python; libcairo2: cairosvg; poppler-utils: pdf2image. Versions come from
# the digest-pinned base's release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3.11 python3.11-venv python3.11-dev build-essential ca-certificates git passwd \
      libgl1 libglib2.0-0 libcairo2 poppler-utils \
 && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1
RUN python3.11 -m venv "$VIRTUAL_ENV"

# requirements-eval.lock (docker/lock.py eval) is the whole resolved set of VLMEvalKit's requirements with
# docker/requirements-eval.txt (torch, torchvision, rouge-score, llava-kit's pins), hashed; then the
# pinned VLMEvalKit artifact alone, with --no-deps (its requirements are the lock).
# The optional build secret `pip_ca` is a CA bundle for hosts behind a TLS proxy; it is never stored.
COPY docker/requirements-eval.lock docker/vlmevalkit.txt /tmp/
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    pip install --require-hashes -r /tmp/requirements-eval.lock \
 && pip install --no-deps --require-hashes -r /tmp/vlmevalkit.txt \
 && rm /tmp/requirements-eval.lock /tmp/vlmevalkit.txt

# llava-kit itself, editable and without dependencies (they came from the lock above): the package
# finds stages/, eval/ and its data files next to itself, so the image keeps the repository layout.
WORKDIR /opt/llava-kit
COPY pyproject.toml README.md* ./
COPY llava ./llava
RUN pip install --no-deps --no-build-isolation -e . \
 && rm -rf build

# litellm (a VLMEvalKit requirement) fetches a cost map at import unless told to use its local copy.
ENV LITELLM_LOCAL_MODEL_COST_MAP=True \
    LMUData=/data/LMUData

# Fail the build when vlmeval, torchvision or llava-kit do not import together; the log shows which
# torch build was installed (expected: torch 2.13.0+cu130 cuda 13.0 torchvision 0.28.0+cu130).
RUN python -c "import torch, torchvision; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'torchvision', torchvision.__version__)" \
 && python -c "import vlmeval, vlmeval.dataset, rouge_score, llava.cli" \
 && llava-kit --help > /dev/null

ARG UID=1000
ARG GID=1000
RUN groupadd --gid "$GID" llava \
 && useradd --uid "$UID" --gid "$GID" --create-home --shell /bin/bash llava \
 && mkdir -p /data/checkpoints /data/runs /data/hf-cache /data/LMUData \
 && chown -R llava:llava /data

COPY stages ./stages
COPY eval ./eval

ENV LLAVA_KIT_HOME=/data \
    LLAVA_KIT_MODELS=/data/models \
    LLAVA_KIT_DATASETS=/data/datasets \
    LLAVA_KIT_CHECKPOINTS=/data/checkpoints \
    LLAVA_KIT_RUNS=/data/runs \
    HF_HOME=/data/hf-cache
USER ${UID}:${GID}
ENTRYPOINT ["llava-kit"]
CMD ["--help"]
