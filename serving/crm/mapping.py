"""How a prediction becomes a segment: ordered rules, the first that matches wins.

    {"rules": [
        {"segment": "at_risk", "class": "yes", "min_probability": 0.6},   # P(yes) >= 0.6
        {"segment": "watch",   "class": "yes", "min_probability": 0.3},   # P(yes) >= 0.3
        {"segment": "loyal"}                                             # anything else
    ]}

A rule with a class and no min_probability matches when that class is the predicted one. A rule
without a class matches anything and must come last. Every prediction must get a segment: the
rules end with such a catch-all, or give every class a rule of its own.
"""

import re
from dataclasses import dataclass

import numpy as np

from core.errors import Unprocessable

_SEGMENT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_FIELD = "mapping"


@dataclass(frozen=True)
class Rule:
    segment: str
    label: str | None = None
    min_probability: float | None = None


@dataclass(frozen=True)
class SegmentMapping:
    rules: tuple[Rule, ...]

    def segment_of(self, label: str, probabilities: dict[str, float]) -> str:
        """The segment of one prediction."""
        for rule in self.rules:
            if rule.label is None:
                return rule.segment
            if rule.min_probability is None:
                if label == rule.label:
                    return rule.segment
            elif probabilities.get(rule.label, 0.0) >= rule.min_probability:
                return rule.segment
        raise AssertionError("a validated mapping gives every prediction a segment")

    def segments_of(self, labels: list[str], probabilities: np.ndarray, classes: list[str]) -> list[str]:
        """The segments of a batch of predictions, rule by rule over whole columns."""
        n = len(labels)
        result = np.empty(n, dtype=object)
        open_rows = np.ones(n, dtype=bool)
        label_array = np.asarray(labels, dtype=object)
        index = {name: i for i, name in enumerate(classes)}
        for rule in self.rules:
            if rule.label is None:
                hit = open_rows
            elif rule.min_probability is None:
                hit = open_rows & (label_array == rule.label)
            elif rule.label in index:
                hit = open_rows & (probabilities[:, index[rule.label]] >= rule.min_probability)
            else:
                continue
            result[hit] = rule.segment
            open_rows = open_rows & ~hit
            if not open_rows.any():
                break
        if open_rows.any():
            raise AssertionError("a validated mapping gives every prediction a segment")
        return result.tolist()

    @property
    def segments(self) -> list[str]:
        return list(dict.fromkeys(rule.segment for rule in self.rules))


def mapping_parse(raw, *, classes: list[str], model_name: str) -> SegmentMapping:
    """Validate a mapping against the model's classes; Unprocessable naming the rule and field otherwise."""
    if not isinstance(raw, dict) or not isinstance(raw.get("rules"), list):
        raise Unprocessable(
            'must be {"rules": [{"segment": ..., "class": ..., "min_probability": ...}, ...]}', field=_FIELD
        )
    unknown = sorted(set(raw) - {"rules"})
    if unknown:
        raise Unprocessable(f"unknown key {unknown[0]!r}", field=f"{_FIELD}.{unknown[0]}")
    if not raw["rules"]:
        raise Unprocessable("needs at least one rule", field=f"{_FIELD}.rules")
    rules = []
    catch_all_at = None
    for i, item in enumerate(raw["rules"]):
        where = f"{_FIELD}.rules[{i}]"
        if catch_all_at is not None:
            raise Unprocessable(f"can never match: rule {catch_all_at} before it matches everything", field=where)
        if not isinstance(item, dict):
            raise Unprocessable('must be an object like {"segment": "loyal", "class": "no"}', field=where)
        extra = sorted(set(item) - {"segment", "class", "min_probability"})
        if extra:
            raise Unprocessable(
                f"unknown key {extra[0]!r} (a rule has segment, class and min_probability)", field=f"{where}.{extra[0]}"
            )
        segment = item.get("segment")
        if not isinstance(segment, str) or not _SEGMENT.match(segment):
            raise Unprocessable("must be 1 to 64 letters, digits, '_', '-' or '.'", field=f"{where}.segment")
        label = item.get("class")
        if label is not None:
            if not isinstance(label, str | int) or isinstance(label, bool):
                raise Unprocessable("must be the name of a class", field=f"{where}.class")
            label = str(label)
            if label not in classes:
                raise Unprocessable(
                    f"{model_name} has no class {label!r} (its classes: {', '.join(classes)})", field=f"{where}.class"
                )
        threshold = item.get("min_probability")
        if threshold is not None:
            if label is None:
                raise Unprocessable("needs a class: the probability of which class?", field=f"{where}.min_probability")
            if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
                raise Unprocessable("must be a number from 0 to 1", field=f"{where}.min_probability")
            threshold = float(threshold)
        if label is None:
            catch_all_at = i
        rules.append(Rule(segment=segment, label=label, min_probability=threshold))
    if catch_all_at is None:
        plain = {rule.label for rule in rules if rule.min_probability is None}
        missing = [c for c in classes if c not in plain]
        if missing:
            raise Unprocessable(
                f"a prediction of {missing[0]!r} would get no segment: end with a rule without a class "
                f'(e.g. {{"segment": "other"}}) or give each class a rule',
                field=f"{_FIELD}.rules",
            )
    return SegmentMapping(rules=tuple(rules))
