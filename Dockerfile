# syntax=docker/dockerfile:1
# made-serve image. BuildKit (Docker's default builder) builds only the stages the target needs,
# so MODEL_SOURCE=context never installs torch.
#
#   docker build -t made-serve:0.1.0 .                         # train + export the digits default
#   docker build --build-arg MODEL_SOURCE=context \
#                --build-arg ARTIFACT_DIR=artifacts/fm -t made-serve:fm .   # embed an exported artifact

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
# Where the served artifact comes from: "train" (the build stage trains it) or "context" (ARTIFACT_DIR).
ARG MODEL_SOURCE=train

# Only the files a package install needs; tests/test_runtime_stage.py installs exactly these.
FROM scratch AS source
COPY pyproject.toml README.md constraints.txt /src/
COPY model/ /src/model/
COPY service/ /src/service/

# Build stage: the `train` extra with CPU torch; trains and exports the embedded default model.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=source /src /src
WORKDIR /src
# constraints.txt pins torch==2.13.0, which the development machines find as a CPU wheel on local
# disk; anywhere else the CPU wheel (no CUDA libraries) is
#   pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
# so the image installs it that way first, and the pin keeps pip from replacing it with a CUDA
# build while it installs the rest of the `train` extra from PyPI.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --index-url "${TORCH_INDEX}" torch==2.13.0 \
    && pip install -c constraints.txt ".[train]"
RUN made-train --preset digits --out /build/run --quiet \
    && made-export /build/run/model.pt --out /build/artifact --product

FROM build AS model-train

FROM scratch AS model-context
ARG ARTIFACT_DIR=artifacts/digits
COPY ${ARTIFACT_DIR}/ /build/artifact/

# DL3006 (tag the image) does not apply: model-${MODEL_SOURCE} names one of the two stages above,
# which hadolint cannot resolve through the build argument.
# hadolint ignore=DL3006
FROM model-${MODEL_SOURCE} AS model

# Runtime stage: python, the `serve` extra (onnxruntime, no torch, no compiler) and the artifact.
FROM ${PYTHON_IMAGE} AS runtime
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The source is bind-mounted (rw: setuptools writes build files, which are discarded), so no
# copy of it stays in the image; pip compiles the installed modules, which stay read-only.
RUN --mount=type=bind,from=source,source=/src,target=/src,rw \
    --mount=type=cache,target=/root/.cache/pip \
    pip install "/src[serve]" \
    && groupadd --system --gid 10001 made \
    && useradd --system --uid 10001 --gid made --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin made
COPY --from=model /build/artifact /models/default
ENV MADE_MODEL_DIR=/models/default \
    MADE_HOST=0.0.0.0 \
    MADE_PORT=8000
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8000
# Healthy once the model is loaded and warmed up; python's urllib, so the image needs no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:' + os.environ.get('MADE_PORT', '8000') + '/readyz', timeout=2)"]
# Exec form: made-serve (uvicorn) is PID 1 and receives SIGTERM itself; uvicorn installs its own
# handler, stops accepting, drains in-flight requests within MADE_SHUTDOWN_GRACE_S and exits 0.
# Arguments after the image name go to made-serve, e.g. `docker run IMAGE --workers 2`.
ENTRYPOINT ["made-serve"]
