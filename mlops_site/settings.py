"""Settings for MLOps Site, read from the environment with embedded defaults.

Nothing needs configuring on a fresh machine: the database is SQLite, the Celery
broker is kombu's filesystem transport and MLflow is an SQLite store, all under
`var/` (moved with MLOPS_VAR_DIR). Setting DATABASE_URL, CELERY_BROKER_URL or
MLFLOW_TRACKING_URI switches to the real services. `.env.example` lists them all.
"""

import hmac
import os
from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from mlops_site.env import env

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env("MLOPS_VAR_DIR", str(BASE_DIR / "var"))).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env("DEBUG", True, cast=bool)
# Required once DEBUG is off; the embedded key is for local development only.
SECRET_KEY = env("SECRET_KEY", "insecure-local-development-key") if DEBUG else env("SECRET_KEY")
ALLOWED_HOSTS = env("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"], cast=list)
CSRF_TRUSTED_ORIGINS = env("CSRF_TRUSTED_ORIGINS", [], cast=list)

# HTTPS. Once DEBUG is off the site is HTTPS-only by default (`manage.py check --deploy` has nothing to say):
# plain HTTP is redirected, cookies are sent over HTTPS only, browsers are told to stick to HTTPS (HSTS).
# HTTPS_ONLY=0 turns the four off together (plain HTTP on localhost: `make serve`, compose); each is
# settable on its own too.
HTTPS_ONLY = env("HTTPS_ONLY", not DEBUG, cast=bool)
SECURE_SSL_REDIRECT = env("SECURE_SSL_REDIRECT", HTTPS_ONLY, cast=bool)
SESSION_COOKIE_SECURE = env("SESSION_COOKIE_SECURE", HTTPS_ONLY, cast=bool)
CSRF_COOKIE_SECURE = env("CSRF_COOKIE_SECURE", HTTPS_ONLY, cast=bool)
SECURE_HSTS_SECONDS = env("SECURE_HSTS_SECONDS", 31_536_000 if HTTPS_ONLY else 0, cast=int)
# HSTS for the subdomains too, and the header allows (does not make) a submission to browsers' preload
# list; set both to 0 if a subdomain must stay reachable over plain HTTP.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env("SECURE_HSTS_INCLUDE_SUBDOMAINS", HTTPS_ONLY, cast=bool)
SECURE_HSTS_PRELOAD = env("SECURE_HSTS_PRELOAD", HTTPS_ONLY, cast=bool)
# Behind a proxy that terminates TLS (nginx, an ingress controller) and sets X-Forwarded-Proto (stripping
# the client's): believe it, so a request that came in over HTTPS is not redirected again.
if env("SECURE_PROXY_SSL_HEADER", False, cast=bool):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Probes and Prometheus talk plain HTTP to the pod itself, never through the proxy: not redirected.
SECURE_REDIRECT_EXEMPT = [r"^health$", r"^v2/health/", r"^metrics$"]

INSTALLED_APPS = [
    "mlops_site.admin_config.MLOpsAdminConfig",  # django.contrib.admin with our site: name, order, home page
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "django_celery_results",
    "django_prometheus",
    # Our apps, lowest layer first (see the README's layout and the import-linter contract).
    "governance",
    "experiments",
    "registry",
    "serving",
    "monitoring",
    # The composition layer: commands that span apps (train --register, setup_demo).
    "mlops_site",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # A NUL byte in the path or query is a 400 before any view looks it up (PostgreSQL refuses NUL in text).
    "core.middleware.RefuseNulBytesMiddleware",
    # Serves the admin's static files under gunicorn, without a separate web server.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # The database down (OperationalError, InterfaceError) is a 503 with Retry-After, not a 500.
    "core.middleware.DatabaseUnavailableMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # Request id and client IP for the audit trail; X-Request-ID on every response.
    "governance.context.RequestContextMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "mlops_site.urls"
# Admin messages live in the session: the default cookie storage builds a signer on every request,
# prediction requests included, which costs more than an ONNX forest predicting one row.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "mlops_site.wsgi.application"

# --- Database: DATABASE_URL, or SQLite under var/ -------------------------------------------
DATABASE_URL = env("DATABASE_URL", "")
DATABASES = {
    "default": (
        dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)
        if DATABASE_URL
        else {"ENGINE": "django.db.backends.sqlite3", "NAME": VAR_DIR / "db.sqlite3"}
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        # web, worker and beat share the file: WAL lets readers run beside a writer, and
        # IMMEDIATE transactions take the write lock up front (waiting up to `timeout`)
        # instead of failing with "database is locked" when a reader turns writer.
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not :memory:, so a Celery worker process started by a test sees the test data.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# The git commit of the deployed code, for images built without .git; unset: asked of git.
SOURCE_COMMIT = env("SOURCE_COMMIT", "")

# --- Files --------------------------------------------------------------------------------
ARTIFACT_ROOT = Path(env("ARTIFACT_ROOT", str(VAR_DIR / "artifacts"))).resolve()
# Uploaded CSVs above this size are refused before they are parsed.
DATASET_UPLOAD_MAX_BYTES = env("DATASET_UPLOAD_MAX_BYTES", 50 * 1024 * 1024, cast=int)
# Larger CSVs are streamed to disk and profiled by a worker (202 with a status URL), so the web process
# never holds one in memory; smaller ones are profiled in the request (201 at once).
DATASET_INLINE_MAX_BYTES = env("DATASET_INLINE_MAX_BYTES", 2 * 1024 * 1024, cast=int)
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

# --- REST API -----------------------------------------------------------------------------
API_BASIC_AUTH = env("API_BASIC_AUTH", False, cast=bool)
# A client (address) failing to authenticate this many times in AUTH_FAILURE_WINDOW seconds gets 429 with
# Retry-After until the window ends; counted in the cache (CACHE_URL: shared by every process).
AUTH_FAILURE_LIMIT = env("AUTH_FAILURE_LIMIT", 20, cast=int)
AUTH_FAILURE_WINDOW = env("AUTH_FAILURE_WINDOW", 60, cast=int)
# Touched when a token is deleted or a user deactivated, deleted or given a new password: every process
# forgets the tokens it remembers on its next request. Shared by the web hosts like SERVING_SIGNAL_FILE.
AUTH_SIGNAL_FILE = env("AUTH_SIGNAL_FILE", "") or str(VAR_DIR / "serving" / "auth-generation")
# Unset: /metrics is open (scraped from a private network). Set: it needs "Authorization: Bearer <token>".
METRICS_TOKEN = env("METRICS_TOKEN", "")
REST_FRAMEWORK = {
    # Token first: a request without valid credentials gets 401 with "WWW-Authenticate: Token",
    # not 403 (DRF answers from the first class). A signed-in user of the admin still gets in by session.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "core.auth.CachedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
        # Basic auth sends the password with every request and costs a password hash each time: off unless
        # API_BASIC_AUTH is set (scripts should use a token).
        *(["core.auth.LimitedBasicAuthentication"] if API_BASIC_AUTH else []),
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "core.openapi.AreaAutoSchema",
    "EXCEPTION_HANDLER": "core.errors.api_exception_handler",
    # JSON nested too deeply or holding NUL characters is a 400, not a RecursionError or a database error.
    "DEFAULT_PARSER_CLASSES": [
        "core.parsers.SafeJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # A non-integer or out-of-range ?limit=/?offset= is a 400 (DRF ignores a bad offset, passes a huge limit on).
    "DEFAULT_PAGINATION_CLASS": "core.pagination.StrictLimitOffsetPagination",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "MLOps Site API",
    "DESCRIPTION": (
        "MLOps Site: train, register, promote, serve and watch scikit-learn models. Authenticate with a token "
        "(`Authorization: Token <key>`; `make run` prints one per demo role), a session or basic auth. Errors are "
        '`{"error": ..., "field": ...}` with 400, 403, 404, 409 or 422.'
    ),
    # One tag per area, in the order of a model's path (core.openapi tags each operation by its app).
    "TAGS": [
        {
            "name": "experiments",
            "description": "Datasets (built-in or uploaded CSV), experiments, training runs "
            "and sweeps, their metrics and metric histories; every run is mirrored to MLflow.",
        },
        {
            "name": "registry",
            "description": "Registered models and versions, promotion, rollback and traffic "
            "requests decided by a second person, with the governance policies' compliance.",
        },
        {
            "name": "serving",
            "description": "Predictions from the version in an environment (native, MLflow and "
            "Open Inference Protocol v2 formats), feedback with the true label, the prediction log.",
        },
        {
            "name": "crm",
            "description": "The CRM integration: look a customer up, predict, write the segment; "
            "batch refreshes of many customers.",
        },
        {
            "name": "monitoring",
            "description": "Hourly traffic, errors and latency, drift against the training "
            "data, live and estimated accuracy, per deployed version.",
        },
        {"name": "governance", "description": "The audit log (hash-chained, sealed), policies, webhooks and roles."},
    ],
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI served from the drf-spectacular-sidecar package, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # Every operation's error statuses (400/401/403/404/409/413/422/429/503) with the one error body.
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "core.openapi.error_responses"],
}

# --- Cache: the auth failure counters and DRF's throttles. CACHE_URL (redis://...) shares them between
# processes and hosts; unset, each process counts on its own (local use).
CACHE_URL = env("CACHE_URL", "")
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
        if CACHE_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

# --- Celery -------------------------------------------------------------------------------
# "filesystem://localhost/", not "filesystem://": kombu logs "No hostname was supplied" for a URL without one.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", "filesystem://localhost/")
if CELERY_BROKER_URL.startswith("filesystem:"):
    CELERY_BROKER_URL = "filesystem://localhost/"
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", "django-db")
CELERY_RESULT_EXTENDED = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_TRACK_STARTED = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Workers log through LOGGING below (LOG_FORMAT, the task's id on each line) instead of Celery's own setup.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE
# A training run longer than this is killed and marked FAILED (seconds).
TRAINING_TIME_LIMIT = env("TRAINING_TIME_LIMIT", 3600, cast=int)
# A RUNNING run whose heartbeat is older than this is considered lost with its worker.
RUN_HEARTBEAT_TIMEOUT = env("RUN_HEARTBEAT_TIMEOUT", TRAINING_TIME_LIMIT + 300, cast=int)
# A run still QUEUED this long after its launch never reached a worker (its broker message was lost, e.g. a
# Redis restart without persistence): the reaper fails it with the reason. Longer than a busy queue's wait.
RUN_QUEUED_TIMEOUT = env("RUN_QUEUED_TIMEOUT", 24 * 3600, cast=int)
# How many times a run interrupted by a lost worker is started again before it is marked FAILED.
RUN_MAX_ATTEMPTS = env("RUN_MAX_ATTEMPTS", 2, cast=int)

# --- MLflow -------------------------------------------------------------------------------
MLFLOW_TRACKING_URI = env("MLFLOW_TRACKING_URI", f"sqlite:///{VAR_DIR / 'mlflow.db'}")
# Where new MLflow experiments keep their artifacts when the store is local; a remote
# tracking server decides this itself, so it stays unset there.
MLFLOW_ARTIFACT_LOCATION = env(
    "MLFLOW_ARTIFACT_LOCATION",
    (VAR_DIR / "mlflow-artifacts").as_uri() if MLFLOW_TRACKING_URI.startswith("sqlite:") else "",
)
# Off: nothing is copied to MLflow (runs, registered versions, aliases), for teams that do not use it.
MLFLOW_MIRROR_ENABLED = env("MLFLOW_MIRROR_ENABLED", True, cast=bool)
# An unreachable MLflow server must not hold a run for minutes: few retries, short timeout.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

# --- Demo ---------------------------------------------------------------------------------
DEMO_ADMIN_USERNAME = env("DEMO_ADMIN_USERNAME", "admin")
DEMO_ADMIN_PASSWORD = env("DEMO_ADMIN_PASSWORD", "admin-change-me")

# json: one JSON object a line with the request id (mlops_site.logs), for a log pipeline; text: for a person.
LOG_FORMAT = env("LOG_FORMAT", "") or ("text" if DEBUG else "json")
if LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or text, not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "forbidden_without_traceback": {"()": "core.logfilters.ForbiddenWithoutTraceback"},
        "request_id": {"()": "mlops_site.logs.RequestIdFilter"},
    },
    "formatters": {
        "json": {"()": "mlops_site.logs.JsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["request_id"], "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {
        "alembic": {"level": "WARNING"},
        "mlflow": {"level": "WARNING"},
        "django.request": {"filters": ["forbidden_without_traceback"]},
    },
}

# --- Periodic work: declared here, editable in the admin (django-celery-beat) -------------------
CELERY_BEAT_SCHEDULE = {
    # An MLflow outage leaves runs un-mirrored; five minutes keeps the MLflow UI close behind
    # without hammering a server that is down.
    "mirror-pending-runs-to-mlflow": {"task": "experiments.mirror_pending_runs", "schedule": 300.0},
    # A worker killed mid-run stops the heartbeat; once it is older than RUN_HEARTBEAT_TIMEOUT the run
    # is failed with the reason; so is a run still QUEUED RUN_QUEUED_TIMEOUT after launch (its message was lost).
    # Every two minutes: lost runs show up promptly, the query is cheap.
    "reap-lost-runs": {"task": "experiments.reap_lost_runs", "schedule": 120.0},
    # Registrations and stage changes made while MLflow was down: aliases catch up within five minutes.
    "mirror-pending-models-to-mlflow": {"task": "registry.mirror_pending_models", "schedule": 300.0},
    # Webhook deliveries whose task never ran (broker down at commit); retries with backoff are the
    # delivery task's own job, this only catches the lost ones.
    "retry-stalled-webhooks": {"task": "governance.retry_stalled_webhooks", "schedule": 300.0},
    # The head of the audit chain leaves the database once a day (an audit.anchored webhook event and a
    # log line), so a log cut short or rewritten since fails `verify_audit_log --expect-head`.
    "anchor-audit-head": {"task": "governance.anchor_audit_head", "schedule": crontab(minute=5, hour=0)},
    # The CRM's segments follow the features its customers had by the end of the business day: the
    # customers changed since the last refresh (all of them after a new version or mapping), at night
    # when the CRM is quiet. The same task resumes a refresh whose worker died.
    "crm-refresh-segments": {"task": "serving.crm_refresh_scheduled", "schedule": crontab(hour=2, minute=30)},
    # Five minutes past each hour: the hour just ended is complete (the log's writer flushes every half
    # second), so every monitored model gets its hourly aggregates and sketches, then its drift over the
    # last MONITORING_DRIFT_WINDOW. One task per (job, model) on the monitoring queue.
    "monitoring-hourly": {"task": "monitoring.schedule_jobs", "schedule": crontab(minute=5)},
    # Once a day, at a quiet time: drop the prediction log's days older than PREDICTION_LOG_RETENTION_DAYS
    # (whole partitions on PostgreSQL) and make the next week's partitions before rows arrive for them.
    "prediction-log-retention": {"task": "serving.prediction_log_retention", "schedule": crontab(minute=20, hour=3)},
    # Alert rules are evaluated after each model's hourly monitoring run (the last link of its chain); this
    # catches what that misses: a silence that ended, a reminder due, a model without a monitoring run.
    "evaluate-alerts": {"task": "monitoring.evaluate_alerts", "schedule": crontab(minute=35)},
    # A retraining's run trains on the training queue; every two minutes the finished ones are registered
    # (if they pass the gate) and their promotion requests opened. Cheap: a query on open retrainings.
    "advance-retrainings": {"task": "monitoring.advance_retrainings", "schedule": 120.0},
    # E-mails about alerts whose task was lost (broker down at commit) are queued again.
    "retry-stalled-alert-emails": {"task": "monitoring.retry_stalled_alert_emails", "schedule": 300.0},
}

# --- Serving ------------------------------------------------------------------------------
# The ONNX form of a version is kept only if no class probability differs from scikit-learn's by more.
ONNX_MAX_ABS_DIFF = env("ONNX_MAX_ABS_DIFF", 1e-5, cast=float)
# The model POST /predict and GET /health answer for.
SERVING_DEFAULT_MODEL = env("SERVING_DEFAULT_MODEL", "churn")
# Prediction APIs need a token (or a session) unless this is off (local use).
SERVING_REQUIRE_AUTH = env("SERVING_REQUIRE_AUTH", True, cast=bool)
# Per token (or per client address without one), in DRF's rate syntax.
SERVING_THROTTLE_RATE = env("SERVING_THROTTLE_RATE", "5000/second")
SERVING_MAX_ROWS = env("SERVING_MAX_ROWS", 10_000, cast=int)
SERVING_MAX_BODY_BYTES = env("SERVING_MAX_BODY_BYTES", 20 * 1024 * 1024, cast=int)
DATA_UPLOAD_MAX_MEMORY_SIZE = SERVING_MAX_BODY_BYTES
# Touched on every deployment change; each serving process stats it per request and reloads when it moves.
SERVING_SIGNAL_FILE = env("SERVING_SIGNAL_FILE", str(VAR_DIR / "serving" / "generation"))
# The prediction log: batched by a thread per process, off the request path.
PREDICTION_LOG_ENABLED = env("PREDICTION_LOG_ENABLED", True, cast=bool)
PREDICTION_LOG_SYNC = env("PREDICTION_LOG_SYNC", False, cast=bool)
PREDICTION_LOG_FLUSH_SECONDS = env("PREDICTION_LOG_FLUSH_SECONDS", 0.5, cast=float)
PREDICTION_LOG_BATCH = env("PREDICTION_LOG_BATCH", 2000, cast=int)
# Rows a worker's log may hold unwritten; past it the requests write batches themselves (backpressure).
PREDICTION_LOG_QUEUE_MAX = env("PREDICTION_LOG_QUEUE_MAX", 50_000, cast=int)
# A batch the database will not take (an outage, a restart) is kept on local disk here and written, in order,
# when it returns; at most PREDICTION_LOG_SPILL_MAX_BYTES (past that, or on a full disk, rows are lost and
# counted in prediction_log_rows_lost_total). Local to each host: give each web host its own directory.
PREDICTION_LOG_SPILL_DIR = env("PREDICTION_LOG_SPILL_DIR", "") or str(VAR_DIR / "predlog-spill")
PREDICTION_LOG_SPILL_MAX_BYTES = env("PREDICTION_LOG_SPILL_MAX_BYTES", 512 * 1024 * 1024, cast=int)
# Raw log rows are kept this many days (on PostgreSQL a day is one partition, dropped whole); monitoring's
# hourly aggregates and sketches are kept beyond.
PREDICTION_LOG_RETENTION_DAYS = env("PREDICTION_LOG_RETENTION_DAYS", 30, cast=int)

# --- Monitoring ---------------------------------------------------------------------------------
# A drift window with fewer rows says "not enough data" instead of a verdict.
MONITORING_DRIFT_MIN_ROWS = env("MONITORING_DRIFT_MIN_ROWS", 100, cast=int)
# The window the scheduled drift job checks (exact computation on the raw rows).
MONITORING_DRIFT_WINDOW = env("MONITORING_DRIFT_WINDOW", "24h")
# The hourly job recomputes this many hours before its watermark, so rows logged late land in their hour.
MONITORING_LATE_HOURS = env("MONITORING_LATE_HOURS", 3, cast=int)
# A monitoring job running longer is killed (seconds); on SQLite its lease lapses after it.
MONITORING_JOB_TIME_LIMIT = env("MONITORING_JOB_TIME_LIMIT", 1800, cast=int)

# --- Alerts -------------------------------------------------------------------------------------
# Who gets alert e-mails when a rule names nobody (comma-separated); empty: no e-mail, webhooks only.
ALERT_EMAIL_RECIPIENTS = env("ALERT_EMAIL_RECIPIENTS", [], cast=list)
# An e-mail is tried this many times, waiting ALERT_EMAIL_RETRY_BASE_SECONDS × 2^(attempt-1) between tries,
# on the `alerts` queue (webhook deliveries of alert events go there too).
ALERT_EMAIL_MAX_ATTEMPTS = env("ALERT_EMAIL_MAX_ATTEMPTS", 5, cast=int)
ALERT_EMAIL_RETRY_BASE_SECONDS = env("ALERT_EMAIL_RETRY_BASE_SECONDS", 30, cast=int)
# Links in notifications point here.
SITE_URL = env("SITE_URL", "http://127.0.0.1:8000")
# Django's mail: the console backend prints e-mails (make run); set EMAIL_BACKEND and EMAIL_HOST for SMTP.
EMAIL_BACKEND = env("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", "localhost")
EMAIL_PORT = env("EMAIL_PORT", 25, cast=int)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env("EMAIL_USE_TLS", False, cast=bool)
EMAIL_TIMEOUT = env("EMAIL_TIMEOUT", 10, cast=int)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "mlops-site@localhost")

# --- Audit log ------------------------------------------------------------------------------
# The key of the audit chain's HMAC seals. Keep it out of the database and its backups (the environment,
# a secret store): whoever holds the database but not the key cannot rewrite the log unnoticed. Unset, it
# is derived from SECRET_KEY, which is fine for local use only.
AUDIT_LOG_KEY = env("AUDIT_LOG_KEY", "") or hmac.new(SECRET_KEY.encode(), b"mlops-site audit log", "sha256").hexdigest()

# --- Webhooks -----------------------------------------------------------------------------
# A delivery is tried this many times, waiting WEBHOOK_RETRY_BASE_SECONDS × 2^(attempt-1) between tries.
WEBHOOK_MAX_ATTEMPTS = env("WEBHOOK_MAX_ATTEMPTS", 5, cast=int)
WEBHOOK_RETRY_BASE_SECONDS = env("WEBHOOK_RETRY_BASE_SECONDS", 30, cast=int)
WEBHOOK_TIMEOUT_SECONDS = env("WEBHOOK_TIMEOUT_SECONDS", 10, cast=int)

# --- CRM ----------------------------------------------------------------------------------
# Unset: the CRM is a table of ours (seeded by `make run`). Set: an external CRM over HTTP speaking the
# contract in the README (CRM section), with CRM_TOKEN sent as "Authorization: Bearer".
CRM_URL = env("CRM_URL", "")
CRM_TOKEN = env("CRM_TOKEN", "")
# Each call to an external CRM: its timeout, how many times a 5xx, 429 or connection error is retried,
# and the first wait between tries (doubled after each).
CRM_TIMEOUT_SECONDS = env("CRM_TIMEOUT_SECONDS", 5.0, cast=float)
CRM_RETRIES = env("CRM_RETRIES", 3, cast=int)
CRM_RETRY_BACKOFF_SECONDS = env("CRM_RETRY_BACKOFF_SECONDS", 0.5, cast=float)
# The refresh job's calls to an external CRM per second, at most (0: unbounded), and customers per page.
CRM_RATE_LIMIT = env("CRM_RATE_LIMIT", 20.0, cast=float)
CRM_HTTP_PAGE_SIZE = env("CRM_HTTP_PAGE_SIZE", 200, cast=int)
# Customers of the embedded CRM predicted as one batch by the refresh job.
CRM_BATCH_SIZE = env("CRM_BATCH_SIZE", 5000, cast=int)
# A refresh is stopped by this time limit (and can be resumed); one that did not report progress for
# CRM_REFRESH_HEARTBEAT_TIMEOUT seconds is taken as lost with its worker, and the beat task resumes it.
CRM_REFRESH_TIME_LIMIT = env("CRM_REFRESH_TIME_LIMIT", 6 * 3600, cast=int)
CRM_REFRESH_HEARTBEAT_TIMEOUT = env("CRM_REFRESH_HEARTBEAT_TIMEOUT", 900, cast=int)
# Synthetic customers `make run` (setup_demo) puts in an empty embedded CRM.
CRM_DEMO_CUSTOMERS = env("CRM_DEMO_CUSTOMERS", 3000, cast=int)
