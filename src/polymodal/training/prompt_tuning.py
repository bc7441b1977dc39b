"""Compatibility names: prompt tuning moved to :mod:`polymodal.peft.prompt` (below the models, so loading a
prompt-tuned model never imports training code)."""

from __future__ import annotations

from ..peft.prompt import PROMPT_PARAM, add_prompt_tuning

__all__ = ["PROMPT_PARAM", "add_prompt_tuning"]
