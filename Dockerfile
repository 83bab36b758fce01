# One image for every service (api, dashboard, worker); the compose file picks the command.
# CPU torch by default; for GPU workers build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124
FROM python:3.11-slim

ARG TORCH_SPEC="torch>=2.2"
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    LMC_DATA_DIR=/data LMC_ARTIFACT_ROOT=/artifacts

WORKDIR /srv/lmc
# torch first, from the index that matches the hardware; the project's own resolve then keeps it.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" "${TORCH_SPEC}"
COPY pyproject.toml README.md ./
COPY lmc_core ./lmc_core
COPY worker ./worker
# app/ carries app/dashboard/static/ (the CSS), which `pip install .` ships as package data.
COPY app ./app
RUN pip install --no-cache-dir .

RUN useradd --create-home --uid 1000 lmc && mkdir -p /data /artifacts && chown lmc /data /artifacts
USER lmc
EXPOSE 8000 8050
CMD ["uvicorn", "--factory", "app.api.main:create_app", "--host", "0.0.0.0", "--port", "8000"]
