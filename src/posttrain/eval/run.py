"""`run_eval(config, on_progress) -> EvalSummary`: load items, generate per reasoning mode, grade, write.

Per benchmark and mode, prompts are rendered once through the model's chat template, sorted by
length (less padding) and generated in chunks; each chunk is graded and appended to
`records.jsonl` before the next, so a long run that crashes resumes where it stopped (same
settings hash: generations are reused and re-graded, cheaply). Progress reaches the caller as the
jobs' `posttrain.progress.ProgressEvent`s, so the CLI's `Bars` draw them as they are: phase "eval" counts
(benchmark, mode) results and carries the notes; "generate <bench> (<mode>)" counts generated items and
their tokens as they come (a bar per benchmark, so its tokens/s is that benchmark's speed); "grade <bench>
(<mode>)" counts graded items. Nothing here prints.

The output folder is claimed like every posttrain output (`posttrain.io.outdir.claim`): never over an
input (model, tokenizer, template, held-out source), refused when it holds files posttrain did not
write, locked for the run. `resume=False` starts records.jsonl afresh.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from posttrain.errors import PosttrainError
from posttrain.eval.config import EvalConfig, Mode
from posttrain.eval.graders import Grader
from posttrain.eval.heldout import trained_on_heldout
from posttrain.eval.items import Coverage, EvalItem
from posttrain.eval.prompts import ReasoningSwitch, detect_switch, item_messages, render_prompt
from posttrain.eval.results import (
    RECORDS,
    SUMMARY,
    EvalSummary,
    read_records,
    record_key,
    result_warnings,
    summarize,
)
from posttrain.eval.sandbox import SandboxLimits
from posttrain.eval.suites import expand_specs, load_items
from posttrain.io.outdir import claim
from posttrain.io.spool import write_atomic
from posttrain.progress import OnProgress, ProgressEvent

EVAL = "eval"  # the run's own phase: (benchmark, mode) results done, and the notes
THROTTLE_S = 0.5  # token counts reach the caller at most this often during a generate() call


def phase_name(step: str, benchmark: str, mode: str) -> str:
    """The progress phase of one step of one benchmark in one mode.

    >>> phase_name("generate", "gsm8k", "off")
    'generate gsm8k (off)'
    """
    return f"{step} {benchmark} ({mode})"


def note(message: str) -> ProgressEvent:
    """A line for the user on the run's own phase.

    >>> note("loading m").message, note("loading m").advance
    ('loading m', 0)
    """
    return ProgressEvent(EVAL, unit="results", message=message)


def _previous(out: Path, config: EvalConfig) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Generations of an earlier run of the same settings (resume), keyed by (benchmark, mode, item)."""
    records = read_records(out) if config.resume else []
    if not records:
        return {}
    if {r.get("settings") for r in records} != {config.settings_hash()}:
        raise PosttrainError("the folder holds generations made with other settings", place=str(out),
                             fix="choose another --out, or set resume=False to start over")  # fmt: skip
    return {record_key(r): r for r in records}


def _read_template(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise PosttrainError(f"cannot read the chat template: {err.strerror}", place=path,
                             fix="give a Jinja chat template file") from None  # fmt: skip


class _Run:
    """State of one run: the tokenizer and reasoning switch, the lazily loaded model, the grader, the progress sink."""

    def __init__(self, config: EvalConfig, emit: OnProgress) -> None:
        from posttrain.eval.generate import load_tokenizer

        self.config, self.emit = config, emit
        self.tokenizer = load_tokenizer(config.model, config.tokenizer)
        self.template = _read_template(config.chat_template) if config.chat_template else None
        self.switch: ReasoningSwitch = detect_switch(
            str(getattr(self.tokenizer, "name_or_path", "")) + " " + config.model,
            self.template or str(getattr(self.tokenizer, "chat_template", "") or ""),
            config.reasoning_switch, config.think_on, config.think_off,
        )  # fmt: skip
        self.backend: Any = None
        self.grader = Grader(config.math_timeout_s, config.grade_workers,
                             SandboxLimits(timeout_s=config.code_timeout_s, memory_mb=config.code_memory_mb),
                             config.sandbox)  # fmt: skip

    def prompt(self, item: EvalItem, mode: Mode) -> str:
        messages, kwargs = self.switch.apply(item_messages(item), mode)
        return render_prompt(self.tokenizer, messages, item.tools, kwargs, self.template)

    def load_backend(self) -> None:
        if self.backend is None:
            from posttrain.eval.generate import load_backend

            self.emit(note(f"loading {self.config.model} ({self.config.backend})"))
            self.backend = load_backend(self.config, self.tokenizer)

    def generate(self, items: list[EvalItem], prompts: list[str], mode: Mode, phase: str,
                 clock: list[float]) -> list[tuple[str, int, str, int]]:  # fmt: skip
        """(text, tokens, finish, prompt tokens) per item; `clock` accumulates [tokens, seconds]. Reports the
        tokens to `phase` as they come and the items when done; the token deltas add up to the exact count."""
        self.load_backend()
        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        start = time.monotonic()
        seen, last = [0, 0], [start]  # [tokens seen by the callback, tokens reported], last report time

        def on_tokens(n: int) -> None:
            seen[0] += n
            now = time.monotonic()
            if now - last[0] >= THROTTLE_S:
                last[0] = now
                self.emit(ProgressEvent(phase, unit="items", tokens=seen[0] - seen[1]))
                seen[1] = seen[0]

        sampling = self.config.sampling_for(mode)
        keys = [f"{it.benchmark}/{it.item_id}/{mode}" for it in items]
        gens = self.backend.generate(ids, sampling, self.config.max_new_tokens, self.config.seed, keys, on_tokens)
        tokens = sum(g.tokens for g in gens)  # exact, whatever the callback saw (an OOM retry counts twice there)
        clock[0] += tokens
        clock[1] += time.monotonic() - start
        self.emit(ProgressEvent(phase, advance=len(items), unit="items", tokens=max(tokens - seen[1], 0)))
        return [(g.text, g.tokens, g.finish, len(i)) for g, i in zip(gens, ids, strict=True)]


def _record(item: EvalItem, mode: str, settings: str, prompt: str, gen: tuple[str, int, str, int]) -> dict[str, Any]:
    gold: Any = item.expected_calls if item.kind == "tools" else item.answer if item.kind != "code" else None
    return {"benchmark": item.benchmark, "item_id": item.item_id, "mode": mode, "kind": item.kind,
            "settings": settings, "prompt": prompt, "generation": gen[0], "gen_tokens": gen[1], "finish": gen[2],
            "prompt_tokens": gen[3], "gold": gold}  # fmt: skip


def _graded(record: dict[str, Any], grade: Any) -> dict[str, Any]:
    return {**record, "verdict": grade.verdict, "correct": grade.correct, "extracted": grade.extracted,
            "method": grade.method, "detail": grade.detail}  # fmt: skip


def run_eval(config: EvalConfig, on_progress: OnProgress | None = None) -> EvalSummary:
    """Evaluate `config.model` on `config.benchmarks`; writes records.jsonl and summary.json into `config.out`."""
    emit: OnProgress = on_progress or (lambda _: None)
    started, t0 = datetime.now(UTC).isoformat(timespec="seconds"), time.monotonic()
    specs = expand_specs(config.benchmarks)
    emit(ProgressEvent(EVAL, total=len(specs) * len(config.modes()), unit="results"))
    loaded: dict[str, tuple[list[EvalItem], Coverage]] = {}
    for spec in specs:
        loaded[spec] = load_items(spec, limit=config.limit, heldout_source=config.heldout_source,
                                  heldout_fraction=config.heldout_fraction)  # fmt: skip
        cov = loaded[spec][1]
        emit(note(f"{spec}: {len(loaded[spec][0])} items (of {cov.available} available, "
                  f"{cov.full or '?'} in the full benchmark)"))  # fmt: skip
    settings = config.settings_hash()
    out = Path(config.out)
    inputs = [config.model, config.tokenizer, config.chat_template, config.heldout_source]
    with claim(out, "eval", inputs, fresh=not config.resume):
        previous = _previous(out, config)
        run = _Run(config, emit)
        results, final = [], []
        try:
            with (out / RECORDS).open("a" if config.resume else "w", encoding="utf-8") as sink:
                for spec in specs:
                    items, coverage = loaded[spec]
                    for mode in config.modes():
                        recs, stats = _bench(run, spec, mode, items, previous, sink)
                        final += recs
                        results.append(summarize(spec, mode, recs, coverage, *stats))
                        r = results[-1]
                        speed = f", {r.tokens_per_s:,.1f} tokens/s" if r.tokens_per_s else ""
                        emit(ProgressEvent(EVAL, advance=1, unit="results",
                                           message=f"{spec} ({mode}): {r.correct}/{r.n} correct{speed}"))  # fmt: skip
            grading = run.grader.describe()
        finally:
            run.grader.close()
            if run.backend is not None:
                run.backend.close()
        write_atomic(out / RECORDS, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in final))
        warnings = [w for r in results for w in result_warnings(r)]
        if any(spec.startswith("heldout") for spec in specs):
            overlap = trained_on_heldout(config.model, config.heldout_fraction)
            warnings += [overlap] if overlap else []
        if run.switch.kind == "none" and config.reasoning != "off":
            warnings.append("the model has no reasoning switch: 'on' differs from 'off' only in sampling")
        summary = EvalSummary(
            model=config.model, backend=config.backend, settings_hash=settings,
            config=config.model_dump(mode="json"), reasoning_switch=run.switch.describe(), grading=grading,
            results=results, warnings=warnings, started=started, seconds=round(time.monotonic() - t0, 3),
        )  # fmt: skip
        write_atomic(out / SUMMARY, summary.model_dump_json(indent=1))
    emit(note(f"{len(results)} results in {out}"))
    return summary


def _bench(run: _Run, spec: str, mode: Mode, items: list[EvalItem], previous: dict[tuple[str, str, str], Any],
           sink: Any) -> tuple[list[dict[str, Any]], tuple[int, float, float]]:  # fmt: skip
    """Records of one benchmark in one mode (resumed ones re-graded), and (new tokens, gen s, grade s)."""
    config, settings = run.config, run.config.settings_hash()
    records: dict[str, dict[str, Any]] = {}
    resumed = [(it, previous[(spec, mode, it.item_id)]) for it in items if (spec, mode, it.item_id) in previous]
    todo = [it for it in items if (spec, mode, it.item_id) not in previous]
    generating, grading = phase_name("generate", spec, mode), phase_name("grade", spec, mode)
    if todo:
        run.load_backend()  # before the bar starts: its tokens/s is generation's, not the model load's
        run.emit(ProgressEvent(generating, total=len(todo), unit="items"))
    run.emit(ProgressEvent(grading, total=len(items), unit="items"))
    grade_s = time.monotonic()
    if resumed:
        grades = run.grader.grade([it for it, _ in resumed], [r["generation"] for _, r in resumed])
        records.update({it.item_id: _graded(r, g) for (it, r), g in zip(resumed, grades, strict=True)})
        run.emit(ProgressEvent(grading, advance=len(resumed), unit="items"))
    grade_s = time.monotonic() - grade_s
    prompts = {it.item_id: run.prompt(it, mode) for it in todo}
    todo.sort(key=lambda it: -len(prompts[it.item_id]))
    chunk = config.batch_size * 4 if config.backend == "transformers" else 1024
    clock = [0.0, 0.0]
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        gens = run.generate(part, [prompts[it.item_id] for it in part], mode, generating, clock)
        raw = [_record(it, mode, settings, prompts[it.item_id], g) for it, g in zip(part, gens, strict=True)]
        t = time.monotonic()
        grades = run.grader.grade(part, [g[0] for g in gens])
        grade_s += time.monotonic() - t
        for it, rec, g in zip(part, raw, grades, strict=True):
            records[it.item_id] = _graded(rec, g)
            sink.write(json.dumps(records[it.item_id], ensure_ascii=False) + "\n")
        sink.flush()
        run.emit(ProgressEvent(grading, advance=len(part), unit="items"))
    ordered = [records[it.item_id] for it in items]
    return ordered, (int(clock[0]), clock[1], grade_s)
