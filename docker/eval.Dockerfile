# llava-kit eval image: `llava-kit eval --backend vlmevalkit` on a GPU, with VLMEvalKit's code from the
# one pinned PyPI artifact (docker/vlmevalkit.txt: ms-vlmeval 0.0.20 and its sha256, ModelScope's packaging
# of VLMEvalKit 354a485c; the CPU test installs the same file), its requirements resolved by the lock.
# Same digest-pinned CUDA base as docker/Dockerfile (shared layers); no DeepSpeed or flash-attn needed:
# VLMEvalKit's LLaVA_OneVision_HF loads the HF-native checkpoint with plain from_pretrained.
# torch is the train image's: the same TORCH_VERSION (pyproject.toml's pin) from the same cu128 PyTorch
# index, with its matching torchvision (vlmeval.dataset imports it); the tests keep these ARGs equal to
# docker/Dockerfile's. docker/requirements-eval.txt steers VLMEvalKit's unpinned requirements: that
# torch/torchvision pair, rouge-score (imported, not listed), and llava-kit's pins.
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

# torch and torchvision first, from TORCH_CUDA_INDEX: their cu128 builds match the base's CUDA 12.8 (the
# build stops when torch's CUDA major differs), and torch's wheel pins its nvidia-* libraries and triton
# exactly. requirements-eval.lock (docker/lock.py eval) pins the rest of the resolved set, without
# torch, torchvision, triton, nvidia-* or cuda-* lines, and is used as constraints, so the checkout's own
# package metadata decides what is installed and the lock decides the versions. torch-pins.txt pins
# torch and torchvision to the versions just installed, so that step cannot replace them (their +cu128
# builds satisfy ==X, and pip keeps an installed distribution that satisfies).
# The optional build secret `pip_ca` is a CA bundle for hosts behind a TLS proxy; it is never stored.
ARG TORCH_VERSION=2.13.0
ARG TORCHVISION_VERSION=0.28.0
ARG TORCH_CUDA_INDEX=https://download.pytorch.org/whl/cu128
COPY docker/requirements-eval.txt docker/requirements-eval.lock docker/vlmevalkit.txt /tmp/
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    pip install --index-url "$TORCH_CUDA_INDEX" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" \
 && torch_cuda="$(python -c 'import torch; print(torch.version.cuda)')" \
 && if [ "${torch_cuda%%.*}" != "${CUDA_VERSION%%.*}" ]; then \
      echo "torch from $TORCH_CUDA_INDEX is built for CUDA $torch_cuda, the base's CUDA is $CUDA_VERSION" >&2; \
      exit 1; \
    fi \
 && printf 'torch==%s\ntorchvision==%s\n' "$TORCH_VERSION" "$TORCHVISION_VERSION" > /tmp/torch-pins.txt \
 && pip install --no-deps --require-hashes -r /tmp/vlmevalkit.txt \
 && pip install "$(grep -o '^ms-vlmeval==[^ ]*' /tmp/vlmevalkit.txt)" -r /tmp/requirements-eval.txt \
      -c /tmp/requirements-eval.lock -c /tmp/torch-pins.txt \
 && rm /tmp/requirements-eval.txt /tmp/requirements-eval.lock /tmp/torch-pins.txt /tmp/vlmevalkit.txt

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
# torch build was installed (expected: torch 2.13.0+cu128 cuda 12.8 torchvision 0.28.0+cu128).
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
