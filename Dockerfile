# syntax=docker/dockerfile:1
# Two images from one file:
#   api    - the HTTP API and the migration step: no torch, small and quick to start
#   worker - the Celery worker and the training core: torch + PyTorch Geometric
# docker compose builds both (see docker-compose.yml); by hand:
#   docker build --target api -t trainctl-api .
#   docker build --target worker -t trainctl-worker .
#   docker build --target worker --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t trainctl-worker-cpu .

ARG PYTHON_VERSION=3.11

# --- base: Python, an unprivileged user, the service's state directory --------------------------
FROM python:${PYTHON_VERSION}-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TRAINCTL_HOME=/var/lib/trainctl
RUN useradd --create-home --uid 1000 trainctl \
    && mkdir -p /var/lib/trainctl /data \
    && chown trainctl:trainctl /var/lib/trainctl
WORKDIR /app

# --- requirements: the API's dependencies, read from pyproject.toml minus the training stack ----
FROM base AS requirements
COPY pyproject.toml ./
RUN python - <<'PY' > /requirements-api.txt
import re
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
training_only = {"torch", "torch-geometric", "torch_geometric", "torchmetrics", "tensorboard",
                 "rdkit", "scipy", "scikit-learn"}
for dep in project["dependencies"] + project["optional-dependencies"]["service"]:
    name = re.split(r"[<>=!~\[ ;]", dep, maxsplit=1)[0].strip().lower()
    if name not in training_only:
        print(dep)
PY

# --- source: the project's files, copied once and shared by both images ------------------------
FROM scratch AS source
COPY pyproject.toml README.md alembic.ini /app/
COPY migrations /app/migrations
COPY core /app/core
COPY store /app/store
COPY api /app/api
COPY worker /app/worker
COPY cli /app/cli
COPY examples /app/examples

# --- api ----------------------------------------------------------------------------------------
FROM base AS api
COPY --from=requirements /requirements-api.txt /tmp/requirements-api.txt
RUN pip install -r /tmp/requirements-api.txt
COPY --from=source /app ./
# The API's dependencies are installed above; --no-deps keeps torch out of this image.
RUN pip install --no-deps -e . \
    && python -c "import api.main, cli.main, sys; assert 'torch' not in sys.modules"
USER trainctl
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=6 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"
CMD ["trainctl", "api", "--host", "0.0.0.0", "--port", "8000"]

# --- worker -------------------------------------------------------------------------------------
FROM base AS worker
# PyPI's Linux torch wheels bring CUDA; pass https://download.pytorch.org/whl/cpu for a CPU image.
ARG TORCH_INDEX_URL=https://pypi.org/simple
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print(next(d for d in deps if d.startswith('torch>') or d.startswith('torch=')))" > /tmp/torch.txt \
    && pip install --index-url "${TORCH_INDEX_URL}" -r /tmp/torch.txt
COPY --from=source /app ./
RUN pip install -e ".[service]"
USER trainctl
CMD ["trainctl", "worker"]
