# Worker image for pxflow's Prefect deployments (docs/deploy.md). Two variants from one file:
#
#   docker build -t pxflow:cpu .                                          # CPU: paddlepaddle + onnxruntime
#   docker build -t pxflow:cuda --build-arg VARIANT=cuda \
#       --build-arg BASE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 .   # GPU: paddlepaddle-gpu + onnxruntime-gpu
#
# The flows are imported from the installed package (module entrypoints), so the image needs no checkout at run
# time and no working directory. Extras: EXTRAS="dask,ray" adds the dask and ray runners.
ARG BASE=python:3.11-slim
FROM ${BASE}

ARG VARIANT=cpu
ARG EXTRAS=dask
# Paddle's GPU wheels are not on PyPI for 3.x: they come from Paddle's own index, per CUDA version
ARG PADDLE_GPU_INDEX=https://www.paddlepaddle.org.cn/packages/stable/cu126/
ARG PADDLE_VERSION=3.2.2

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false

# the CUDA base images carry no Python; the slim one has it already
RUN if ! command -v python3 >/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/pxflow
ENV PATH=/opt/pxflow/bin:$PATH

WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY pxflow ./pxflow
COPY pipelines ./pipelines
COPY tasks ./tasks
COPY flows ./flows
COPY configs ./configs
RUN pip install ".[${EXTRAS}]" \
    && if [ "$VARIANT" = "cuda" ]; then \
        # onnxruntime and onnxruntime-gpu both install the `onnxruntime` module: keep only the GPU one; the same for
        # paddlepaddle / paddlepaddle-gpu (`paddle`). `pip check` then names the swapped CPU packages, by design.
        pip uninstall -y onnxruntime paddlepaddle \
        && pip install "onnxruntime-gpu>=1.18" \
        && pip install "paddlepaddle-gpu==${PADDLE_VERSION}" -i "${PADDLE_GPU_INDEX}" ; \
    fi \
    && python3 -c "import pxflow.flows.annotate, pxflow.flows.groups" \
    && rm -rf /src

WORKDIR /work
# Prefect workers start flow runs with their own command; this default is for trying the image by hand.
CMD ["pxflow", "--help"]
