"""Generation backends: transformers (batched, left-padded; any machine) and vLLM (GPU, when installed).

Both take token ids (the chat template is applied once, in `prompts.render_prompt`, so the two
backends see the same prompt bytes), stop on every end-of-turn token the tokenizer knows (a
fine-tuned model's generation_config may name only one), and report generated tokens as they
come through `on_tokens(n)`, so a caller can show tokens/s without the package printing anything.

Greedy when the mode's temperature is 0; otherwise temperature and top_p as configured, with
top_k off (the Nemotron model cards sample with top_p only). Sampling with transformers is seeded
per batch (seed + batch index); vLLM gets one seed per request (seed + a hash of the item key), so its
samples do not depend on batching.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Literal, Protocol

import xxhash

from posttrain.errors import PosttrainError
from posttrain.eval.config import EvalConfig, Sampling
from posttrain.io.hf_quiet import quiet

OnTokens = Callable[[int], None]
_END_OF_TURN = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<|endoftext|>", "<|end_of_text|>", "<end_of_turn>",
                "<|return|>", "</s>")  # fmt: skip


@dataclass
class Generation:
    """One completion: its text (special tokens kept, the stop token cut), generated tokens, why it ended."""

    text: str
    tokens: int
    finish: Literal["stop", "length"]


class Backend(Protocol):
    name: str
    tokenizer: Any

    def generate(self, prompts: list[list[int]], sampling: Sampling, max_new_tokens: int, seed: int,
                 keys: list[str], on_tokens: OnTokens | None = None) -> list[Generation]: ...  # fmt: skip

    def close(self) -> None: ...


def stop_token_ids(tokenizer: Any, generation_config: Any = None) -> list[int]:
    """Every id that ends a turn: the generation config's eos ids, the tokenizer's eos, known end-of-turn tokens."""
    ids: list[int] = []
    eos = getattr(generation_config, "eos_token_id", None)
    ids += eos if isinstance(eos, list) else [eos] if eos is not None else []
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    ids += [vocab[t] for t in _END_OF_TURN if t in vocab]
    return list(dict.fromkeys(int(i) for i in ids))


def _split_model_path(model: str) -> tuple[str, dict[str, Any]]:
    """A `.gguf` file loads from its folder with `gguf_file=`; anything else as is."""
    if model.endswith(".gguf") and Path(model).is_file():
        return str(Path(model).parent), {"gguf_file": Path(model).name}
    return model, {}


def load_tokenizer(model: str, tokenizer: str | None = None) -> Any:
    from transformers import AutoTokenizer

    where, kwargs = _split_model_path(tokenizer or model)
    try:
        return AutoTokenizer.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as err:
        raise PosttrainError(f"cannot load the tokenizer: {err}"[:300], place=tokenizer or model,
                             fix="give a model folder with tokenizer files, or tokenizer=DIR") from None  # fmt: skip


class TransformersBackend:
    """`model.generate` over length-sorted, left-padded batches; a CUDA out-of-memory halves the batch."""

    name = "transformers"

    def __init__(self, model: str, tokenizer: Any, *, dtype: str = "auto", device: str = "auto",
                 batch_size: int = 8) -> None:  # fmt: skip
        import torch
        from transformers import AutoModelForCausalLM

        self.torch = torch
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available()
                                   else "cpu" if device == "auto" else device)  # fmt: skip
        if dtype == "auto":
            cuda_bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
            torch_dtype = torch.bfloat16 if cuda_bf16 else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        where, kwargs = _split_model_path(model)
        try:
            with quiet():  # progress goes through on_progress, never transformers' own bars
                self.model = AutoModelForCausalLM.from_pretrained(where, dtype=torch_dtype, **kwargs)
        except (OSError, ValueError) as err:
            raise PosttrainError(f"cannot load the model: {err}"[:300], place=model,
                                 fix="give a folder with config.json and weights, or a hub id") from None  # fmt: skip
        self.model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.stop_ids = stop_token_ids(tokenizer, self.model.generation_config)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else self.stop_ids[0]

    def generate(self, prompts: list[list[int]], sampling: Sampling, max_new_tokens: int, seed: int,
                 keys: list[str], on_tokens: OnTokens | None = None) -> list[Generation]:  # fmt: skip
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # longest first: OOM shows early
        out: list[Generation | None] = [None] * len(prompts)
        for b, start in enumerate(range(0, len(order), self.batch_size)):
            idx = order[start : start + self.batch_size]
            for i, gen in zip(idx, self._batch([prompts[i] for i in idx], sampling, max_new_tokens, seed + b,
                                               on_tokens), strict=True):  # fmt: skip
                out[i] = gen
        return [g for g in out if g is not None]

    def _batch(self, prompts: list[list[int]], sampling: Sampling, max_new_tokens: int, seed: int,
               on_tokens: OnTokens | None) -> list[Generation]:  # fmt: skip
        torch = self.torch
        try:
            return self._run(prompts, sampling, max_new_tokens, seed, on_tokens)
        except torch.OutOfMemoryError:
            if len(prompts) == 1:
                raise PosttrainError("out of GPU memory at batch size 1", place="generate",
                                     fix="lower max_new_tokens, or use backend=vllm") from None  # fmt: skip
            torch.cuda.empty_cache()
            half = len(prompts) // 2
            return (self._batch(prompts[:half], sampling, max_new_tokens, seed, on_tokens)
                    + self._batch(prompts[half:], sampling, max_new_tokens, seed, on_tokens))  # fmt: skip

    def _run(self, prompts: list[list[int]], sampling: Sampling, max_new_tokens: int, seed: int,
             on_tokens: OnTokens | None) -> list[Generation]:  # fmt: skip
        from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

        torch = self.torch
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        stops = torch.tensor(self.stop_ids, device=self.device)

        class Count(StoppingCriteria):
            """Counts the tokens of unfinished rows at every step; never stops anything itself."""

            def __init__(self) -> None:
                self.done = torch.zeros(len(prompts), dtype=torch.bool, device=ids.device)

            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                active = int((~self.done).sum())
                self.done |= torch.isin(input_ids[:, -1], stops)
                if on_tokens is not None:
                    on_tokens(active)
                return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

        greedy = sampling.greedy
        config = GenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=not greedy, temperature=None if greedy else sampling.temperature,
            top_p=None if greedy else sampling.top_p, top_k=None if greedy else 0, eos_token_id=self.stop_ids,
            pad_token_id=self.pad_id, bos_token_id=self.tokenizer.bos_token_id,
        )  # fmt: skip
        if not greedy:
            torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                                      stopping_criteria=StoppingCriteriaList([Count()]))  # fmt: skip
        stop_set = set(self.stop_ids)
        gens = []
        for row in out[:, width:].tolist():
            end = next((k for k, t in enumerate(row) if t in stop_set), None)
            kept = row if end is None else row[:end]
            text = self.tokenizer.decode(kept, skip_special_tokens=False, clean_up_tokenization_spaces=False)
            gens.append(Generation(text, len(row) if end is None else end + 1, "length" if end is None else "stop"))
        return gens

    def close(self) -> None:
        del self.model
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()


class VLLMBackend:
    """vLLM's offline `LLM.generate` on token-id prompts, in chunks (for progress); one seed per request."""

    name = "vllm"
    chunk = 256

    def __init__(self, model: str, tokenizer: Any, *, tokenizer_path: str | None = None, dtype: str = "auto",
                 seed: int = 0, options: dict[str, Any] | None = None) -> None:  # fmt: skip
        if find_spec("vllm") is None:
            raise PosttrainError("vllm is not installed", place="backend",
                                 fix="pip install vllm (needs a CUDA GPU), or use backend=transformers")  # fmt: skip
        import vllm

        self.vllm = vllm
        self.tokenizer = tokenizer
        self.llm = vllm.LLM(model=model, tokenizer=tokenizer_path or model, dtype=dtype, seed=seed, **(options or {}))
        self.stop_ids = stop_token_ids(tokenizer)

    def generate(self, prompts: list[list[int]], sampling: Sampling, max_new_tokens: int, seed: int,
                 keys: list[str], on_tokens: OnTokens | None = None) -> list[Generation]:  # fmt: skip
        gens: list[Generation] = []
        for start in range(0, len(prompts), self.chunk):
            part = range(start, min(start + self.chunk, len(prompts)))
            params = [self._params(sampling, max_new_tokens, seed, keys[i]) for i in part]
            outs = self.llm.generate([{"prompt_token_ids": prompts[i]} for i in part], params, use_tqdm=False)
            for o in outs:
                c = o.outputs[0]
                gens.append(Generation(c.text, len(c.token_ids), "length" if c.finish_reason == "length" else "stop"))
                if on_tokens is not None:
                    on_tokens(len(c.token_ids))
        return gens

    def _params(self, sampling: Sampling, max_new_tokens: int, seed: int, key: str) -> Any:
        common = {"max_tokens": max_new_tokens, "stop_token_ids": self.stop_ids, "skip_special_tokens": False,
                  "spaces_between_special_tokens": False}  # fmt: skip
        if sampling.greedy:
            return self.vllm.SamplingParams(temperature=0.0, **common)
        item_seed = (seed + xxhash.xxh64_intdigest(key.encode("utf-8"))) % 2**31
        return self.vllm.SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p, top_k=-1,
                                        seed=item_seed, **common)  # fmt: skip

    def close(self) -> None:
        del self.llm


def load_backend(config: EvalConfig, tokenizer: Any = None) -> Backend:
    """The configured backend; pass the tokenizer the prompts were rendered with to share it."""
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(config.model, config.tokenizer)
    if config.backend == "vllm":
        return VLLMBackend(config.model, tokenizer, tokenizer_path=config.tokenizer, dtype=config.dtype,
                           seed=config.seed, options=config.vllm_options)  # fmt: skip
    return TransformersBackend(config.model, tokenizer, dtype=config.dtype, device=config.device,
                               batch_size=config.batch_size)  # fmt: skip
