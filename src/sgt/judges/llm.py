"""LLM judge: any OpenAI-compatible chat endpoint scores each answer on the 1-5 harmfulness rubric.

This is the judge behind published harmfulness numbers (METHOD.md, "Evaluation"), so it must be
honest and cheap to re-run:
  * an answer we cannot parse is recorded as "unparsed" and counted, never scored as safe (the
    reference code silently scored it 1, which biases every defense toward looking safe);
  * every paid answer is cached on disk, so a re-run or a resumed run never pays twice; failures
    of the transport (rate limits, timeouts, 5xx) are not cached, so a re-run retries them;
  * rate limits and server errors are retried with capped exponential backoff, and one bad item
    never kills a 500-prompt run; a wrong key, wrong model or wrong URL stops at once instead,
    because every other request would fail the same way.
The API key is read from an environment variable only, and never logged, printed or stored.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import random
import re
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from ..config import cfg
from ..errors import UserError
from .registry import JUDGES, Judgment
from .rubrics import (  # noqa: F401 - DEFAULT_TEMPLATE, parse_answer: part of this module's API
    DEFAULT_TEMPLATE,
    RUBRICS,
    load_template,
    parse_answer,
    parse_strongreject,
)

CACHE_VERSION = 1  # bump if the cached record's meaning changes


class _Fatal(Exception):
    """A failure that every request would hit (key, model, URL): stop the whole run."""


@dataclass
class LLMOptions:
    model: str = cfg("", "The judge model name (e.g. gpt-4.1).")
    base_url: str | None = cfg(None, "Base URL of an OpenAI-compatible API (default: OpenAI, or $OPENAI_BASE_URL).")
    api_key_env: str = cfg("OPENAI_API_KEY", "Name of the environment variable holding the API key (never the key).")
    template: str | None = cfg(None, "A prompt template file with {prompt} and {response}, answered with a 1-5 "
                                     "#score line (replaces the qi rubric).")
    rubrics: list[str] = cfg(["qi"], "Built-in rubrics, each judged separately: qi (1-5 harmfulness, Qi et al. 2023; "
                                     "the first one sets harmful_rate) and/or strongreject (0-1 score).")
    concurrency: int = cfg(8, "Requests in flight at once.")
    max_retries: int = cfg(5, "Retries per request on 429/5xx/timeouts (exponential backoff).")
    timeout: float = cfg(60.0, "Seconds before a request times out.")
    cache_dir: str | None = cfg(None, "Cache folder (default: ~/.cache/sgt/judge); a re-run never pays twice.")


@JUDGES.register
class LLMJudge:
    name = "llm"
    Options = LLMOptions
    backoff_base = 1.0    # seconds before the first retry; doubles each retry
    backoff_cap = 60.0    # longest wait between two attempts (Retry-After is capped by it too)

    def __init__(self, model: str = "", base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 template: str | None = None, concurrency: int = 8, max_retries: int = 5,
                 timeout: float = 60.0, cache_dir: str | None = None, backoff_base: float | None = None,
                 progress: bool = True, rubrics: list[str] | None = None):
        if not model:
            raise UserError("the llm judge needs a model name: pass --judge-options model=NAME (YAML: "
                            "judge_options: {model: NAME}, e.g. gpt-4.1)")
        if concurrency < 1:
            raise UserError(f"judge concurrency must be at least 1, got {concurrency}")
        if max_retries < 0:
            raise UserError(f"judge max_retries must be 0 or more, got {max_retries}")
        if not timeout or timeout <= 0:
            raise UserError(f"judge timeout must be a positive number of seconds, got {timeout}")
        self.model = model
        self.api_key_env = api_key_env
        self.rubrics = list(rubrics or ["qi"])
        unknown = [r for r in self.rubrics if r not in RUBRICS]
        if unknown or not self.rubrics:
            raise UserError(f"unknown judge rubric(s) {unknown}: use qi and/or strongreject")
        self.templates = {r: load_template(template) if r == "qi" else RUBRICS[r] for r in self.rubrics}
        self.template = self.templates[self.rubrics[0]]
        self.concurrency = int(concurrency)
        self.max_retries = int(max_retries)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else Path("~/.cache/sgt/judge").expanduser()
        if backoff_base is not None:
            self.backoff_base = float(backoff_base)
        self.progress = progress
        self.client = _make_client(_api_key(api_key_env), base_url, float(timeout))
        # The URL the client really uses (it may come from OPENAI_BASE_URL): part of the cache key.
        self.base_url = str(self.client.base_url)
        self.calls = 0        # HTTP attempts made (retries included)
        self.cache_hits = 0   # items answered from the cache
        self._lock = threading.Lock()
        self._stop = threading.Event()

    # -- public ---------------------------------------------------------------------------------

    def judge(self, pairs: list[tuple[str, str]]) -> list[Judgment]:
        """One Judgment per (prompt, response), in order; identical pairs are asked once per rubric.
        With several rubrics, the first gives the verdict and every rubric's score is in `scores`."""
        per_rubric = {rubric: self._judge_all(pairs, rubric) for rubric in self.rubrics}
        out = []
        for i in range(len(pairs)):
            main = per_rubric[self.rubrics[0]][i]
            if len(self.rubrics) > 1:
                main.scores = {r: per_rubric[r][i].score for r in self.rubrics}
                failed = [r for r in self.rubrics if per_rubric[r][i].label == "failed"]
                if failed and main.label != "failed":  # any failed rubric makes the item to be judged again
                    main = Judgment(harmful=None, label="failed", reason=per_rubric[failed[0]][i].reason,
                                    scores=main.scores)
            out.append(main)
        return out

    def _judge_all(self, pairs: list[tuple[str, str]], rubric: str) -> list[Judgment]:
        from tqdm.auto import tqdm

        keys = [self.cache_key(p, r, rubric) for p, r in pairs]
        results: dict[str, Judgment] = {}
        todo: dict[str, tuple[str, str]] = {}
        for key, pair in zip(keys, pairs):
            if key in results or key in todo:
                continue
            cached = self._read_cache(key)
            if cached is not None:
                results[key] = cached
                self.cache_hits += 1
            else:
                todo[key] = pair
        bar = tqdm(total=len(todo), desc=f"judge ({rubric})", leave=False,
                   disable=not (self.progress and sys.stderr.isatty()))
        self._stop.clear()
        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        try:
            futures = {pool.submit(self._judge_one, key, rubric, *pair): key for key, pair in todo.items()}
            for future in as_completed(futures):  # a fatal error surfaces as soon as it happens
                results[futures[future]] = future.result()
                bar.update(1)
        except _Fatal as exc:
            self._stop.set()  # in-flight workers give up instead of retrying
            raise UserError(str(exc)) from None
        finally:
            self._stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
        return [results[key] for key in keys]

    def cache_key(self, prompt: str, response: str, rubric: str = "qi") -> str:
        material = json.dumps([CACHE_VERSION, self.model, self.base_url, self.templates[rubric], prompt, response],
                              ensure_ascii=False)
        return hashlib.sha256(material.encode("utf-8")).hexdigest()

    def render(self, prompt: str, response: str, rubric: str | None = None) -> str:
        # One pass over the template, so braces in the prompt/response are never re-substituted
        # (and templates may contain other braces, e.g. JSON examples).
        values = {"{prompt}": prompt, "{response}": response}
        template = self.templates[rubric or self.rubrics[0]]
        return re.sub(r"\{prompt\}|\{response\}", lambda m: values[m.group(0)], template)

    # -- one item ---------------------------------------------------------------------------------

    def _judge_one(self, key: str, rubric: str, prompt: str, response: str) -> Judgment:
        answer, error = self._ask(self.render(prompt, response, rubric))
        if error is not None:
            # "failed", not "unparsed", and not cached: no answer was received, so a re-run tries again.
            return Judgment(harmful=None, score=None, label="failed", reason=error)
        judgment = parse_strongreject(answer) if rubric == "strongreject" else parse_answer(answer)
        self._write_cache(key, judgment, answer)  # paid for, so cached even when malformed
        return judgment

    def _ask(self, text: str) -> tuple[str, str | None]:
        """(answer, None) on success, ("", error) once retries are spent; raises _Fatal."""
        import openai

        error = "not attempted"
        for attempt in range(self.max_retries + 1):
            if self._stop.is_set():
                return "", "cancelled: the run stopped"
            with self._lock:
                self.calls += 1
            wait = None
            try:
                reply = self.client.chat.completions.create(
                    model=self.model, temperature=0, messages=[{"role": "user", "content": text}])
                answer = _content(reply)
                if answer is not None:
                    return answer, None
                # not an answer at all (no choices, e.g. a proxy's error page): retried, never cached
                error = "the judge endpoint returned no choices (is base_url an OpenAI-compatible API?)"
            except (openai.APIResponseValidationError, ValueError) as exc:
                # a body the client cannot read (cut-off JSON...): a transport failure, retried
                error = f"unreadable response: {_short(str(exc))}"
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                raise _Fatal(f"the judge endpoint {self.base_url} refused the API key in ${self.api_key_env} "
                             f"(HTTP {exc.status_code}): check the key and its access to {self.model!r}") from None
            except openai.NotFoundError as exc:
                raise _Fatal(f"the judge endpoint {self.base_url} answered 404 for model {self.model!r} "
                             f"({_short(exc.message)}): check the judge options model and base_url") from None
            except openai.APIStatusError as exc:
                error = f"HTTP {exc.status_code}: {_short(exc.message)}"
                if not _retryable_status(exc.status_code):
                    return "", error  # e.g. 400 for this one input: retrying cannot help
                wait = _retry_after(exc.response.headers)
            except openai.APIConnectionError as exc:  # includes timeouts
                error = f"{type(exc).__name__}: {_short(str(exc))}"
            if attempt < self.max_retries:
                self._stop.wait(self._delay(attempt, wait))
        tries = self.max_retries + 1
        return "", f"judge request failed after {tries} attempt{'s' * (tries > 1)}: {error}"

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter (so parallel workers do not retry in lockstep)."""
        if retry_after is not None:
            return min(self.backoff_cap, max(0.0, retry_after))
        base = min(self.backoff_cap, self.backoff_base * 2 ** attempt)
        return min(self.backoff_cap, base * (1 + 0.25 * random.random()))

    # -- cache ----------------------------------------------------------------------------------

    def _cache_path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def _read_cache(self, key: str) -> Judgment | None:
        path = self._cache_path(key)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            return Judgment(**record["judgment"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a damaged entry is just a miss: the item is asked again and rewritten

    def _write_cache(self, key: str, judgment: Judgment, answer: str) -> None:
        # Only the verdict and the judge's own answer are stored: no key, no headers, no URL.
        record = {"version": CACHE_VERSION, "model": self.model, "judgment": judgment.as_dict(), "answer": answer}
        path = self._cache_path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:8]}.", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(record, handle, ensure_ascii=False)
            os.replace(tmp, path)
        except OSError as exc:
            raise _Fatal(f"cannot write the judge cache in {self.cache_dir}: {exc.strerror}; "
                         "set the judge option cache_dir to a writable folder (--judge-options cache_dir=DIR)") from None


# -------------------------------------------------------------------------------------------------
# Helpers
# -------------------------------------------------------------------------------------------------


def _api_key(env: str) -> str:
    key = os.environ.get(env, "").strip()
    if not key:
        raise UserError(f"the llm judge reads its API key from the environment variable {env}, which is not set: "
                        f"run `export {env}=...` (any value for a local server without keys), "
                        "or name another variable with the judge option api_key_env (--judge-options api_key_env=NAME)")
    return key


def _make_client(key: str, base_url: str | None, timeout: float):
    try:
        import openai
    except ImportError:
        raise UserError("the llm judge needs the openai package: pip install openai") from None

    # Retries are ours (bounded, counted, cache-aware), so the client's own are off.
    options = {"api_key": key, "timeout": timeout, "max_retries": 0}
    if base_url:
        options["base_url"] = base_url
    try:
        return openai.OpenAI(**options)
    except openai.OpenAIError as exc:
        raise UserError(f"cannot set up the judge client: {_short(str(exc))}") from None


def _content(reply) -> str | None:
    """The answer text; None when the reply has no choice at all. An empty message (e.g. a content
    filter) is an answer, paid for: it comes back as "" and ends up unparsed and cached."""
    choices = getattr(reply, "choices", None)
    if not choices:
        return None
    message = getattr(choices[0], "message", None)
    return (getattr(message, "content", None) or "").strip()


def _retryable_status(status: int) -> bool:
    return status in (408, 409, 429) or status >= 500


def _retry_after(headers) -> float | None:
    """Seconds asked by the server (Retry-After in seconds or as a date, or retry-after-ms)."""
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return float(millis) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _short(text: str, limit: int = 200) -> str:
    line = (str(text).strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[:limit] + "..."
