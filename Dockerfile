# One image for web (granian, serve.py), worker and beat; docker-compose.yml picks the command.
# Debian 13 (trixie): its postgresql-client (17) dumps and restores the PostgreSQL 16 of compose
# (`manage.py backup`/`restore` run pg_dump and pg_restore, which refuse a server newer than themselves).
FROM python:3.11-slim-trixie

# The image has no .git: pass the commit so runs record the code they ran
# (docker build --build-arg SOURCE_COMMIT=$(git rev-parse HEAD) .).
ARG SOURCE_COMMIT=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 SOURCE_COMMIT=${SOURCE_COMMIT} \
    MLOPS_VAR_DIR=/srv/mlops/var ARTIFACT_ROOT=/srv/mlops/artifacts
WORKDIR /app

RUN apt-get update && apt-get install -y --no-install-recommends postgresql-client \
    && rm -rf /var/lib/apt/lists/*

COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .
RUN DEBUG=1 python manage.py collectstatic --noinput \
    && useradd --create-home --uid 1000 mlops && mkdir -p /srv/mlops && chown -R mlops /srv/mlops
USER mlops

# 8000: the web server; 9808: a worker's metrics (WORKER_METRICS_PORT), for Prometheus.
EXPOSE 8000 9808
# serve.py: granian with WEB_WORKERS processes (one per core suits predictions), keep-alive spread over
# them, Prometheus multiprocess mode, the prediction log flushed when a worker stops, DEBUG off.
ENV WEB_WORKERS=4 PORT=8000
CMD ["python", "serve.py"]
