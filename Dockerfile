# One image for web (gunicorn), worker and beat; docker-compose.yml picks the command.
FROM python:3.11-slim

# The image has no .git: pass the commit so runs record the code they ran
# (docker build --build-arg SOURCE_COMMIT=$(git rev-parse HEAD) .).
ARG SOURCE_COMMIT=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 SOURCE_COMMIT=${SOURCE_COMMIT} \
    MLOPS_VAR_DIR=/srv/mlops/var ARTIFACT_ROOT=/srv/mlops/artifacts
WORKDIR /app

COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .
RUN DEBUG=1 python manage.py collectstatic --noinput \
    && useradd --create-home --uid 1000 mlops && mkdir -p /srv/mlops && chown -R mlops /srv/mlops
USER mlops

EXPOSE 8000
# gunicorn.conf.py: gthread workers with keep-alive, Prometheus multiprocess mode, the prediction log
# flushed when a worker stops. GUNICORN_WORKERS sets the count (one per core suits predictions).
ENV GUNICORN_WORKERS=4
CMD ["gunicorn", "-c", "gunicorn.conf.py", "mlops_site.wsgi:application"]
