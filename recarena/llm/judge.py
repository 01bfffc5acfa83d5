"""LLM judgements "would this user enjoy X?", scored from a causal LM's yes/no next-token logits.

For each (user profile text, item text) pair the judge builds a prompt from
:data:`DEFAULT_JUDGE_PROMPT`, wraps it in the tokenizer's chat template when it has one (as a user
turn followed by the assistant prompt), runs the LM in length-sorted right-padded batches and reads
the logits of the next token after the prompt. With ``Y`` the token ids of "Yes"/"yes"/" Yes"/
" yes" (first token of each) and ``N`` those of the "No" variants,

    P(yes) = softmax([logsumexp(logits[Y]), logsumexp(logits[N])])[0],

so the answer is a probability normalised over the two answers only. Only the last position goes
through the LM head (cheap even with a large vocabulary). Results are cached on disk keyed by the
model fingerprint and the full prompt texts, so a batch of judgements is computed once, offline,
and distilled into the preference model; never call the judge inside an env step.

Prompts longer than ``max_length`` tokens are cut from the left (the question at the end is kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, field_validator

from recarena.core.config import config_dataclass
from recarena.core.errors import ConfigError
from recarena.core.seeding import resolve_device
from recarena.llm.cache import EmbeddingCache, make_key
from recarena.llm.encoder import is_causal_config, load_tokenizer, pad_batch, resolve_dtype, tokenize_sorted
from recarena.llm.models import resolve_model

DEFAULT_JUDGE_PROMPT = (
    "Here is what a user liked before. {profile}\n"
    "Would this user enjoy the following? {item}\n"
    "Answer yes or no."
)
YES_WORDS = ("Yes", "yes", " Yes", " yes")
NO_WORDS = ("No", "no", " No", " no")


@config_dataclass
class JudgeConfig:
    """How to judge.

    model: "smollm2" (packaged SmolLM2-135M-Instruct), a local folder or .gguf file, or a locally
        cached HF id of a causal LM.
    prompt: template with the fields {profile} and {item}.
    use_chat_template: wrap the prompt in the tokenizer's chat template when it has one.
    batch_size, max_length, device, dtype, progress: as in :class:`recarena.llm.EncoderConfig`.
    """

    model: str = "smollm2"
    prompt: str = DEFAULT_JUDGE_PROMPT
    use_chat_template: bool = True
    batch_size: Annotated[int, Field(ge=1)] = 32
    max_length: Annotated[int, Field(ge=8)] = 512
    device: str = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    progress: bool = True

    @field_validator("prompt")
    @classmethod
    def _has_both_fields(cls, prompt: str) -> str:
        for field in ("{profile}", "{item}"):
            if field not in prompt:
                raise ValueError(f"judge prompt must contain {field}: {prompt!r}")
        return prompt


class LLMJudge:
    """P(yes) that a user enjoys an item, from a causal LM (model loaded lazily, on a cache miss)."""

    def __init__(self, config: JudgeConfig | None = None, cache_dir: str | Path | None = None) -> None:
        self.config = config or JudgeConfig()
        self.cache_dir = cache_dir
        self.source = resolve_model(self.config.model)
        self.device = resolve_device(self.config.device)
        self.dtype = resolve_dtype(self.config.dtype, self.device)
        self._tokenizer: Any = None
        self._model: Any = None
        self._cache = EmbeddingCache(cache_dir, "judgements")

    # -- model ------------------------------------------------------------------------------

    def _model_dir(self) -> Path:
        return self.source.local_dir(self.cache_dir, progress=self.config.progress)

    @property
    def tokenizer(self) -> Any:
        """The tokenizer (loaded without the model, so cache hits stay cheap)."""
        if self._tokenizer is None:
            tokenizer = load_tokenizer(self._model_dir())
            tokenizer.truncation_side = "left"
            self._yes_ids = _answer_ids(tokenizer, YES_WORDS)
            self._no_ids = _answer_ids(tokenizer, NO_WORDS)
            if set(self._yes_ids) & set(self._no_ids):
                raise ConfigError(f"the tokenizer of '{self.config.model}' does not tell 'yes' from 'no'")
            self._tokenizer = tokenizer
        return self._tokenizer

    def _load_model(self) -> Any:
        if self._model is None:
            from transformers import AutoConfig, AutoModelForCausalLM

            model_dir = self._model_dir()
            if not is_causal_config(AutoConfig.from_pretrained(model_dir, local_files_only=True)):
                raise ConfigError(f"judge model '{self.config.model}' is not a causal LM")
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=self.dtype, local_files_only=True)
            self._model = model.to(self.device).eval()
        return self._model

    # -- prompts ----------------------------------------------------------------------------

    def prompts(self, profiles: Sequence[str], items: Sequence[str]) -> list[str]:
        """The full prompt text of each (profile, item) pair, chat template applied where used."""
        if isinstance(profiles, str) or isinstance(items, str):
            raise TypeError("profiles and items must be sequences of strings")
        if len(profiles) != len(items):
            raise ValueError(f"got {len(profiles)} profiles but {len(items)} items")
        questions = [
            self.config.prompt.format(profile=p, item=i) for p, i in zip(profiles, items, strict=True)
        ]
        tokenizer = self.tokenizer
        if not (self.config.use_chat_template and getattr(tokenizer, "chat_template", None)):
            return questions
        return [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
            )
            for q in questions
        ]

    def _uses_chat_template(self) -> bool:
        return bool(self.config.use_chat_template and getattr(self.tokenizer, "chat_template", None))

    # -- scoring ----------------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        """Cache identity: model files and every setting that changes the probabilities."""
        return {
            "kind": "llm-judge",
            "model": self.source.fingerprint(),
            "dtype": str(self.dtype),
            "max_length": self.config.max_length,
            "yes": YES_WORDS,
            "no": NO_WORDS,
        }

    @torch.inference_mode()
    def score_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """P(yes) for finished prompt texts (no cache): float32 CPU ``[len(prompts)]``."""
        from tqdm.auto import tqdm

        model = self._load_model()
        tokenizer = self.tokenizer
        prompts = list(prompts)
        out = torch.zeros(len(prompts), dtype=torch.float32)
        if not prompts:
            return out
        encoded, order = tokenize_sorted(
            tokenizer, prompts, self.config.max_length, add_special_tokens=not self._uses_chat_template()
        )
        yes = torch.tensor(self._yes_ids, device=self.device)
        no = torch.tensor(self._no_ids, device=self.device)
        head = model.get_output_embeddings()
        batch = self.config.batch_size
        starts = range(0, len(order), batch)
        bar = tqdm(
            starts,
            desc=f"judging {len(prompts)} pairs",
            unit="batch",
            disable=not self.config.progress or len(starts) <= 1,
        )
        for start in bar:
            index = order[start : start + batch]
            ids, mask = pad_batch([encoded[i] for i in index], tokenizer.pad_token_id, self.device)
            hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
            last = mask.sum(dim=1) - 1  # right padding: the last real token
            logits = head(hidden[torch.arange(len(index), device=self.device), last]).float()
            margin = torch.logsumexp(logits[:, yes], dim=1) - torch.logsumexp(logits[:, no], dim=1)
            out[torch.tensor(index)] = torch.sigmoid(margin).cpu()
        return out

    def judge(self, profiles: Sequence[str], items: Sequence[str]) -> torch.Tensor:
        """P(yes) for each (profile, item) pair, float32 CPU ``[n]``, cached on disk by prompt content."""
        prompts = self.prompts(profiles, items)
        key = make_key(self.identity(), prompts)
        cached = self._cache.get(key, rows=len(prompts))
        if cached is not None:
            return cached
        probabilities = self.score_prompts(prompts)
        self._cache.put(
            key, probabilities, {**self.identity(), "model_name": self.config.model, "n_pairs": len(prompts)}
        )
        return probabilities


def _answer_ids(tokenizer: Any, words: Sequence[str]) -> list[int]:
    """Distinct first-token ids of each answer word (without special tokens)."""
    ids: list[int] = []
    for word in words:
        tokens = tokenizer.encode(word, add_special_tokens=False)
        if tokens and tokens[0] not in ids:
            ids.append(tokens[0])
    if not ids:
        raise ConfigError(f"the tokenizer cannot encode any of {list(words)}")
    return ids
