"""The reward registry, the spec format and :func:`score`.

A prompt's record names its reward: ``{"messages": [...], "reward": {"type": "math", "answer":
"1/2"}}``. Several rewards combine as ``{"type": "combined", "parts": [{"type": "ifeval", ...,
"weight": 2}, {"type": "translation", ...}]}``: the value is the weighted mean of the parts
(weights default to 1). Every reward maps a response to a value in [0, 1] and says why in
``details``. Specs are checked up front by :func:`validate_spec`, which returns one message naming
the field (``reward.parts[1].weight: expected a number, got 'high'``) for the data loader to prefix
with file and line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tower_megatron.registry import Registry


@dataclass
class RewardResult:
    """A reward's value in [0, 1], the reward's name, what it found (``details``), the results of
    the parts of a combined reward, and the error that made it 0 (verifier crash, timeout)."""

    value: float
    name: str
    details: dict[str, Any] = field(default_factory=dict)
    parts: list[RewardResult] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value, "name": self.name, "details": self.details}
        if self.parts:
            out["parts"] = [p.to_dict() for p in self.parts]
        if self.error:
            out["error"] = self.error
        return out


# A spec field: name -> (accepted types, required). Checked by `check_fields`.
FieldSpec = Mapping[str, tuple[tuple[type, ...], bool]]


@dataclass(frozen=True)
class Reward:
    """A registered reward: ``compute(response, spec, lang)`` and the fields its spec takes.
    ``check`` validates what field types cannot (value ranges, known instruction ids);
    ``warmup`` loads its libraries ahead of the first item (reward workers call it at start)."""

    compute: Callable[[str, dict, str | None], RewardResult]
    fields: FieldSpec
    doc: str
    check: Callable[[dict, str], str | None] | None = None
    warmup: Callable[[], object] | None = None


REWARDS: Registry[Reward] = Registry("reward")

NUMBER = (int, float)
_COMMON_FIELDS: FieldSpec = {"type": ((str,), True), "weight": (NUMBER, False)}


def _type_name(types: tuple[type, ...]) -> str:
    names = {int: "a number", float: "a number", str: "a string", bool: "true/false", list: "a list",
             dict: "a mapping"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))


def check_fields(spec: Mapping, fields: FieldSpec, where: str) -> str | None:
    """The first problem with ``spec``'s fields (missing, unknown, wrong type), or None."""
    allowed = {**_COMMON_FIELDS, **fields}
    for name, (_, required) in allowed.items():
        if required and name not in spec:
            return f"{where}.{name}: required field missing"
    for name, value in spec.items():
        if name not in allowed:
            return f"{where}.{name}: unknown field for reward {spec.get('type')!r} (known: {', '.join(sorted(allowed))})"
        types = allowed[name][0]
        # bool is an int subclass; a number field must not take true/false.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            return f"{where}.{name}: expected {_type_name(types)}, got {value!r}"
    weight = spec.get("weight", 1.0)
    if weight < 0:
        return f"{where}.weight: must be >= 0, got {weight!r}"
    return None


def validate_spec(spec: Any, where: str = "reward") -> str | None:
    """Checks a reward spec; returns one message naming the bad field, or None when it is valid."""
    if not isinstance(spec, Mapping):
        return f"{where}: expected a mapping with a 'type', got {type(spec).__name__}"
    kind = spec.get("type")
    if not isinstance(kind, str):
        return f"{where}.type: required field missing" if kind is None else f"{where}.type: expected a string"
    if kind not in REWARDS:
        return f"{where}.type: {REWARDS.unknown_message(kind)}"
    reward = REWARDS.get(kind)
    problem = check_fields(spec, reward.fields, where)
    if problem is None and reward.check is not None:
        problem = reward.check(dict(spec), where)
    return problem


class InvalidRewardSpecError(ValueError):
    """A spec that :func:`validate_spec` rejects, raised by :func:`score`."""


def score(response: str, spec: Mapping, *, lang: str | None = None) -> RewardResult:
    """Scores ``response`` by the reward ``spec`` names. ``lang`` is the language the response
    should be in (the record's target language), used by rewards that check or count by language.
    Raises :class:`InvalidRewardSpecError` for a bad spec; a verifier's own failure is the caller's to
    contain (:class:`~tower_megatron.rewards.pool.RewardPool` turns it into a counted 0)."""
    problem = validate_spec(spec)
    if problem:
        raise InvalidRewardSpecError(problem)
    result = REWARDS.get(spec["type"]).compute(response, dict(spec), lang)
    result.value = min(1.0, max(0.0, float(result.value)))
    return result


def _combined(response: str, spec: dict, lang: str | None) -> RewardResult:
    parts = [score(response, part, lang=lang) for part in spec["parts"]]
    weights = [float(part.get("weight", 1.0)) for part in spec["parts"]]
    total = sum(weights)
    value = sum(w * p.value for w, p in zip(weights, parts, strict=True)) / total
    return RewardResult(value, "combined", {"weights": weights}, parts)


def _check_combined(spec: dict, where: str) -> str | None:
    parts = spec["parts"]
    if not parts:
        return f"{where}.parts: must name at least one reward"
    for i, part in enumerate(parts):
        problem = validate_spec(part, f"{where}.parts[{i}]")
        if problem:
            return problem
    if sum(float(part.get("weight", 1.0)) for part in parts) <= 0:
        return f"{where}.parts: the weights sum to 0"
    return None


REWARDS.register("combined")(
    Reward(
        compute=_combined,
        fields={"parts": ((list,), True)},
        doc="weighted mean of the part rewards (each part's 'weight', default 1)",
        check=_check_combined,
    )
)
