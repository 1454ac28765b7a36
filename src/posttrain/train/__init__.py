"""Fine-tune a chat model on `posttrain prepare` shards: transformers Trainer underneath.

```python
from posttrain.train import TrainConfig, run_train

summary = run_train(TrainConfig(shards="out/prepare", out="out/train", max_steps=100))
summary.output        # out/train/model: an HF folder (weights, tokenizer, chat template)
```

The data: packs from `PackedDataset` + `collate_packed` (padding-free: one row per micro-batch,
position ids restarting per document, `cu_seq_lens` for flash-attention), sharded once by rank
by posttrain. Only assistant tokens are targets. The model is always called with
`use_cache=False`: with a cache, transformers drops the per-document mask and documents of a pack
attend to each other without any error.

Launching on many GPUs or nodes: the same entry point, `python -m posttrain.train CONFIG`
(CONFIG: a YAML/JSON file holding the `TrainConfig` keys, or a recipe with a `train:` section;
`key=value` arguments override it). Every process reads its own slice of the packs.

    # one node, 8 GPUs, DDP
    torchrun --nproc_per_node 8 -m posttrain.train train.yaml
    accelerate launch --config_file $(python -m posttrain.train --accelerate-config ddp) \\
        -m posttrain.train train.yaml
    # FSDP2 (full-shard, transformer-block wrapping): for models that do not fit one GPU with AdamW state
    accelerate launch --config_file $(python -m posttrain.train --accelerate-config fsdp2) \\
        -m posttrain.train train.yaml
    # two nodes: on each node (node_rank 0 and 1), the first node's address as rendezvous
    torchrun --nnodes 2 --node_rank $NODE_RANK --nproc_per_node 8 \\
        --rdzv_backend c10d --rdzv_endpoint $MASTER_ADDR:29500 -m posttrain.train train.yaml
    # CPU (tests, debugging): torchrun --nproc_per_node 2 -m posttrain.train train.yaml  (gloo)

The shipped accelerate configs are in `posttrain/train/configs/` (`ddp.yaml`, `fsdp2.yaml`); set
`num_processes` / `num_machines` in a copy, or pass `--num_processes`. With flash-attn installed on
GPUs, `attn_implementation: auto` picks `flash_attention_2` and the varlen kernel runs on the
documents' boundaries; otherwise sdpa gets a block-diagonal mask built from the position ids.
Resuming needs the same number of processes, micro_batch, grad_accum and seed (it is refused
otherwise): the pack order and the position in it are part of the checkpoint.
"""

from __future__ import annotations

from posttrain.config import DEFAULT_MODEL, LoraSettings, TrainConfig
from posttrain.io.tokenizer_fingerprint import fingerprint_mismatch, tokenizer_fingerprint
from posttrain.train.model import convert_gguf, default_gguf_path, default_model_dir, export_gguf_tokenizer
from posttrain.train.run import TrainSummary, run_train

__all__ = [
    "DEFAULT_MODEL",
    "LoraSettings",
    "TrainConfig",
    "TrainSummary",
    "convert_gguf",
    "default_gguf_path",
    "default_model_dir",
    "export_gguf_tokenizer",
    "fingerprint_mismatch",
    "run_train",
    "tokenizer_fingerprint",
]
