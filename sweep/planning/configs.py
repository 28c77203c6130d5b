"""One trial's config as a sweep runs it, and the distinct trials checked before anything runs.

A trial's values come from its Ray config (study.trial: presets, explicit fields, --smoke-test's caps,
a rung's budget); here they are validated by the schema and a user model's toggles are checked
against its factory and filled in (models.user.resolved). The trainable runs :func:`trial_config`;
the planner checks :func:`check_trials` of a space.
"""
from __future__ import annotations

from typing import Any, Mapping

from study.config import BuiltInKnobError, ConfigError, TrainConfig, is_user_model
from study.trial import trial_values
from sweep import vocabulary as vocab


def trial_config(config: Mapping[str, Any], smoke: bool = False, fraction: float = 1.0) -> TrainConfig:
    """One trial's validated TrainConfig from its Ray config, as the trainable runs it (a user model's
    toggles checked against its factory and filled in: :func:`resolved`)."""
    return validated(trial_values(config, smoke, fraction))


def validated(values: Mapping[str, Any]) -> TrainConfig:
    """The TrainConfig of flat `values`, a user model's toggles checked and filled in (:func:`resolved`);
    a built-in network's knob set beside a user model is refused with the model's toggles listed."""
    try:
        cfg = TrainConfig.from_dict(values)
    except BuiltInKnobError as exc:
        from models.user import toggle_listing

        listing = toggle_listing(exc.model)
        raise ConfigError(f"{exc}; {listing}" if listing else str(exc)) from None
    return resolved(cfg)


def resolved(cfg: TrainConfig) -> TrainConfig:
    """A user model's toggles checked against its factory and filled in (models.user.resolved, which
    imports torch: only for a user model); a built-in model's config as it is."""
    if not is_user_model(cfg.model):
        return cfg
    from models.user import resolved as with_toggles

    return with_toggles(cfg)


def check_trials(params: Mapping[str, Any], smoke: bool, exhaustive: bool,
                 source: str, fraction: float = 1.0) -> list[TrainConfig]:
    """The distinct trials to check before anything runs: every grid combination when `exhaustive`
    (else one), and each choice value and reachable range end of the other axes on top of the first.
    Seeds change no trial's validity: one seed stands for all (a grid of 10^6 seeds is one arm)."""
    params = {k: vocab.representative(v) if k == "seed" else v for k, v in params.items()}
    base = {k: vocab.representative(v) for k, v in params.items()}
    configs = vocab.expand_grid(params) if exhaustive else [base]
    for key, spec in params.items():
        if isinstance(spec, Mapping) and "grid" not in spec:
            configs += [{**base, key: value} for value in vocab.reachable(spec)]
    try:
        return list(dict.fromkeys(trial_config(config, smoke, fraction) for config in configs))
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
