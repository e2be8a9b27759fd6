# syntax=docker/dockerfile:1
# daimon-node: the node daemon only. No `train` extra, so no torch (DESIGN §7): the node
# computes f_int with numpy and never imports torch.
#
#   docker build -t daimon-node .
#   docker run --rm -v "$PWD/mynode:/data" -p 4001:4001 -p 8545:8545 daimon-node
#
# /data must hold node.toml (or pass `start --config /data/<file>.toml`) whose paths are under
# /data, whose p2p.listen is /ip4/0.0.0.0/tcp/4001 and whose rpc.host is 0.0.0.0.
# docker-compose.yml runs a 4-node testnet from this image.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: compile what has no wheel (libp2p's fastecdsa needs gcc and GMP) ----
FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential libgmp-dev \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/daimon
WORKDIR /src
COPY . .
# `pip install .`, never `.[train]`: the image carries no torch.
RUN /opt/daimon/bin/pip install --upgrade pip \
 && /opt/daimon/bin/pip install . \
 && ! /opt/daimon/bin/python -c "import torch" 2>/dev/null

# ---- runtime ----
FROM ${PYTHON_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgmp10 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1000 daimon \
 && useradd --uid 1000 --gid daimon --home-dir /home/daimon --create-home --shell /usr/sbin/nologin daimon \
 && mkdir -p /data && chown daimon:daimon /data
COPY --from=build /opt/daimon /opt/daimon
ENV PATH=/opt/daimon/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DAIMON_RPC_PORT=8545
USER daimon
WORKDIR /data
VOLUME ["/data"]
# 4001: libp2p (TCP); 8545: JSON-RPC over HTTP, /ws, /health, /metrics
EXPOSE 4001/tcp 8545/tcp
# /health answers 200 when the node is healthy, 503 otherwise (urlopen raises on 503).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('DAIMON_RPC_PORT', '8545'), timeout=4)"]
ENTRYPOINT ["daimon-node"]
CMD ["start", "--config", "/data/node.toml"]
