"""Packed training is exact: every document of a pack gets the logits it gets alone, only assistant
tokens are targets, and the loss is transformers' causal-LM loss, split correctly by category.

Real shards from `posttrain prepare` (SmolLM2's tokenizer and chat template), tiny random Llamas."""

from __future__ import annotations

import pytest
import torch
from test_train_common import CATEGORIES, setup
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, TrainingArguments

from posttrain.train.data import CategoryIndex, PackedDataset, TrainPacks, collate_train
from posttrain.train.loss import model_inputs, summarize
from posttrain.train.trainer import PackedTrainer


@pytest.fixture(scope="module")
def packs() -> TrainPacks:
    ds = PackedDataset(setup().shards / "shards")
    return TrainPacks(ds, CategoryIndex(ds.files))


def multi_doc_batch(packs: TrainPacks, n_packs: int = 2) -> dict:
    """A micro-batch of the first packs that hold several documents (boundaries inside and across packs)."""
    chosen = [i for i in range(len(packs)) if packs[i]["seq_lens"].numel() >= 3][:n_packs]
    assert len(chosen) == n_packs
    return collate_train([packs[i] for i in chosen])


def tiny_model(attn: str, use_cache: bool = False):
    model = AutoModelForCausalLM.from_pretrained(setup().tiny, dtype=torch.float32, attn_implementation=attn)
    model.config.use_cache = use_cache
    return model.train()  # train mode, as in training (dropout is 0 in the tiny config)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logits_equal_each_document_alone(packs: TrainPacks, attn: str):
    batch = multi_doc_batch(packs)
    cu = batch["cu_seq_lens_q"].tolist()
    assert len(cu) - 1 >= 6  # several documents, across two packs
    model = tiny_model(attn, use_cache=True)  # the config default: the trap is live unless inputs disable it
    with torch.no_grad():
        packed = model(**model_inputs(batch, attn)).logits[0]
        trap = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]  # cache left on
        diffs, trap_diffs = [], []
        for start, end in zip(cu[:-1], cu[1:], strict=True):
            alone = model(input_ids=batch["input_ids"][:, start:end], use_cache=False).logits[0]
            diffs.append((packed[start:end] - alone).abs().max().item())
            trap_diffs.append((trap[start:end] - alone).abs().max().item())
    assert max(diffs) <= 1e-5, diffs
    # With the cache on, transformers skips the per-document mask: later documents attend to earlier ones.
    assert trap_diffs[0] <= 1e-5  # the first document has nothing before it
    assert min(trap_diffs[1:]) > 1e-2, trap_diffs


def assistant_positions(ids: list[int], tokenizer: Tokenizer) -> set[int]:
    """Positions of assistant content, from the ChatML structure alone: after `<|im_start|>assistant\\n`
    up to and including the turn's `<|im_end|>`."""
    head = tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False).ids
    end = tokenizer.token_to_id("<|im_end|>")
    out: set[int] = set()
    i = 0
    while i < len(ids):
        if ids[i : i + len(head)] == head:
            j = i + len(head)
            while j < len(ids) and ids[j] != end:
                j += 1
            out.update(range(i + len(head), j + 1))
            i = j
        i += 1
    return out


def make_trainer(model, packs: TrainPacks, tmp_path, attn: str = "sdpa") -> PackedTrainer:
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", disable_tqdm=True)
    return PackedTrainer(model=model, args=args, loader=None, attn_implementation=attn,
                         category_names=packs.categories.names)


def test_only_assistant_tokens_contribute_to_the_loss(packs: TrainPacks, tmp_path):
    tokenizer = Tokenizer.from_file(str(setup().tiny / "tokenizer.json"))
    batch = multi_doc_batch(packs)
    ids = batch["input_ids"][0].tolist()
    targets = {t for t, label in enumerate(batch["labels"][0].tolist()) if label != -100}
    assert targets == assistant_positions(ids, tokenizer)  # labels: exactly the assistant tokens
    assert all(ids[t] == batch["labels"][0, t] for t in targets)

    model = tiny_model("sdpa")
    kept: dict[str, torch.Tensor] = {}

    def keep_logits(module, inputs, output):
        kept["logits"] = output

    model.lm_head.register_forward_hook(keep_logits)
    trainer = make_trainer(model, packs, tmp_path)
    loss = trainer.compute_loss(model, batch)
    kept["logits"].retain_grad()
    loss.backward()
    graded = set(torch.nonzero(kept["logits"].grad[0].abs().sum(-1)).flatten().tolist())
    # position t predicts token t + 1: the loss depends on exactly the positions before assistant tokens
    assert graded == {t - 1 for t in targets}


def test_loss_is_transformers_loss_and_categories_add_up(packs: TrainPacks, tmp_path):
    batch = multi_doc_batch(packs, n_packs=3)
    model = tiny_model("sdpa")
    trainer = make_trainer(model, packs, tmp_path)
    with torch.no_grad():
        ours = trainer.compute_loss(model, batch).item()
        theirs = model(**model_inputs(batch, "sdpa"), labels=batch["labels"]).loss.item()
        stats = summarize(trainer.meter.take("cpu"), packs.categories.names)
        # each document alone, its loss attributed to the category recorded for it in the shards
        sums: dict[str, list[float]] = {}
        cu = batch["cu_seq_lens_q"].tolist()
        for d, (start, end) in enumerate(zip(cu[:-1], cu[1:], strict=True)):
            labels = batch["labels"][:, start:end]
            n = int((labels[:, 1:] != -100).sum())
            if n == 0:
                continue
            out = model(input_ids=batch["input_ids"][:, start:end], labels=labels, use_cache=False)
            name = packs.categories.names[int(batch["doc_categories"][d])]
            acc = sums.setdefault(name, [0.0, 0])
            acc[0] += out.loss.item() * n
            acc[1] += n
    assert ours == pytest.approx(theirs, abs=1e-6)
    assert stats["loss"] == pytest.approx(ours, abs=1e-6)
    assert stats["targets"] == sum(n for _, n in sums.values())
    assert set(stats["loss_by_category"]) == set(sums)
    for name, (total, n) in sums.items():
        assert stats["targets_by_category"][name] == n
        assert stats["loss_by_category"][name] == pytest.approx(total / n, abs=1e-5)


def test_categories_travel_with_their_documents(packs: TrainPacks):
    import pyarrow.parquet as pq

    rows = [c for f in packs.packs.files for c in pq.read_table(f, columns=["categories"]).column(0).to_pylist()]
    assert len(rows) == len(packs)
    for i, cats in enumerate(rows):
        assert [packs.categories.names[c] for c in packs[i]["doc_categories"].tolist()] == cats
    assert set(packs.categories.names) == set(CATEGORIES)
