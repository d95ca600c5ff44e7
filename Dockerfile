# vlbeam worker image for Dataflow (GPU or CPU workers) and Flink (DOCKER environment).
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/vlbeam:0.1.0 .
#   docker build --build-arg MODEL=Qwen/Qwen3-VL-2B-Instruct -t ... .   # bake weights in
# Without MODEL, pass --model gs://... or a hub id and let workers fetch it at start.
ARG PYTHON_VERSION=3.11
ARG BEAM_VERSION=2.77.0

# Beam's SDK harness boot binary, from the official SDK image of the same Beam version.
FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION} AS beam

FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG PYTHON_VERSION
ARG BEAM_VERSION
ARG MODEL=""
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 \
    VLBEAM_CACHE=/opt/vlbeam/cache HF_HOME=/opt/vlbeam/hf

# Python, poppler (for --pdf-renderer pdf2image), and nothing else from apt.
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
      python${PYTHON_VERSION} python${PYTHON_VERSION}-venv poppler-utils ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python${PYTHON_VERSION} -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Beam with the GCP extras Dataflow needs, pinned to the launcher's version.
COPY constraints.txt /src/constraints.txt
RUN pip install --upgrade pip \
 && pip install -c /src/constraints.txt "apache-beam[gcp]==${BEAM_VERSION}"

# vlbeam with every backend and input kind: torch (CUDA build), transformers, PyAV, pypdfium2,
# pdf2image, aiohttp. The same extras as `pip install -e '.[all]'`.
COPY pyproject.toml README.md /src/
COPY pipeline /src/pipeline
COPY transforms /src/transforms
COPY schemas /src/schemas
COPY runners /src/runners
COPY outputs /src/outputs
COPY api /src/api
RUN pip install -c /src/constraints.txt "/src[transformers,video,pdf2image,openai,duckdb,report,extract]" \
 && python -c "import vlbeam.pipeline.run, vlbeam.transforms.backends.qwen_transformers, av, pypdfium2, aiohttp"

# vLLM for --backend vllm, in its own environment beside Beam's (vLLM needs pillow>=13 and
# transformers<5.21, which Beam's environment can't hold), made by `uv tool install` (an
# isolated app environment with its own Python 3.12) and kept off PATH: vlbeam starts the
# server as `--server-python /opt/vllm-venv/bin/python`. `--build-arg VLLM_VERSION=` skips it.
ARG VLLM_VERSION=0.33.0
COPY --from=ghcr.io/astral-sh/uv:0.13.8 /uv /usr/local/bin/uv
RUN if [ -n "$VLLM_VERSION" ]; then \
      UV_TOOL_DIR=/opt/uv-tools UV_TOOL_BIN_DIR=/opt/uv-tools/bin \
      UV_PYTHON_INSTALL_DIR=/opt/uv-python UV_NO_CACHE=1 \
      uv tool install --python 3.12 "vllm==${VLLM_VERSION}" \
      && ln -s /opt/uv-tools/vllm /opt/vllm-venv \
      && /opt/vllm-venv/bin/python -c "import vllm"; \
    fi

# Optionally bake model weights into the image (workers then need no network at start).
RUN if [ -n "$MODEL" ]; then \
      python -c "from huggingface_hub import snapshot_download; snapshot_download('$MODEL')"; \
    fi

COPY --from=beam /opt/apache/beam /opt/apache/beam
ENTRYPOINT ["/opt/apache/beam/boot"]
