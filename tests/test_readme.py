"""The README's commands as typed: no ids a fresh clone would not produce, no variable used before it is set."""

import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
SHELL = "\n".join(re.findall(r"```sh\n(.*?)```", README, flags=re.S))


def test_the_shell_examples_capture_ids_instead_of_typing_literal_ones():
    literal = re.findall(r"(?:runs|promotion-requests|refreshes|predictions)/\d+", SHELL)
    assert not literal, f"ids a fresh clone may not produce: {literal}"


def test_every_variable_a_shell_example_uses_is_set_before_in_the_readme():
    unset = []
    for match in re.finditer(r"\$\{?([A-Z][A-Z0-9_]*)", SHELL):
        name = match.group(1)
        if name in {"PATH", "HOME"}:
            continue
        before = SHELL[: match.start()]
        if not re.search(rf"(^|[\s;(]){name}=", before, flags=re.M):
            unset.append(name)
    assert not unset, f"used before being set: {sorted(set(unset))}"
