"""The seams carry types: every public function of a `services` or `selectors` module annotates each
parameter and its return. The check reads the source with `ast`, so it costs no import."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATTERNS = ("**/services/*.py", "**/services.py", "**/selectors.py", "**/selectors/*.py")


def _modules():
    """The services and selectors of every app, nested ones too (serving/crm)."""
    apps = sorted(path for path in ROOT.iterdir() if (path / "__init__.py").exists() and path.name != "tests")
    for app in apps:
        for pattern in PATTERNS:
            yield from sorted(app.glob(pattern))


def _unannotated(path):
    """(line, name, parameters without an annotation, whether the return lacks one) for each public function."""
    for node in ast.parse(path.read_text()).body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.name.startswith("_"):
            continue
        args = node.args
        params = [a for a in args.posonlyargs + args.args + args.kwonlyargs if a.arg not in ("self", "cls")]
        params += [a for a in (args.vararg, args.kwarg) if a is not None]
        missing = [a.arg for a in params if a.annotation is None]
        if missing or node.returns is None:
            yield node.lineno, node.name, missing, node.returns is None


def test_the_walk_finds_the_service_and_selector_modules():
    found = {path.relative_to(ROOT).as_posix() for path in _modules()}
    assert {
        "registry/services/promotion.py",
        "registry/selectors.py",
        "governance/services/audit.py",
        "serving/crm/services/refresh.py",
        "serving/crm/selectors.py",
    } <= found


def test_public_services_and_selectors_are_annotated():
    problems = [
        f"{path.relative_to(ROOT)}:{line} {name}"
        + (f" parameters {', '.join(missing)}" if missing else "")
        + (" return" if no_return else "")
        for path in _modules()
        for line, name, missing, no_return in _unannotated(path)
    ]
    assert not problems, "unannotated public functions:\n" + "\n".join(problems)
