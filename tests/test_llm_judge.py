"""Tests for llm.LLMJudge: yes/no probabilities from a tiny random causal LM, batching, caching."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from recarena import llm
from recarena.core.config import from_dict
from recarena.core.errors import ConfigError
from tests._tiny_models import build_tiny_bert, build_tiny_llama

CHAT_TEMPLATE = (
    "{% for m in messages %}[{{ m.role }}] {{ m.content }} {% endfor %}"
    "{% if add_generation_prompt %}[assistant]{% endif %}"
)
PROFILES = [
    "Liked: Toy Story (1995).",
    "Liked: Heat (1995), Casino (1995). Favourite genres: Crime.",
    "No liked items yet.",
]
ITEMS = ["Title: Aladdin. Year: 1992", "Title: Se7en. Year: 1995. Genres: Crime, Thriller", "Title: Babe"]


def _build(path: Path, kind: str, chat_template: bool = True, seed: int = 0) -> Path:
    if kind == "llama":
        return build_tiny_llama(path, seed, max_positions=256, chat_template=CHAT_TEMPLATE if chat_template else None)
    return build_tiny_bert(path, seed, layers=1, max_positions=512)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("judge_llama"), "llama")


def _judge(model: Path, cache: Path, **overrides) -> llm.LLMJudge:
    config = llm.JudgeConfig(model=str(model), device="cpu", progress=False, **overrides)
    return llm.LLMJudge(config, cache_dir=cache)


def test_judge_probabilities_known_answer_from_full_forward(tmp_path, tiny_llama):
    from transformers import AutoModelForCausalLM

    judge = _judge(tiny_llama, tmp_path)
    probabilities = judge.judge(PROFILES, ITEMS)
    assert probabilities.shape == (3,) and probabilities.dtype == torch.float32
    assert bool(((probabilities >= 0) & (probabilities <= 1)).all())
    # known answer: softmax over the two answers of the full model's last-position logits
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    tokenizer = judge.tokenizer
    yes = [tokenizer.encode(w, add_special_tokens=False)[0] for w in ("yes",)]
    no = [tokenizer.encode(w, add_special_tokens=False)[0] for w in ("no",)]
    assert judge._yes_ids == yes and judge._no_ids == no  # the uncased tokenizer merges the variants
    for row, prompt in enumerate(judge.prompts(PROFILES, ITEMS)):
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, -1]
        expected = torch.softmax(torch.stack([logits[yes[0]], logits[no[0]]]), dim=0)[0]
        assert torch.isclose(probabilities[row], expected, atol=1e-5)


def test_judge_batch_equals_one_by_one(tmp_path, tiny_llama):
    judge = _judge(tiny_llama, tmp_path / "a", batch_size=2)
    batched = judge.score_prompts(judge.prompts(PROFILES, ITEMS))
    single = torch.cat(
        [judge.score_prompts(judge.prompts([p], [i])) for p, i in zip(PROFILES, ITEMS, strict=True)]
    )
    assert torch.allclose(batched, single, atol=1e-5)
    assert len(set(batched.tolist())) == 3  # different pairs get different answers


def test_judge_uses_chat_template_when_present(tmp_path, tiny_llama):
    with_template = _judge(tiny_llama, tmp_path).prompts(PROFILES[:1], ITEMS[:1])[0]
    assert with_template.startswith("[user] Here is what a user liked before. Liked: Toy Story (1995).")
    assert with_template.endswith("Answer yes or no. [assistant]")
    plain = _judge(tiny_llama, tmp_path, use_chat_template=False).prompts(PROFILES[:1], ITEMS[:1])[0]
    assert plain == llm.DEFAULT_JUDGE_PROMPT.format(profile=PROFILES[0], item=ITEMS[0])
    without = _build(tmp_path / "plain_llama", "llama", chat_template=False)
    assert _judge(without, tmp_path).prompts(PROFILES[:1], ITEMS[:1])[0] == plain


def test_judge_cache_hit_skips_model_and_changes_invalidate(tmp_path, tiny_llama, monkeypatch):
    first = _judge(tiny_llama, tmp_path).judge(PROFILES, ITEMS)
    fresh = _judge(tiny_llama, tmp_path)
    monkeypatch.setattr(fresh, "_load_model", lambda: (_ for _ in ()).throw(AssertionError("model loaded")))
    assert torch.equal(fresh.judge(PROFILES, ITEMS), first)
    with pytest.raises(AssertionError, match="model loaded"):  # a changed item is a miss
        fresh.judge(PROFILES, ITEMS[:2] + ["Title: Fargo"])
    other_prompt = _judge(tiny_llama, tmp_path, prompt="{profile} Enjoy {item}? yes or no")
    monkeypatch.setattr(
        other_prompt, "_load_model", lambda: (_ for _ in ()).throw(AssertionError("model loaded"))
    )
    with pytest.raises(AssertionError, match="model loaded"):  # a changed prompt is a miss
        other_prompt.judge(PROFILES, ITEMS)
    other_model = _build(tmp_path / "other_llama", "llama", seed=1)
    changed = _judge(other_model, tmp_path).judge(PROFILES, ITEMS)
    assert not torch.allclose(changed, first)
    assert len(list((tmp_path / "judgements").glob("*.safetensors"))) == 2


def test_judge_empty_and_invalid_inputs(tmp_path, tiny_llama):
    judge = _judge(tiny_llama, tmp_path)
    assert judge.judge([], []).shape == (0,)
    with pytest.raises(ValueError, match="2 profiles but 1 items"):
        judge.judge(PROFILES[:2], ITEMS[:1])
    with pytest.raises(TypeError):
        judge.judge("one profile", "one item")


def test_judge_config_validation():
    assert from_dict(llm.JudgeConfig, {"batch_size": 4}).batch_size == 4
    with pytest.raises(ConfigError, match="valid keys"):
        from_dict(llm.JudgeConfig, {"temperature": 1.0})
    with pytest.raises(ConfigError, match=r"\{item\}"):
        llm.JudgeConfig(prompt="Would {profile} like it?")
    with pytest.raises(ConfigError):
        llm.JudgeConfig(batch_size=0)


def test_judge_rejects_encoder_only_model(tmp_path):
    bert = _build(tmp_path / "bert", "bert", chat_template=False)
    with pytest.raises(ConfigError, match="not a causal LM"):
        _judge(bert, tmp_path).judge(PROFILES, ITEMS)


@pytest.mark.slow
def test_smollm2_judge(tmp_path):
    start = time.perf_counter()
    judge = llm.LLMJudge(llm.JudgeConfig(progress=False), cache_dir=tmp_path)
    probabilities = judge.judge(PROFILES, ITEMS)
    elapsed = time.perf_counter() - start
    print(f"SmolLM2 judge, 3 pairs incl. GGUF conversion: {elapsed:.1f} s")
    assert probabilities.shape == (3,) and bool(((probabilities > 0) & (probabilities < 1)).all())
    assert "<|im_start|>assistant" in judge.prompts(PROFILES[:1], ITEMS[:1])[0]
    assert torch.allclose(probabilities, judge.score_prompts(judge.prompts(PROFILES, ITEMS)), atol=1e-5)
