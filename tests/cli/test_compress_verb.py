"""`polymodal compress --method distill`: the student file's sections and the teacher's data section, without
training anything (the verb's helpers)."""

from __future__ import annotations

import json

import pytest

from polymodal.cli.compress import read_student, teacher_data_section
from polymodal.config import ConfigError


def test_teacher_data_section_reads_the_saved_config(tmp_path):
    model = tmp_path / "run" / "best"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"task": "classification", "model": {},
                                                   "data": {"name": "spoken-digits", "limit": 40}}))
    (model / "model.safetensors").write_bytes(b"")
    assert teacher_data_section(str(tmp_path / "run")) == {"name": "spoken-digits", "limit": 40}  # a run dir too
    (model / "config.json").write_text(json.dumps({"task": "classification", "model": {}}))
    assert teacher_data_section(str(model)) is None
    (model / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"config.json cannot be read as JSON"):
        teacher_data_section(str(model))


def test_student_file_is_the_model_section_or_sections(tmp_path):
    bare = tmp_path / "student.yaml"
    bare.write_text("fusion: {name: concat, dim: 8}\n")
    sections = read_student(str(bare), ["train.epochs=2", "model.fusion.dim=4"])
    assert sections["model"] == {"fusion": {"name": "concat", "dim": 4}} and sections["train"] == {"epochs": 2}
    assert sections["data"] == {}
    with pytest.raises(ConfigError, match=r"--set 'eval.x=1': compress --method distill takes model"):
        read_student(str(bare), ["eval.x=1"])
    odd = tmp_path / "odd.yaml"
    odd.write_text("model: {}\nserve: {port: 1}\n")
    with pytest.raises(ConfigError, match=r"odd.yaml: unknown section\(s\) 'serve'"):
        read_student(str(odd), [])
