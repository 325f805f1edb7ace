# llava-kit eval image: `llava-kit eval --backend vlmevalkit` on a GPU, with VLMEvalKit checked out at
# a pinned commit (it is not on PyPI) and installed with its own requirements.txt.
# Same digest-pinned CUDA base as docker/Dockerfile (shared layers); no DeepSpeed or flash-attn needed:
# VLMEvalKit's LLaVA_OneVision_HF loads the HF-native checkpoint with plain from_pretrained.
# docker/requirements-eval.txt steers VLMEvalKit's unpinned requirements: a matching torch/torchvision
# pair (vlmeval.dataset imports torchvision), rouge-score (imported, not listed), and llava-kit's pins.
ARG CUDA_BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04@sha256:ad6d59a3bbf3e82c1c849c9ac09cfc2a3e0bbb8655042fd899be6681b3fe2a85

FROM ${CUDA_BASE_IMAGE}
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

# A single commit, fetched by hash, not a branch that moves.
ARG VLMEVALKIT_REPO=https://github.com/open-compass/VLMEvalKit.git
ARG VLMEVALKIT_COMMIT=e8e78f05c3080fe28154f2130321f17951c3be94
WORKDIR /opt/VLMEvalKit
RUN git init --quiet . \
 && git remote add origin "$VLMEVALKIT_REPO" \
 && git fetch --quiet --depth 1 origin "$VLMEVALKIT_COMMIT" \
 && git checkout --quiet FETCH_HEAD \
 && test "$(git rev-parse HEAD)" = "$VLMEVALKIT_COMMIT" \
 && rm -rf .git

# requirements-eval.lock (docker/lock.py eval) pins the whole resolved set and is used as constraints,
# so the checkout's own requirements.txt decides what is installed and the lock decides the versions.
COPY docker/requirements-eval.txt docker/requirements-eval.lock /tmp/
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    pip install -r /opt/VLMEvalKit/requirements.txt -r /tmp/requirements-eval.txt -c /tmp/requirements-eval.lock \
 && pip install --no-deps -e /opt/VLMEvalKit \
 && rm /tmp/requirements-eval.txt /tmp/requirements-eval.lock

# llava-kit itself, editable and without dependencies (they came from the lock above): the package
# finds stages/, eval/ and its data files next to itself, so the image keeps the repository layout.
WORKDIR /opt/llava-kit
COPY pyproject.toml README.md* ./
COPY llava ./llava
RUN pip install --no-deps --no-build-isolation -e . \
 && rm -rf build

# litellm (a VLMEvalKit requirement) fetches a cost map at import unless told to use its local copy.
ENV LITELLM_LOCAL_MODEL_COST_MAP=True \
    LMUData=/data/LMUData \
    VLMEVALKIT_COMMIT=${VLMEVALKIT_COMMIT}

# Fail the build when vlmeval, torchvision or llava-kit do not import together.
RUN python -c "import torch, torchvision, vlmeval, vlmeval.dataset, rouge_score, llava.cli; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" \
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
