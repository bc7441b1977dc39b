"""Code shipped inside a model directory never runs unless the person loading it asks (issue #12, kind 1).

Every loading path gets a directory with a planted module, ``planted.py``, that writes a marker file when imported
(the path in $POLYMODAL_TEST_MARKER), reached through ``auto_map`` entries in config.json / tokenizer_config.json /
preprocessor_config.json / processor_config.json and a saved ``options.trust_remote_code: true``. No marker may
appear. Only an explicit ``trust_remote_code=True`` at load time runs it (checked once, in a subprocess, so the
import lands in a temp HF_MODULES_CACHE).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from hf_fixtures import save_tiny_bert, save_tiny_wav2vec2

from polymodal.config import ModalityConfig, ModelConfig, from_dict
from polymodal.errors import PolymodalError
from polymodal.models import MultimodalModel

PLANTED = '''import os
_marker = os.environ.get("POLYMODAL_TEST_MARKER")
if _marker:
    with open(_marker, "a") as handle:
        handle.write("planted code ran\\n")
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerFast
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor


class PlantedConfig(PretrainedConfig):
    model_type = "plantedbert"


class PlantedModel(PreTrainedModel):
    config_class = PlantedConfig


class PlantedTokenizer(PreTrainedTokenizerFast):
    pass


class PlantedExtractor(SequenceFeatureExtractor):
    pass
'''


@pytest.fixture
def marker(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "planted-code-ran.txt"
    monkeypatch.setenv("POLYMODAL_TEST_MARKER", str(path))
    return path


def plant(directory: Path, config: bool = True, tokenizer: bool = True, extractor: bool = False) -> Path:
    """Write planted.py and point the checkpoint's loaders at it."""
    (directory / "planted.py").write_text(PLANTED)

    def edit(name: str, **entries):
        path = directory / name
        data = json.loads(path.read_text()) if path.exists() else {}
        data.update(entries)
        path.write_text(json.dumps(data))

    if config:
        edit("config.json", model_type="plantedbert",
             auto_map={"AutoConfig": "planted.PlantedConfig", "AutoModel": "planted.PlantedModel"})
    if tokenizer:
        edit("tokenizer_config.json", tokenizer_class="PlantedTokenizer",
             auto_map={"AutoTokenizer": [None, "planted.PlantedTokenizer"]})
    if extractor:
        edit("preprocessor_config.json", feature_extractor_type="PlantedExtractor",
             auto_map={"AutoFeatureExtractor": "planted.PlantedExtractor"})
    edit("processor_config.json", processor_class="PlantedProcessor",
         auto_map={"AutoProcessor": "planted.PlantedProcessor"})
    return directory


def save_text_model(directory: Path, source: Path) -> Path:
    config = from_dict(ModelConfig, {
        "modalities": {"text": {"kind": "text", "pretrained": str(source)}},
        "fusion": {"dim": 8}, "head": {"labels": ["a", "b"], "dropout": 0.0},
    }, "model")
    return MultimodalModel(config).save_pretrained(directory)


def grant_trust_in_saved_config(model_dir: Path, section: str = "model") -> None:
    payload = json.loads((model_dir / "config.json").read_text())
    for modality in payload[section]["modalities"].values():
        modality.setdefault("options", {})["trust_remote_code"] = True
    (model_dir / "config.json").write_text(json.dumps(payload))


@pytest.fixture
def planted_model(tmp_path) -> Path:
    """A saved MultimodalModel whose hf/text/ loads planted.py and whose config.json claims trust."""
    model_dir = save_text_model(tmp_path / "model", save_tiny_bert(tmp_path / "bert"))
    plant(model_dir / "hf" / "text")
    grant_trust_in_saved_config(model_dir)
    return model_dir


def refused(call) -> PolymodalError:
    with pytest.raises(PolymodalError) as info, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    assert any("cannot grant itself trust" in str(w.message) for w in caught), "the ignored saved value is named"
    return info.value


def test_from_pretrained_refuses_and_names_the_files(planted_model, marker):
    err = refused(lambda: MultimodalModel.from_pretrained(planted_model))
    assert "planted.py" in str(err) and "trust_remote_code=True" in str(err)
    assert not marker.exists()


def test_predictor_and_cli_predict(planted_model, marker, capsys):
    from polymodal.cli import main
    from polymodal.inference import Predictor

    refused(lambda: Predictor(planted_model))
    assert main(["predict", str(planted_model), "--text", "hello"]) != 0
    assert "planted.py" in capsys.readouterr().err
    assert not marker.exists()


def test_known_architecture_with_auto_map_loads_without_the_code(tmp_path, marker):
    """auto_map next to a built-in model_type: transformers' own class is used, the planted one ignored."""
    model_dir = save_text_model(tmp_path / "model", save_tiny_bert(tmp_path / "bert"))
    hf_dir = plant(model_dir / "hf" / "text", config=False, tokenizer=False)
    config = json.loads((hf_dir / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "planted.PlantedConfig", "AutoModel": "planted.PlantedModel"}
    (hf_dir / "config.json").write_text(json.dumps(config))
    tokenizer_config = json.loads((hf_dir / "tokenizer_config.json").read_text())
    tokenizer_config["auto_map"] = {"AutoTokenizer": [None, "planted.PlantedTokenizer"]}
    (hf_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    grant_trust_in_saved_config(model_dir)
    with pytest.warns(UserWarning, match="cannot grant itself trust"):
        model = MultimodalModel.from_pretrained(model_dir)
    from polymodal.inference import Predictor

    assert Predictor(model).predict(text="one two").label in ("a", "b")
    assert type(model.encoders["text"].backbone).__name__ == "BertModel"
    assert not marker.exists()


@pytest.mark.parametrize("planted_config", [False, True])
def test_tokenizer_with_planted_class_is_ignored_or_refused(tmp_path, marker, planted_config):
    """transformers 5 falls back to the generic tokenizer.json backend when the planted class is not trusted; with
    a planted config.json too, it refuses (DataError naming trust_remote_code). Never the planted class."""
    from polymodal.data import build_processor

    source = plant(save_tiny_bert(tmp_path / "bert"), config=planted_config)
    cfg = ModalityConfig(kind="text", pretrained=str(source))
    if planted_config:
        with pytest.raises(PolymodalError, match="trust_remote_code"):
            build_processor(cfg, "text")
    else:
        processor = build_processor(cfg, "text")
        assert type(processor.tokenizer).__name__ != "PlantedTokenizer"
        assert processor("one two")["input_ids"].tolist() == [2, 8, 9, 3]  # [CLS] one two [SEP]
    assert not marker.exists()


def test_feature_extractor_with_planted_class_is_refused(tmp_path, marker):
    from polymodal.data import build_processor

    source = plant(save_tiny_wav2vec2(tmp_path / "w2v"), config=False, tokenizer=False, extractor=True)
    with pytest.raises(PolymodalError, match="trust_remote_code"):
        build_processor(ModalityConfig(kind="audio", pretrained=str(source)), "audio")
    assert not marker.exists()


def test_encoder_from_a_planted_checkpoint_is_refused(tmp_path, marker):
    from polymodal.encoders import build_encoder

    source = plant(save_tiny_bert(tmp_path / "bert"))
    for load_weights in (True, False):
        with pytest.raises(PolymodalError, match="planted.py"):
            build_encoder(ModalityConfig(kind="text", pretrained=str(source)), load_weights=load_weights)
    assert not marker.exists()


def test_alignment_model_from_pretrained(tmp_path, marker):
    from polymodal.config import AlignmentConfig
    from polymodal.models import AlignmentModel

    config = from_dict(AlignmentConfig, {
        "modalities": {"text": {"kind": "text", "pretrained": str(save_tiny_bert(tmp_path / "bert"))},
                       "caption": {"kind": "text", "processor": {"max_length": 8}}},
        "embed_dim": 8,
    }, "alignment")
    model_dir = AlignmentModel(config).save_pretrained(tmp_path / "aligned")
    plant(model_dir / "hf" / "text")
    grant_trust_in_saved_config(model_dir, "model")
    refused(lambda: AlignmentModel.from_pretrained(model_dir))
    assert not marker.exists()


def test_adapter_over_a_planted_base(tmp_path, marker):
    from polymodal.training.finetune import apply_finetune
    from polymodal.training.peft_utils import save_adapter

    base = save_text_model(tmp_path / "base", save_tiny_bert(tmp_path / "bert"))
    model = MultimodalModel.from_pretrained(base)
    apply_finetune(model, {"default": "frozen"})
    save_adapter(model, tmp_path / "adapter")
    plant(base / "hf" / "text")  # config files only: the base weights keep their fingerprint
    grant_trust_in_saved_config(base)
    refused(lambda: MultimodalModel.from_pretrained(tmp_path / "adapter"))
    assert not marker.exists()


def test_finetune_init_from_reads_weights_only(planted_model, tmp_path, marker):
    from polymodal.training.finetune import load_encoder_weights

    config = from_dict(ModelConfig, {
        "modalities": {"text": {"kind": "text", "pretrained": str(save_tiny_bert(tmp_path / "bert2"))}},
        "fusion": {"dim": 8}, "head": {"labels": ["a", "b"]},
    }, "model")
    assert load_encoder_weights(MultimodalModel(config), str(planted_model)) == ["text"]
    assert not marker.exists()


def test_retrieval_index_and_training_checkpoint_run_no_code(tmp_path, marker):
    from polymodal.inference.retrieval import EmbeddingIndex
    from polymodal.training.checkpoint import OPTIMIZER_FILE, load_checkpoint, save_checkpoint

    index_dir = EmbeddingIndex(torch.randn(3, 4), ids=["a", "b", "c"]).save(tmp_path / "index")
    plant(index_dir, config=True, tokenizer=False)
    assert len(EmbeddingIndex.load(index_dir)) == 3

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    checkpoint = save_checkpoint(tmp_path / "ckpt", model, optimizer, None, None, {"step": 1})

    class Planted:  # unpickling this would run code: torch.load(weights_only=True) refuses it
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'a').write('pickle ran')",))

    torch.save({"optimizer": Planted()}, checkpoint / OPTIMIZER_FILE)
    with pytest.raises(pickle.UnpicklingError, match="[Ww]eights only"):
        load_checkpoint(checkpoint, model, optimizer)
    assert not marker.exists()


def test_only_the_loaders_argument_runs_the_code(planted_model, tmp_path):
    """trust_remote_code=True at load time does import planted.py, with a warning naming it."""
    marker = tmp_path / "ran.txt"
    script = (
        "import warnings, sys\n"
        "from polymodal.models import MultimodalModel\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    try:\n"
        f"        MultimodalModel.from_pretrained({str(planted_model)!r}, trust_remote_code=True)\n"
        "    except Exception:\n"
        "        pass  # PlantedModel is not a working encoder; only the import matters here\n"
        "print('WARNED' if any('planted.py' in str(w.message) for w in caught) else 'SILENT')\n"
    )
    env = dict(os.environ, POLYMODAL_TEST_MARKER=str(marker), HF_MODULES_CACHE=str(tmp_path / "modules"),
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert "WARNED" in result.stdout, result.stderr[-2000:]
    assert marker.exists(), "the caller's explicit trust is honoured"


def test_audio_model_directory(tmp_path, marker):
    """The feature-extractor path of a saved audio model: planted extractor + model config, trust claimed."""
    config = from_dict(ModelConfig, {
        "modalities": {"audio": {"kind": "audio", "pretrained": str(save_tiny_wav2vec2(tmp_path / "w2v")),
                                 "processor": {"max_seconds": 0.2}}},
        "fusion": {"dim": 8}, "head": {"labels": ["a", "b"]},
    }, "model")
    model_dir = MultimodalModel(config).save_pretrained(tmp_path / "audio-model")
    plant(model_dir / "hf" / "audio", tokenizer=False, extractor=True)
    grant_trust_in_saved_config(model_dir)
    refused(lambda: MultimodalModel.from_pretrained(model_dir))
    assert not marker.exists()
