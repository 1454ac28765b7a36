"""The recipe and its sections: what a run does, as pydantic models (unknown keys are errors).

One YAML file drives `posttrain prepare` and `posttrain train`; each command's flags fill the same
section models through `override`. This package is core: it imports no runtime code (no pyarrow,
no tokenizer, no engine, no torch), so `import posttrain.config` is cheap and every layer may use
it. Where things are: `filters` (`Where`, `parse_where`), `sections` (select/mix, dedup,
decontaminate, render, tokenize, pack), `train` (`TrainConfig`, the `train:` section), `recipe`
(the run's own sections, `Recipe`, `load_recipe`, `override`, `apply_overrides`). Every public name
is here too: import from `posttrain.config`.

>>> r = default_recipe()
>>> r.pack.seq_len, r.render.template, r.tokenize.max_length
(16384, 'nemotron-super-v1.5', 16384)
>>> len(r.hash())
16
>>> parse_where("not reason identity.other_model")
Where(column='reasons', op='not_has', value='identity.other_model')
"""

from __future__ import annotations

from posttrain.config.filters import REASONS, Op, Where, parse_where
from posttrain.config.recipe import (
    FLAG_PATHS,
    SECTIONS,
    EngineSection,
    OutputSection,
    Recipe,
    RehydrateSection,
    SourceSection,
    ValidateSection,
    apply_overrides,
    default_recipe,
    load_recipe,
    override,
    parse_assignments,
    recipe_from_dict,
)
from posttrain.config.sections import (
    BUILTIN_BENCHMARKS,
    CATEGORY_PROMPTS,
    CHAT_SYSTEM_PROMPT,
    DECONTAM_CODE,
    DecontamConfig,
    DedupConfig,
    MixConfig,
    PackConfig,
    RenderConfig,
    SelectConfig,
    Severity,
    TokenizeConfig,
)
from posttrain.config.train import DEFAULT_MODEL, RESUMABLE_CHANGES, LoraSettings, TrainConfig

__all__ = [
    "BUILTIN_BENCHMARKS",
    "CATEGORY_PROMPTS",
    "CHAT_SYSTEM_PROMPT",
    "DECONTAM_CODE",
    "DEFAULT_MODEL",
    "FLAG_PATHS",
    "REASONS",
    "RESUMABLE_CHANGES",
    "SECTIONS",
    "DecontamConfig",
    "DedupConfig",
    "EngineSection",
    "LoraSettings",
    "MixConfig",
    "Op",
    "OutputSection",
    "PackConfig",
    "Recipe",
    "RehydrateSection",
    "RenderConfig",
    "SelectConfig",
    "Severity",
    "SourceSection",
    "TokenizeConfig",
    "TrainConfig",
    "ValidateSection",
    "Where",
    "apply_overrides",
    "default_recipe",
    "load_recipe",
    "override",
    "parse_assignments",
    "parse_where",
    "recipe_from_dict",
]
