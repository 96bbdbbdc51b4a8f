"""The judge stage: ``judge_run(run_dir, JudgeConfig(judges=..., rubric=...))`` judges a run's responses and stores Judgments.

Flow, per judge:

1. pick the responses (:mod:`.select`), render each item's prompt from the rubric (:mod:`.prompts`)
   and compute its cache key (judge identity, rubric name + version + content hash, prompt hash,
   sampling settings, the judged sample keys, repeat);
2. drop every item whose key already has a final record in ``judgments/<judge>/<rubric>.jsonl``
   — a rerun with nothing left sends no request and starts no server;
3. otherwise start the endpoint (``local``: ``transformers serve``), choose the structured-output
   strategy (cached probe, :func:`.client.probe_strategy`), and judge the rest with ``concurrency``
   asyncio workers; each finished item is appended (one fsynced line) as soon as it ends, so a
   killed run loses only the items in flight;
4. stop early, cleanly, when the endpoint disappears: after ``max_consecutive_failures`` items in a
   row end in connection failures, raise :class:`PspoError` saying how much was saved and to rerun.

An item asks the judge once, then re-asks up to ``reasks`` times quoting the validation error;
pairwise items ask in both orders. Each ends in exactly one outcome (records.OUTCOMES).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pspo_eval.console import log, progress, warn
from pspo_eval.errors import PspoError
from pspo_eval.judge import prompts
from pspo_eval.judge.agreement import expected_scores
from pspo_eval.judge.client import JudgeCallError, JudgeClient, now_iso, probe_strategy
from pspo_eval.judge.config import STRATEGIES, JudgeConfig, judge_config
from pspo_eval.judge.parsing import looks_like_refusal, parse_verdict
from pspo_eval.judge.records import FINAL_OUTCOMES, ORDER_PREFERENCE, OUTCOMES, Judgment, Usage
from pspo_eval.judge.rubric import RATIONALE, Rubric, load_rubric
from pspo_eval.judge.select import load_samples, pick_responses, stratified_problems
from pspo_eval.judge.specs import JudgeSpec, check_key, known_secrets, parse_judge_spec, redact, redact_url
from pspo_eval.store import RunStore, Shard, atomic_write_json, stable_hash

RAW_MAX_CHARS = 4000


@dataclass
class Task:
    """One item to judge by one judge (absolute/reference: one response; pairwise: a pair, two orders)."""

    item_key: str
    base: dict[str, Any]  # Judgment fields known before judging
    orders: list[list[dict[str, str]]]  # the messages of each order
    forbidden: list[str]  # the candidate responses (a verdict copied from them is rejected)
    injection: list[str]
    seed: int


@dataclass
class JudgeSummary:
    """What one ``judge_run`` did, and the aggregation of the judgments it covers."""

    run_dir: str
    rubric: str
    judges: list[str]
    items: int = 0  # (item, repeat) pairs per judge in the selection
    cached: int = 0  # already judged: no request sent
    judged: int = 0  # judged by this call
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)  # judge -> outcome -> count (all covered)
    new_outcomes: dict[str, int] = field(default_factory=dict)  # outcome -> count (this call)
    usage: dict[str, Any] = field(default_factory=dict)  # this call: tokens, requests, retries, cost
    strategies: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0
    judging_s: float = 0.0  # time spent in the judging loops (excludes server start-up and probe)
    http_s: float = 0.0  # time spent waiting on HTTP
    aggregation: Any = None  # pspo_eval.judge.aggregate.Aggregation

    @property
    def judgments_per_s(self) -> float:
        return self.judged / self.judging_s if self.judging_s > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "aggregation"}
        out["judgments_per_s"] = self.judgments_per_s
        return out


# ---------------------------------------------------------------------------------------------
# Items


class _Problems:
    """Problem text and reference solutions: from the sample when it has them, else from the dataset."""

    def __init__(self) -> None:
        self._by_dataset: dict[str, dict[str, Any] | None] = {}
        self._warned: set[str] = set()

    def get(self, dataset: str, pid: str) -> Any:
        if dataset not in self._by_dataset:
            try:
                from pspo_eval.data import load_dataset

                self._by_dataset[dataset] = {p.id: p for p in load_dataset(dataset)}
            except Exception:  # unknown or user dataset: fall back to what the sample carries
                self._by_dataset[dataset] = None
        table = self._by_dataset[dataset]
        return table.get(pid) if table else None

    def question(self, sample: dict) -> str:
        if isinstance(sample.get("question"), str) and sample["question"].strip():
            return sample["question"]
        problem = self.get(sample["dataset"], sample["problem_id"])
        if problem is not None:
            return problem.question
        if sample["dataset"] not in self._warned:
            self._warned.add(sample["dataset"])
            warn(f"no problem text for dataset {sample['dataset']}: showing the judge the model's full prompt")
        return str(sample.get("prompt", ""))

    def reference(self, sample: dict) -> str:
        if isinstance(sample.get("solution"), str) and sample["solution"].strip():
            return sample["solution"]
        problem = self.get(sample["dataset"], sample["problem_id"])
        gold = sample.get("gold") or (problem.answer if problem is not None else None)
        if problem is not None and problem.solution:
            return f"{problem.solution.strip()}\n\nFinal answer: {gold}"
        return f"(no worked solution available) The correct final answer is {gold}."


@dataclass
class _Item:
    """A rendered item, independent of the judge (the cache key adds the judge and the repeat)."""

    base: dict[str, Any]
    orders: list[list[dict[str, str]]]
    prompt_hash: str
    sample_keys: list[str]
    forbidden: list[str]
    injection: list[str]


def system_prompt_for(manifest: dict, sample: dict) -> str | None:
    """The system prompt the evaluated model saw for this sample.

    The sample's own ``system_prompt`` if it has one; else the run's prompt config resolved for the
    sample's dataset (MATH-500 may get the ``\\boxed{}`` variant); else the manifest's ``system_prompt``.
    """
    if isinstance(sample.get("system_prompt"), str):
        return sample["system_prompt"]
    config = manifest.get("config")
    prompt = config.get("prompt") if isinstance(config, dict) else None
    if isinstance(prompt, dict):
        try:
            from pspo_eval.generation.prompts import PromptConfig

            return PromptConfig.model_validate(prompt).system_for(sample["dataset"])
        except Exception:  # an older or foreign manifest: fall back to the recorded text
            pass
    value = manifest.get("system_prompt")
    return value if isinstance(value, str) else None


def _lengths(sample: dict, prefix: str) -> dict[str, int | None]:
    """The response's length in characters and in tokens (the generator's count), for the length-bias tables."""
    tokens = sample.get("completion_tokens")
    return {f"{prefix}_chars": len(sample.get("response") or ""),
            f"{prefix}_tokens": int(tokens) if isinstance(tokens, int) else None}


def _pair_item(rubric: Rubric, base: dict[str, Any], s: dict, b: dict, question: str, sp: str | None,
               keys_for_scan: list[str]) -> _Item:
    """Candidate ``s`` against baseline ``b``, asked in both orders (baseline as A, then candidate as A)."""
    base = dict(base, baseline=b["model"], baseline_sample_key=b["key"], baseline_correct=b.get("correct"),
                **_lengths(b, "baseline"))
    line_s = prompts.grader_line(s.get("extracted"), s.get("correct"), s.get("finish_reason"))
    line_b = prompts.grader_line(b.get("extracted"), b.get("correct"), b.get("finish_reason"))
    first = prompts.build_messages(rubric, problem=question, system_prompt=sp,
                                   grader=f"Response A: {line_b}\nResponse B: {line_s}",
                                   responses=[b["response"], s["response"]])
    second = prompts.build_messages(rubric, problem=question, system_prompt=sp,
                                    grader=f"Response A: {line_s}\nResponse B: {line_b}",
                                    responses=[s["response"], b["response"]])
    hits = prompts.detect_injection(s["response"], keys_for_scan)
    return _Item(base, [first.messages, second.messages], stable_hash([first.prompt_hash, second.prompt_hash]),
                 [s["key"], b["key"]], [s["response"], b["response"]], hits)


def _build_items(
    rubric: Rubric, chosen: dict[tuple[str, str, str], dict], manifest: dict, baseline: str | None,
    pairs: str = "baseline",
) -> list[_Item]:
    """One item per response (absolute, reference) or per pair of responses to a problem (pairwise).

    Pairwise ``pairs="baseline"``: every model against ``baseline`` (a star); ``pairs="all"``: every
    unordered pair of models (round-robin; the first in name order is shown as A first), so that
    Bradley–Terry ranks all models from direct comparisons. Each pair is asked in both orders.
    """
    problems = _Problems()
    keys_for_scan = [*rubric.criterion_keys, *rubric.flag_keys]
    items: list[_Item] = []
    for (model, dataset, pid), s in sorted(chosen.items()):
        base = {
            "model": model, "dataset": dataset, "problem_id": pid, "category": s.get("category"),
            "sample_key": s["key"], "setting": s["setting"], "correct": s.get("correct"), **_lengths(s, "response"),
        }
        sp = system_prompt_for(manifest, s)
        question = problems.question(s)
        if rubric.mode == "pairwise":
            if pairs == "all":
                opponents = sorted(m for (m, d, p) in chosen if d == dataset and p == pid and m < model)
            else:
                opponents = [baseline] if baseline and model != baseline else []
            for other in opponents:
                b = chosen.get((other, dataset, pid))
                if b is not None:
                    items.append(_pair_item(rubric, base, s, dict(b, model=other), question, sp, keys_for_scan))
        else:
            reference = problems.reference(s) if rubric.mode == "reference" else None
            rendered = prompts.build_messages(
                rubric, problem=question, system_prompt=sp,
                grader=prompts.grader_line(s.get("extracted"), s.get("correct"), s.get("finish_reason")),
                responses=[s["response"]], reference=reference,
            )
            hits = prompts.detect_injection(s["response"], keys_for_scan)
            items.append(_Item(base, [rendered.messages], rendered.prompt_hash, [s["key"]], [s["response"]], hits))
    return items


def _tasks_for(
    spec: JudgeSpec, rubric: Rubric, items: list[_Item], *, repeats: int, seed: int, temperature: float,
    max_tokens: int,
) -> list[Task]:
    tasks = []
    for item in items:
        for r in range(repeats):
            item_seed = seed + r
            key = stable_hash({
                "judge": spec.identity, "rubric": rubric.name, "version": str(rubric.version),
                "rubric_hash": rubric.content_hash, "prompt": item.prompt_hash, "samples": item.sample_keys,
                "temperature": temperature, "seed": item_seed, "max_tokens": max_tokens, "repeat": r,
            }, 24)
            base = dict(item.base)
            base.update(
                item_key=key, judge=spec.identity, rubric=rubric.name, rubric_version=str(rubric.version),
                rubric_hash=rubric.content_hash, mode=rubric.mode, prompt_hash=item.prompt_hash, repeat=r,
                temperature=temperature, seed=item_seed, max_tokens=max_tokens, grader_check=rubric.grader_check,
                scale={c.key: [c.low, c.high] for c in rubric.criteria if c.scale is not None} or None,
                injection_detected=bool(item.injection), injection_matches=item.injection,
            )
            tasks.append(Task(key, base, item.orders, item.forbidden, item.injection, item_seed))
    return tasks


def final_keys(shard: Shard) -> set[str]:
    """Item keys that already have a final (non-api_error) judgment."""
    return {r["item_key"] for r in shard.iter_dicts() if r.get("outcome") in FINAL_OUTCOMES and "item_key" in r}


# ---------------------------------------------------------------------------------------------
# Asking


@dataclass
class _Asked:
    outcome: str
    verdict: BaseModel | None
    error: str | None
    raw: str | None
    usage: Usage
    error_kind: str | None = None  # JudgeCallError.kind for api_error
    expected: dict[str, float] | None = None  # G-Eval expected scores, when the endpoint gave logprobs


async def _ask(
    client: JudgeClient, messages: list[dict[str, str]], rubric: Rubric, strategy: str, forbidden: list[str], *,
    max_tokens: int, temperature: float, seed: int, reasks: int, secrets: list[str],
) -> _Asked:
    """One verdict: ask, validate, re-ask with the error quoted; a typed outcome whatever happens."""
    base = prompts.with_strategy(messages, rubric, strategy)
    fmt = prompts.response_format(rubric, strategy)
    convo = base
    usage = Usage()
    outcome, error, raw = "parse_error", None, None
    top_k = client.top_logprobs if rubric.mode != "pairwise" else None
    ask_logprobs: dict[str, Any] = {"logprobs": True, "top_logprobs": top_k} if top_k else {}
    for ask in range(reasks + 1):
        try:
            reply = await client.chat(convo, max_tokens=max_tokens, temperature=temperature, seed=seed,
                                      response_format=fmt, **ask_logprobs)
        except JudgeCallError as exc:
            usage.add(exc.usage)
            return _Asked("api_error", None, redact(exc.message, secrets), raw, usage, exc.kind)
        usage.add(reply.usage)
        raw = reply.content
        if reply.refusal is not None:
            return _Asked("refusal", None, redact(reply.refusal[:300], secrets), raw, usage)
        if reply.finish_reason == "content_filter":
            return _Asked("refusal", None, "the endpoint's content filter stopped the reply", raw, usage)
        result = parse_verdict(reply.content, rubric.verdict_model, forbidden=forbidden)
        if result.verdict is not None:
            return _Asked("ok", result.verdict, None, raw, usage, expected=_expected(rubric, reply))
        if not result.found_json and looks_like_refusal(reply.content):
            return _Asked("refusal", None, "the judge declined to rate", raw, usage)
        truncated = reply.finish_reason == "length"
        outcome = "truncated" if truncated else "parse_error"
        error = result.error if not truncated else f"the reply hit max_tokens ({max_tokens}): {result.error}"
        if ask < reasks:
            usage.reasks += 1
            convo = base + [
                {"role": "assistant", "content": (reply.content or "")[:2000]},
                {"role": "user", "content": prompts.reask_message(result.error or "invalid", truncated, rubric)},
            ]
    return _Asked(outcome, None, error, raw, usage)


def _expected(rubric: Rubric, reply: Any) -> dict[str, float] | None:
    """Probability-weighted scores from the reply's top log-probabilities (None when the endpoint gave none).

    ``top_logprobs`` (per generated token, the top-K alternatives token -> logprob) is None unless the
    request asked for them and the endpoint gave them; only the sampled score is stored then.
    """
    scale = {c.key: (c.low, c.high) for c in rubric.criteria if c.scale is not None}
    if rubric.mode == "pairwise" or not scale:
        return None
    sampled = [token for token, _ in reply.tokens] if reply.tokens else None
    return expected_scores(reply.content, reply.top_logprobs, scale, sampled)


def _verdict_parts(rubric: Rubric, verdict: BaseModel) -> tuple[dict[str, Any], dict[str, bool], str]:
    data = verdict.model_dump()
    return ({k: data[k] for k in rubric.criterion_keys}, {k: bool(data[k]) for k in rubric.flag_keys},
            str(data.get(RATIONALE, "")))


_PREFERENCE = ORDER_PREFERENCE  # (order, choice) -> the candidate's result: +1 better, 0 tie, -1 worse


async def _judge_task(
    client: JudgeClient, task: Task, rubric: Rubric, strategy: str, *, max_tokens: int, temperature: float,
    reasks: int, secrets: list[str], price: tuple[float, float] | None,
) -> tuple[Judgment, str | None]:
    started = time.perf_counter()
    usage = Usage()
    fields: dict[str, Any] = {}
    error_kind: str | None = None
    if rubric.mode != "pairwise":
        asked = await _ask(client, task.orders[0], rubric, strategy, task.forbidden, max_tokens=max_tokens,
                           temperature=temperature, seed=task.seed, reasks=reasks, secrets=secrets)
        usage.add(asked.usage)
        fields.update(outcome=asked.outcome, error=asked.error, raw=_clip(asked.raw))
        error_kind = asked.error_kind
        if asked.verdict is not None:
            scores, flags, rationale = _verdict_parts(rubric, asked.verdict)
            fields.update(scores=scores, flags=flags, rationale=rationale, expected_scores=asked.expected)
    else:
        results: list[_Asked] = []
        for messages in task.orders:
            asked = await _ask(client, messages, rubric, strategy, task.forbidden, max_tokens=max_tokens,
                               temperature=temperature, seed=task.seed, reasks=reasks, secrets=secrets)
            usage.add(asked.usage)
            results.append(asked)
            if asked.outcome != "ok":
                break  # the pair cannot be ok any more; the second order would only cost
        failed = next((a for a in results if a.outcome != "ok"), None)
        orders = []
        for i, a in enumerate(results):
            entry: dict[str, Any] = {"order": "baseline_first" if i == 0 else "candidate_first",
                                     "outcome": a.outcome, "raw": _clip(a.raw, 2000)}
            if a.verdict is not None:
                entry["verdict"] = a.verdict.model_dump()
            if a.error:
                entry["error"] = a.error
            orders.append(entry)
        fields["orders"] = orders
        if failed is not None:
            fields.update(outcome=failed.outcome, error=failed.error, raw=_clip(failed.raw))
            error_kind = failed.error_kind
        else:
            pair_scores: dict[str, int] = {}
            flips: dict[str, bool] = {}
            per_order = [_verdict_parts(rubric, a.verdict)[0] for a in results if a.verdict is not None]
            for c in rubric.criterion_keys:
                first, second = _PREFERENCE[(0, per_order[0][c])], _PREFERENCE[(1, per_order[1][c])]
                pair_scores[c] = first if first == second else 0  # disagreeing orders count as a tie
                flips[c] = first != second
            joined = " | ".join(_verdict_parts(rubric, a.verdict)[2] for a in results if a.verdict is not None)
            fields.update(outcome="ok", scores=pair_scores, flags={}, flips=flips, rationale=joined[:2000],
                          raw=_clip(results[-1].raw))
    if price is not None:
        usage.cost_usd = (usage.prompt_tokens * price[0] + usage.completion_tokens * price[1]) / 1e6
    created = now_iso()
    key = task.item_key if fields["outcome"] in FINAL_OUTCOMES else f"{task.item_key}:api_error:{uuid.uuid4().hex[:12]}"
    record = Judgment(key=key, structured=strategy, usage=usage, latency_s=round(time.perf_counter() - started, 4),
                      created_at=created, **task.base, **fields)
    return record, error_kind


def _clip(text: str | None, limit: int = RAW_MAX_CHARS) -> str | None:
    if text is None:
        return None
    return text if len(text) <= limit else text[:limit] + f"… [{len(text) - limit} more chars]"


# ---------------------------------------------------------------------------------------------
# One judge over its tasks


@dataclass
class _JudgeResult:
    strategy: str
    outcomes: Counter
    usage: Usage
    judged: int
    judging_s: float
    http_s: float
    stopped: str | None = None


@dataclass
class _StopState:
    """Consecutive items that could not connect; ``stopped`` holds the last error once the limit is hit."""

    consecutive: int = 0
    stopped: str | None = None


async def _run_tasks(
    client: JudgeClient, tasks: list[Task], rubric: Rubric, strategy: str, shard: Shard, config: JudgeConfig, *,
    price: tuple[float, float] | None, secrets: list[str], label: str,
) -> _JudgeResult:
    queue: asyncio.Queue[Task] = asyncio.Queue()
    for t in tasks:
        queue.put_nowait(t)
    outcomes: Counter = Counter()
    usage = Usage()
    state = _StopState()
    started = time.perf_counter()

    with progress() as bar:
        bar_task = bar.add_task(f"judging ({label})", total=len(tasks))

        async def worker() -> None:
            while state.stopped is None:
                try:
                    task = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                record, error_kind = await _judge_task(
                    client, task, rubric, strategy, max_tokens=config.max_tokens, temperature=config.temperature,
                    reasks=config.reasks, secrets=secrets, price=price)
                shard.append([record])
                outcomes[record.outcome] += 1
                usage.add(record.usage)
                if record.usage.cost_usd is not None:
                    usage.cost_usd = (usage.cost_usd or 0.0) + record.usage.cost_usd
                bar.advance(bar_task)
                if error_kind == "connection":
                    state.consecutive += 1
                    if state.consecutive >= config.max_consecutive_failures and state.stopped is None:
                        state.stopped = record.error or "connection failed"
                else:
                    state.consecutive = 0

        workers = [asyncio.create_task(worker()) for _ in range(max(1, min(config.concurrency, len(tasks))))]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
    judged = sum(outcomes.values())
    return _JudgeResult(strategy, outcomes, usage, judged, time.perf_counter() - started,
                        client.stats.http_seconds, state.stopped)


def _capabilities_path(store: RunStore) -> Path:
    return store.root / "judgments" / "capabilities.json"


async def _choose_strategy(client: JudgeClient, store: RunStore, spec: JudgeSpec, structured: str) -> tuple[str, Usage]:
    """The structured-output strategy: forced by the caller, cached for this endpoint, or probed now."""
    if structured != "auto":
        return structured, Usage()
    import json

    path = _capabilities_path(store)
    where = spec.kind if spec.kind in ("local", "vllm") else client.base_url
    cache_id = f"{spec.identity}@{where}"
    try:
        cache = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    hit = cache.get(cache_id)
    if isinstance(hit, dict) and hit.get("strategy") in STRATEGIES:
        return hit["strategy"], Usage()
    result = await probe_strategy(client)
    log(f"judge {spec.identity}: structured output = {result.strategy} ({result.detail})")
    cache[cache_id] = {"strategy": result.strategy, "detail": result.detail, "probed_at": now_iso()}
    atomic_write_json(path, cache)
    return result.strategy, result.usage


def _run_one_judge(
    spec: JudgeSpec, tasks: list[Task], rubric: Rubric, store: RunStore, shard: Shard, config: JudgeConfig,
) -> _JudgeResult:
    """Start the judge's server if it is ours, choose the strategy, judge ``tasks``; the server stops after."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        base_url: str | None = spec.base_url
        model: str | None = spec.model
        if spec.kind in ("local", "vllm"):
            from pspo_eval.judge.server import judge_server

            server = stack.enter_context(judge_server(spec.kind, spec.model))
            base_url, model = server.base_url, server.model_path

        async def main() -> _JudgeResult:
            client = JudgeClient(spec, base_url=base_url, model=model, timeout=config.timeout_for(spec.kind),
                                 max_retries=config.max_retries, backoff_base=config.backoff_base)
            try:
                strategy, probe_usage = await _choose_strategy(client, store, spec, config.structured)
                result = await _run_tasks(client, tasks, rubric, strategy, shard, config,
                                          price=_price_for(spec, config.prices), secrets=known_secrets(spec),
                                          label=spec.identity)
                result.usage.add(probe_usage)
                return result
            finally:
                await client.aclose()

        return asyncio.run(main())


# ---------------------------------------------------------------------------------------------
# The stage


def judge_run(
    run_dir: str | Path, config: JudgeConfig | list[str], rubric: str | Path | None = None, **settings: Any,
) -> JudgeSummary:
    """Judge a run's responses with each judge under one rubric (see the module docstring).

    ``config`` says how (:class:`.config.JudgeConfig`); ``judge_run(run, judges, rubric, **settings)``
    is short for ``judge_run(run, JudgeConfig(judges=judges, rubric=rubric, **settings))``. The caller
    holds the run's lock.
    """
    if isinstance(config, JudgeConfig):
        if rubric is not None or settings:
            raise TypeError("judge_run(run_dir, JudgeConfig) takes no further settings: put them in the config")
    else:
        extra = {"rubric": str(rubric)} if rubric is not None else {}
        config = judge_config(judges=list(config), **extra, **settings)
    started = time.perf_counter()
    store = RunStore(run_dir)
    if not store.root.is_dir():
        raise PspoError(f"run directory {store.root} does not exist", "give the --out directory of `pspo-eval evaluate`")
    if not config.judges:
        raise PspoError("no judge given", "add --judge local, --judge openai:MODEL or --judge URL::MODEL")
    rubric_ = load_rubric(config.rubric)
    specs = _specs(config)
    items = _select_items(store, rubric_, config)
    summary = JudgeSummary(run_dir=str(store.root), rubric=rubric_.ident, judges=[s.identity for s in specs])
    total_usage = Usage()
    new_outcomes: Counter = Counter()
    covered: dict[str, set[str]] = {}
    stop_message: str | None = None
    for spec in specs:
        tasks = _tasks_for(spec, rubric_, items.items, repeats=config.repeats, seed=config.seed,
                           temperature=config.temperature, max_tokens=config.max_tokens)
        covered[spec.identity] = {t.item_key for t in tasks}
        result = _judge_missing(spec, tasks, rubric_, store, config, items.baseline, summary)
        if result is None:
            continue
        new_outcomes.update(result.outcomes)
        total_usage.add(result.usage)
        if result.usage.cost_usd is not None:
            total_usage.cost_usd = (total_usage.cost_usd or 0.0) + result.usage.cost_usd
        if result.stopped is not None:
            stop_message = (f"judge {spec.identity} unreachable: {config.max_consecutive_failures} items in a row "
                            f"failed to connect ({result.stopped}); stopped after {result.judged} items this run")
            break

    summary.new_outcomes = {o: new_outcomes.get(o, 0) for o in OUTCOMES}
    summary.usage = total_usage.model_dump()
    summary.elapsed_s = time.perf_counter() - started
    if stop_message is not None:
        raise PspoError(stop_message, "every finished item is saved: start the judge again and rerun the same "
                                      "command to resume")
    _summarize(summary, store, rubric_, covered)
    return summary


def _specs(config: JudgeConfig) -> list[JudgeSpec]:
    """The judges' parsed specs, duplicates (same identity) dropped, each with its key checked."""
    specs: list[JudgeSpec] = []
    for text in config.judges:
        spec = parse_judge_spec(text, api_key_env=config.api_key_env)
        if spec.identity not in {s.identity for s in specs}:
            specs.append(spec)
    for spec in specs:
        check_key(spec)
    return specs


@dataclass
class _Selection:
    items: list[_Item]
    baseline: str | None  # pairwise with pairs="baseline": the model every other is compared with


def _select_items(store: RunStore, rubric: Rubric, config: JudgeConfig) -> _Selection:
    """The responses to judge (models, datasets, setting, the stratified sample) rendered as items."""
    manifest = store.read_manifest()
    chosen = pick_responses(load_samples(store), models=config.models, datasets=config.datasets,
                            setting=config.setting)
    if config.per_dataset is not None:
        keep = stratified_problems(chosen, config.per_dataset, config.seed)
        chosen = {k: v for k, v in chosen.items() if (k[1], k[2]) in keep}
    baseline = None
    if rubric.mode == "pairwise" and config.pairs == "baseline":
        baseline = _pick_baseline(sorted({k[0] for k in chosen}), config.pairwise_baseline)
    items = _build_items(rubric, chosen, manifest, baseline, config.pairs)
    if not items:
        raise PspoError("nothing to judge: no item pairs two models' responses to one problem"
                        if rubric.mode == "pairwise" else "nothing to judge", "check --model / --dataset / --baseline")
    return _Selection(items, baseline)


def _judge_missing(spec: JudgeSpec, tasks: list[Task], rubric: Rubric, store: RunStore, config: JudgeConfig,
                   baseline: str | None, summary: JudgeSummary) -> _JudgeResult | None:
    """Judge the tasks without a final record yet (None when there are none); counts go into ``summary``."""
    shard = store.shard("judgments", spec.label, rubric.name)
    done = final_keys(shard)
    todo = [t for t in tasks if t.item_key not in done]
    summary.items += len(tasks)
    summary.cached += len(tasks) - len(todo)
    if not todo:
        log(f"judge {spec.identity}: all {len(tasks)} items already judged (no requests sent)")
        return None
    log(f"judge {spec.identity}: {len(todo)} to judge, {len(tasks) - len(todo)} already judged")
    _record_manifest(store, spec, rubric, config.manifest_settings(baseline))
    result = _run_one_judge(spec, todo, rubric, store, shard, config)
    summary.strategies[spec.identity] = result.strategy
    summary.judged += result.judged
    summary.judging_s += result.judging_s
    summary.http_s += result.http_s
    _record_manifest(store, spec, rubric, None, strategy=result.strategy)
    return result


def _summarize(summary: JudgeSummary, store: RunStore, rubric: Rubric, covered: dict[str, set[str]]) -> None:
    """Outcome counts per judge and the aggregation, over every item this call covers (cached ones too)."""
    from pspo_eval.judge.aggregate import aggregate, load_judgments

    frame = load_judgments(store.root, rubric=rubric.name, judges=list(covered))
    if not frame.empty:
        keys = set().union(*covered.values())
        frame = frame[frame["item_key"].isin(keys)]
    summary.outcomes = {
        judge: {o: int((frame[frame["judge"] == judge]["outcome"] == o).sum()) if not frame.empty else 0
                for o in OUTCOMES}
        for judge in covered
    }
    summary.aggregation = aggregate(frame)


def _pick_baseline(models: list[str], wanted: str | None) -> str:
    if wanted is not None:
        if wanted not in models:
            raise PspoError(f"baseline model '{wanted}' has no responses in this selection",
                            f"models: {', '.join(models)}")
        return wanted
    if len(models) == 2:
        log(f"pairwise: comparing against {models[0]} (pass --baseline to choose)")
        return models[0]
    raise PspoError(f"a pairwise rubric needs a baseline model; this run has {len(models)} models",
                    f"pass --baseline NAME (one of: {', '.join(models) or 'none'})")


def _price_for(spec: JudgeSpec, prices: dict[str, tuple[float, float]] | None) -> tuple[float, float] | None:
    if not prices:
        return None
    for name in (spec.identity, spec.model, spec.spec):
        if name in prices:
            return prices[name]
    return None


def _record_manifest(store: RunStore, spec: JudgeSpec, rubric: Rubric, settings: dict | None,
                     strategy: str | None = None) -> None:
    """Note in the manifest how this run was judged (identities and settings; never a key)."""
    manifest = store.read_manifest()
    judging: dict[str, Any] = manifest["judging"] if isinstance(manifest.get("judging"), dict) else {}
    entry_id = f"{spec.label}/{rubric.name}"
    entry = dict(judging.get(entry_id) or {})
    entry.update(judge=spec.identity, spec=redact(spec.spec), kind=spec.kind,
                 base_url=redact_url(spec.base_url) if spec.base_url else None, key_env=spec.key_env,
                 rubric=rubric.name, rubric_version=str(rubric.version), rubric_hash=rubric.content_hash,
                 updated_at=now_iso())
    if settings is not None:
        entry["settings"] = settings
    if strategy is not None:
        entry["structured"] = strategy
    judging[entry_id] = entry
    store.update_manifest(judging=judging)
