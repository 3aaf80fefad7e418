""".env.example lists every environment variable the code reads, so it cannot drift from the settings again."""

import re
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[1]
# env("NAME", ...) in settings.py; os.environ.get / os.environ[...] / os.getenv / _env_int in the entry points.
READS = re.compile(
    r"""(?:\benv|_env_int|os\.environ\.get|os\.environ\.setdefault|os\.getenv|os\.environ\[)"""
    r"""\(?\s*["']([A-Z][A-Z0-9_]+)["']"""
)
# Set by the code for its own children or for libraries, not read as a setting.
NOT_SETTINGS = {"DJANGO_SETTINGS_MODULE", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"}


def _code_files():
    """The platform's code: not the tests, nor the developer tools beside it (bench/, tools/ read their own knobs)."""
    for path in BASE_DIR.rglob("*.py"):
        parts = path.relative_to(BASE_DIR).parts
        if parts[0] in {".venv", "tests", "bench", "tools", "var", "node_modules"} or "migrations" in parts:
            continue
        yield path


def test_every_variable_the_code_reads_is_in_env_example():
    read = {}
    for path in _code_files():
        for name in READS.findall(path.read_text()):
            read.setdefault(name, path.relative_to(BASE_DIR))
    listed = set(re.findall(r"^#?\s?([A-Z][A-Z0-9_]+)=", (BASE_DIR / ".env.example").read_text(), flags=re.M))
    assert len(read) > 50, "the scan finds the settings"
    missing = {name: str(path) for name, path in read.items() if name not in listed and name not in NOT_SETTINGS}
    assert not missing, f"read by the code, missing from .env.example: {missing}"


def test_env_example_lists_nothing_the_code_does_not_read():
    read = set()
    for path in _code_files():
        read.update(READS.findall(path.read_text()))
    listed = set(re.findall(r"^#?\s?([A-Z][A-Z0-9_]+)=", (BASE_DIR / ".env.example").read_text(), flags=re.M))
    assert not listed - read, f"in .env.example but read nowhere: {sorted(listed - read)}"
