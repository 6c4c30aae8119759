"""Each encoder in the registry, through its real loading code, on tiny random models."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from extract_helpers import TINY_CLIP, tiny_bert, tiny_gpt2, tiny_sentence_transformer
from PIL import Image

from features.encoders import EncoderError, build_encoder, registered


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "bert": tiny_bert(root / "bert"),
        "gpt2": tiny_gpt2(root / "gpt2"),
        "st": tiny_sentence_transformer(root / "st"),
    }


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)) for _ in range(n)]


def _clip(**kw):
    spec = {"encoder": "open_clip", "model": "tiny-clip", "model_config": TINY_CLIP, "pretrained": None}
    return build_encoder({**spec, "allow_random_init": True, **kw})


def test_registry_names_every_encoder() -> None:
    assert {"open_clip", "sentence-transformers", "hf-llm", "precomputed"} <= set(registered())
    with pytest.raises(EncoderError, match="unknown encoder 'nope'"):
        build_encoder({"encoder": "nope"})


def test_open_clip_random_init_describes_without_loading() -> None:
    enc = _clip(seed=3)
    assert not enc.loaded and enc.dim == 32 and "random-init(seed=3)" in enc.id
    assert enc.describe()["random_weights"] is True
    x = enc.encode(_images(3))
    assert enc.loaded and x.shape == (3, 32) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(x, _clip(seed=3).encode(_images(3)))  # seeded init is reproducible
    text = _clip(modality="text")
    assert text.encode(["a red shoe", "blue"]).shape == (2, 32)
    assert text.truncation(["word " * 100, "short"])[0].startswith("102 tokens > context_length 77")


def test_open_clip_loads_a_local_checkpoint_with_its_checksum_in_the_id(tmp_path) -> None:
    import open_clip
    import torch

    open_clip.add_model_config(TINY_CLIP)
    torch.manual_seed(123)
    net = open_clip.create_model("tiny-clip", pretrained=None).eval()
    ckpt = tmp_path / "tiny.pt"
    torch.save(net.state_dict(), ckpt)
    enc = _clip(pretrained=str(ckpt), allow_random_init=False)
    assert enc.weights.startswith("file:tiny.pt@") and not enc.describe()["random_weights"]
    assert not enc.loaded
    imgs = _images(2)
    with torch.inference_mode():
        want = torch.nn.functional.normalize(
            net.encode_image(torch.stack([enc.preprocess(i) for i in imgs])), dim=-1
        )
    np.testing.assert_allclose(enc.encode(imgs), want.numpy(), atol=1e-6)
    # Different weights in the same file name: a different id, so the cache cannot serve stale vectors.
    torch.manual_seed(7)
    torch.save(open_clip.create_model("tiny-clip", pretrained=None).state_dict(), ckpt)
    assert _clip(pretrained=str(ckpt)).id != enc.id


def test_open_clip_weights_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(EncoderError, match="checkpoint file .*missing.pt' does not exist"):
        _clip(pretrained=str(tmp_path / "missing.pt"))
    with pytest.raises(EncoderError, match="allow_random_init is false"):
        _clip(allow_random_init=False)
    with pytest.raises(EncoderError, match="unknown architecture 'ViT-Nope'"):
        _clip(model="ViT-Nope")
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a checkpoint")
    enc = _clip(pretrained=str(bad))
    with pytest.raises(EncoderError, match="cannot load weights"):
        enc.load()
    # An unavailable tag falls back to seeded random weights only when allowed, and says so.
    fallback = build_encoder(
        {"encoder": "open_clip", "model": "ViT-B-32", "pretrained": "openai", "allow_random_init": True}
    )
    assert fallback.weights.startswith("random-init(seed=0; 'openai' unavailable") and fallback.dim == 512


def test_sentence_transformers_bundled_minilm_and_a_saved_folder(models) -> None:
    minilm = build_encoder({"encoder": "sentence-transformers", "model": "all-MiniLM-L6-v2"})
    assert not minilm.loaded and minilm.dim == 384 and minilm.max_seq_length == 256
    assert minilm.id.startswith("sentence-transformers:all-MiniLM-L6-v2:model@")
    tiny = build_encoder(
        {"encoder": "sentence-transformers", "model": str(models["st"]), "max_seq_length": 8}
    )
    assert not tiny.loaded and tiny.dim == 32 and "len8" in tiny.id and ":st:" in tiny.id
    x = tiny.encode(["hello there", "general kenobi"])
    assert x.shape == (2, 32) and tiny._resource.get_embedding_dimension() == tiny.dim
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    notes = tiny.truncation(["one two three four five six seven eight nine", "short"])
    assert notes[0].endswith("> max_seq_length 8, cut") and notes[1] is None
    with pytest.raises(EncoderError, match="not a local folder"):
        build_encoder({"encoder": "sentence-transformers", "model": "org/not-cached-anywhere"})


def test_hf_llm_mean_pooling_matches_a_manual_computation(models) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    enc = build_encoder(
        {
            "encoder": "hf-llm",
            "model": str(models["bert"]),
            "pooling": "mean",
            "normalize": False,
            "max_length": 32,
        }
    )
    assert not enc.loaded and enc.dim == 32 and ":bert@" in enc.id and ":mean:len32:" in enc.id
    texts = ["a tiny test", "another somewhat longer test sentence here"]
    x = enc.encode(texts)
    tok, net = AutoTokenizer.from_pretrained(models["bert"]), AutoModel.from_pretrained(models["bert"]).eval()
    for i, t in enumerate(texts):
        with torch.inference_mode():
            h = net(**tok([t], return_tensors="pt")).last_hidden_state[0]
        np.testing.assert_allclose(x[i], h.mean(0).numpy(), atol=1e-5)


def test_hf_llm_last_token_pooling_ignores_padding_and_records_truncation(models) -> None:
    spec = {"encoder": "hf-llm", "model": str(models["gpt2"]), "pooling": "last", "max_length": 12}
    enc = build_encoder({**spec, "prompt": "Item: {text}\nEmbedding:"})
    assert enc.dim == 24 and enc.id != build_encoder(spec).id  # the prompt is part of the id
    alone = enc.encode(["short one"])
    padded = enc.encode(["short one", "a much longer text that forces padding of the short one"])
    np.testing.assert_allclose(padded[0], alone[0], atol=1e-5)
    notes = enc.truncation(["short", "word " * 40])
    assert notes[0] is None and "> max_length 12, cut" in notes[1]
    with pytest.raises(EncoderError, match="placeholder"):
        build_encoder({**spec, "prompt": "no placeholder"})
    with pytest.raises(EncoderError, match="pooling must be one of"):
        build_encoder({**spec, "pooling": "cls"})


def test_precomputed_npy_with_id_file(tmp_path) -> None:
    m = np.arange(12, dtype=np.float32).reshape(4, 3)
    m[2, 1] = np.nan
    np.save(tmp_path / "v.npy", m)
    (tmp_path / "ids.txt").write_text("a\nb\nc\nd\n")
    enc = build_encoder(
        {"encoder": "precomputed", "path": str(tmp_path / "v.npy"), "ids": str(tmp_path / "ids.txt")}
    )
    assert enc.modality == "item_id" and enc.dim == 3 and not enc.loaded and "v.npy@" in enc.id
    assert enc.unusable(["d", "zz", "c"]) == [
        None,
        "no precomputed vector",
        "null or non-finite precomputed vector",
    ]
    np.testing.assert_array_equal(enc.encode(["d", "a"]), m[[3, 0]])
    (tmp_path / "dup.json").write_text(json.dumps(["a", "b", "a", "d"]))
    with pytest.raises(EncoderError, match="'a' appears twice"):
        build_encoder(
            {"encoder": "precomputed", "path": str(tmp_path / "v.npy"), "ids": str(tmp_path / "dup.json")}
        ).load()
    with pytest.raises(EncoderError, match="give `ids:`"):
        build_encoder({"encoder": "precomputed", "path": str(tmp_path / "v.npy")})


def test_precomputed_mmrec_layout_row_index_and_tab_separated_mapping(tmp_path) -> None:
    """MMRec ships image_feat.npy with row r = item id r, and a tab-separated i_id_mapping.csv."""
    m = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.save(tmp_path / "image_feat.npy", m)
    by_row = build_encoder(
        {"encoder": "precomputed", "path": str(tmp_path / "image_feat.npy"), "ids": "row_index"}
    )
    np.testing.assert_array_equal(by_row.encode(["2", "0"]), m[[2, 0]])
    assert by_row.unusable(["3"]) == ["no precomputed vector"]
    (tmp_path / "i_id_mapping.csv").write_text("asin\titemID\nB01\t0\nB02\t1\nB03\t2\n")
    by_asin = build_encoder(
        {
            "encoder": "precomputed",
            "path": str(tmp_path / "image_feat.npy"),
            "ids": str(tmp_path / "i_id_mapping.csv"),
            "id_column": "asin",
        }
    )
    np.testing.assert_array_equal(by_asin.encode(["B03"]), m[[2]])


def test_precomputed_parquet_keyed_by_item_id(tmp_path) -> None:
    vecs = [[3.0, 4.0], None, [1.0, 0.0]]
    pq.write_table(
        pa.table({"asin": ["x", "y", "z"], "feat": pa.array(vecs, pa.list_(pa.float32()))}),
        tmp_path / "f.parquet",
    )
    spec = {
        "encoder": "precomputed",
        "path": str(tmp_path / "f.parquet"),
        "id_column": "asin",
        "vector_column": "feat",
    }
    enc = build_encoder({**spec, "normalize": True})
    assert enc.dim == 2 and enc.normalized
    assert enc.unusable(["x", "y", "w"]) == [
        None,
        "null or non-finite precomputed vector",
        "no precomputed vector",
    ]
    np.testing.assert_allclose(enc.encode(["x", "z"]), [[0.6, 0.8], [1.0, 0.0]])
    with pytest.raises(EncoderError, match="has no column 'embedding'"):
        build_encoder({**spec, "vector_column": "embedding"})
    pq.write_table(pa.table({"asin": ["x", "y"], "feat": [[1.0, 2.0], [1.0]]}), tmp_path / "ragged.parquet")
    with pytest.raises(EncoderError, match="row 1 .*has 1 values; expected 2"):
        build_encoder({**spec, "path": str(tmp_path / "ragged.parquet")}).load()


# --- the id covers everything the encoder loads (and the library versions) --------------------


def test_sentence_transformers_id_covers_every_file_of_the_folder(models, tmp_path) -> None:
    folder = shutil.copytree(models["st"], tmp_path / "st")
    spec = {"encoder": "sentence-transformers", "model": str(folder)}
    base = build_encoder(spec)
    assert base.id.startswith(f"sentence-transformers:st:st@{base.tree.checksum}:len64:l2:st-2:libs@")
    assert {"modules.json", "1_Pooling/config.json", "tokenizer.json", "model.safetensors"} <= set(
        base.tree.files
    )
    parts = base.describe()["cache_key_parts"]
    assert parts["model_folder"] == base.tree.describe() and "sentence-transformers" in parts["libraries"]
    ids = {base.id}
    for rel, change in (
        ("1_Pooling/config.json", lambda t: t.replace('"mean"', '"cls"')),
        ("tokenizer_config.json", lambda t: t.replace("{", '{"do_lower_case": false, ', 1)),
        ("modules.json", lambda t: t + "\n"),
        ("2_Extra/custom.py", lambda t: "X = 1\n"),  # a new module folder / custom code
    ):
        path = folder / rel
        path.parent.mkdir(exist_ok=True)
        path.write_text(change(path.read_text() if path.exists() else ""))
        new = build_encoder(spec).id
        assert new not in ids, rel  # each change gives a new id
        ids.add(new)


def test_a_library_version_change_changes_every_id(models, monkeypatch) -> None:
    import features.encoders.base as encoders_base

    st = build_encoder({"encoder": "sentence-transformers", "model": str(models["st"])})
    llm = build_encoder({"encoder": "hf-llm", "model": str(models["bert"])})
    clip = _clip()
    before = {e.name: e.id for e in (st, llm, clip)}
    real = encoders_base.library_version
    monkeypatch.setattr(encoders_base, "library_version", lambda d: "0.0-test" if d == "torch" else real(d))
    assert all(e.id != before[e.name] for e in (st, llm, clip))
    assert st.describe()["cache_key_parts"]["libraries"]["torch"] == "0.0-test"


def test_hf_llm_trust_remote_code_lists_and_hashes_the_code_files(models, tmp_path) -> None:
    folder = shutil.copytree(models["bert"], tmp_path / "bert")
    (folder / "modeling_custom.py").write_text("# custom model code\n")
    spec = {"encoder": "hf-llm", "model": str(folder)}
    off = build_encoder(spec)
    desc = off.describe()
    assert desc["trust_remote_code"] is False and "code_files" not in desc and "remote-code" not in off.id
    on = build_encoder({**spec, "trust_remote_code": True})
    desc = on.describe()
    assert desc["trust_remote_code"] is True and desc["code_files"] == ["modeling_custom.py"]
    assert desc["cache_key_parts"]["trust_remote_code"] is True and on.id != off.id
    assert "code_outside_folder" not in desc
    (folder / "modeling_custom.py").write_text("# custom model code, edited\n")
    assert build_encoder({**spec, "trust_remote_code": True}).id != on.id
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "other-org/repo--modeling_x.Model"}
    (folder / "config.json").write_text(json.dumps(cfg))
    desc = build_encoder({**spec, "trust_remote_code": True}).describe()
    assert desc["code_outside_folder"] == ["other-org/repo--modeling_x.Model"]


def test_open_clip_tag_and_config_checksums_are_in_the_id(tmp_path, monkeypatch) -> None:
    import open_clip

    ckpt = tmp_path / "tag.pt"
    ckpt.write_bytes(b"weights v1")
    open_clip.add_model_config(TINY_CLIP)
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "tiny-clip", {"mytag": {"file": str(ckpt)}})
    enc = _clip(pretrained="mytag", allow_random_init=False)
    assert enc.weights.startswith("mytag@") and ":mytag@" in enc.id
    ckpt.write_bytes(b"weights v2, the cached file replaced")
    assert _clip(pretrained="mytag", allow_random_init=False).id != enc.id
    # an architecture config folder (not just a file) is checksummed too
    configs = tmp_path / "configs"
    configs.mkdir()
    shutil.copy(TINY_CLIP, configs / "tiny-clip.json")
    a = _clip(model_config=str(configs))
    (configs / "tiny-clip.json").write_text((configs / "tiny-clip.json").read_text().replace("32", "32 "))
    assert a.arch.startswith("cfg@") and _clip(model_config=str(configs)).arch != a.arch


def test_precomputed_id_names_its_files_and_libraries(tmp_path) -> None:
    np.save(tmp_path / "v.npy", np.zeros((2, 3), np.float32))
    enc = build_encoder({"encoder": "precomputed", "path": str(tmp_path / "v.npy"), "ids": "row_index"})
    assert enc.id.startswith(f"precomputed:{enc.weights}:raw:pre-1:libs@")
    assert set(enc.describe()["cache_key_parts"]["libraries"]) == {"numpy", "pyarrow", "polars"}
    assert not enc.loaded and enc.unusable(["1"]) == [None] and enc.loaded
