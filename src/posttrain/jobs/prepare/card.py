"""The dataset card (`README.md`) written next to the shards, so the output can be shared as a dataset.

The source requires attribution (CC BY 4.0); the card carries it, the citation, the recipe, the
counts and the mixture achieved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ATTRIBUTION = (
    "Derived from NVIDIA's Nemotron-Post-Training-Dataset-v1 "
    "(https://huggingface.co/datasets/nvidia/Nemotron-Post-Training-Dataset-v1), "
    "licensed under CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/). "
    "Changes: rows were validated, filtered, deduplicated, decontaminated, rendered with a chat template, "
    "tokenized and packed by posttrain, as recorded in the recipe below."
)

CITATION = """@software{NemotronPostTrainingDatasetV1,
  author = {Nathawani, Dhruv and Gitman, Igor and Majumdar, Somshubra and Bakhturina, Evelina and
            Sunil Mahabaleshwarkar, Ameya and Zhang, Jian and Polak Scowcroft, Jane},
  title = {{Nemotron-Post-Training-Dataset-v1}},
  version = {1.0},
  publisher = {{NVIDIA}},
  year = {2025},
  url = {https://huggingface.co/datasets/nvidia/Nemotron-Post-Training-Dataset-v1}
}
@misc{bercovich2025llamanemotronefficientreasoningmodels,
  title = {Llama-Nemotron: Efficient Reasoning Models},
  author = {Bercovich, Akhiad and others},
  year = {2025},
  eprint = {2505.00949},
  archivePrefix = {arXiv}
}"""


def _table(rows: list[tuple[Any, ...]], head: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def render_card(manifest: dict[str, Any]) -> str:
    rows = manifest["rows"]
    tok = manifest["tokens"]
    splits = manifest["source"]["splits"]
    front = {
        "license": "cc-by-4.0",
        "tags": ["sft", "packed", "posttrain", "nemotron"],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "shards/shard-*.parquet"}]}],
    }
    mix = [
        (cat, f"{rows['in_by_split'].get(cat, 0):,}", f"{n:,}", f"{tok['trained_by_category'].get(cat, 0):,}",
         f"{n / tok['tokens']:.1%}" if tok["tokens"] else "-")
        for cat, n in sorted(tok["tokens_by_category"].items())
    ]
    rejected = sorted(rows["rejected_by_reason"].items(), key=lambda kv: -kv[1])
    parts = [
        "---\n" + yaml.safe_dump(front, sort_keys=False) + "---",
        "# Packed SFT shards made with posttrain",
        f"Source: `{manifest['source']['spec']}` (splits: {', '.join(splits)}). Recipe hash `{manifest['recipe_hash']}`.",
        "## Attribution and license\n\n" + ATTRIBUTION,
        "## Counts\n\n"
        + _table(
            [
                ("rows in", f"{rows['in']:,}"),
                ("rows out", f"{rows['out']:,}"),
                ("rows rejected", f"{rows['rejected']:,}"),
                ("packs", f"{manifest['pack']['packs']:,}"),
                ("tokens", f"{tok['tokens']:,}"),
                ("trained tokens", f"{tok['trained_tokens']:,}"),
                ("pack efficiency", f"{manifest['pack']['efficiency']:.4%} at seq_len {manifest['pack']['seq_len']}"),
            ],
            ("", "value"),
        ),
        "## Mixture achieved\n\n" + _table(mix, ("category", "rows in", "tokens out", "trained tokens", "share of tokens")),
        "## Rejected rows by reason\n\n"
        + (_table([(k, f"{v:,}") for k, v in rejected], ("reason", "rows")) if rejected else "None.")
        + "\n\nEvery rejected row is in `rejects/` with its reason codes.",
        "## Columns\n\n`input_ids` (int32), `labels` (-100 where not trained, and at each document's first token), "
        "`position_ids` (restart at 0 per document), `seq_lens` (documents per pack; `cu_seqlens` follow), "
        "`uuids` and `categories` of the packed documents.",
        "## Recipe\n\n```yaml\n" + yaml.safe_dump(manifest["recipe"], sort_keys=False) + "```",
        "## Citation\n\n```bibtex\n" + CITATION + "\n```",
    ]
    return "\n\n".join(parts) + "\n"


def write_card(path: Path, manifest: dict[str, Any]) -> None:
    path.write_text(render_card(manifest))
