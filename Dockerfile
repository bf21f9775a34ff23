# One image for the api, worker, beat, migrate and aggregator services (docker-compose.yml).
# CPU PyTorch by default; pass --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124
# (or another CUDA index) to build for GPUs.
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    MEDVEC_DATA_DIR=/data

RUN useradd --create-home --uid 10001 medvec \
    && mkdir -p /data && chown medvec:medvec /data

WORKDIR /srv/medvec
RUN pip install --index-url "${TORCH_INDEX}" "torch==2.14.1" "torchvision==0.29.1"
COPY pyproject.toml README.md ./
COPY medvec ./medvec
COPY app ./app
COPY worker ./worker
COPY hospital_cli ./hospital_cli
COPY migrations ./migrations
COPY aggregator ./aggregator
RUN pip install ".[worker]"

USER medvec
VOLUME ["/data"]
EXPOSE 8000
CMD ["medvec-server", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-worker"]
