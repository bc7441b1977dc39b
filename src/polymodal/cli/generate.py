"""``polymodal generate``: text from a prompt and attachments with a saved captioning / vqa / transcription / chat
model (inference.generate.GenerationPredictor)."""

from __future__ import annotations

import argparse
import json
import sys

from .common import at_least


def add_decoding(parser: argparse.ArgumentParser) -> None:
    """Decoding options shared by generate and chat (default: those saved with the model)."""
    group = parser.add_argument_group("decoding (default: the options saved with the model)")
    group.add_argument("--max-new-tokens", type=at_least(1), default=None)
    group.add_argument("--num-beams", type=at_least(1), default=None, help="beam search width (1 = greedy)")
    group.add_argument("--sample", action="store_true", default=None, help="sample instead of greedy / beam")
    group.add_argument("--temperature", type=float, default=None)
    group.add_argument("--top-k", type=int, default=None)
    group.add_argument("--top-p", type=float, default=None)
    group.add_argument("--repetition-penalty", type=float, default=None)
    group.add_argument("--seed", type=int, default=None, help="seed for --sample")
    group.add_argument("--device", default="cpu")


def decoding_options(args: argparse.Namespace) -> dict:
    if args.seed is not None:
        import torch

        torch.manual_seed(args.seed)
    return {"max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams, "do_sample": args.sample,
            "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
            "repetition_penalty": args.repetition_penalty}


def add_parser(sub) -> None:
    gen = sub.add_parser(
        "generate",
        help="generate text from a prompt + image / audio with a captioning, vqa, transcription or chat model",
        description="Answer a prompt about attachments with a saved generation model (a run's best/). The "
        "attachments' placeholders (<image>, <audio>) go in front of the prompt unless it holds them.",
    )
    gen.add_argument("model", help="model directory (or run directory)")
    gen.add_argument("--prompt", default=None, help="the prompt (default: the model's task prompt, e.g. "
                     "'describe the picture.' for captioning)")
    gen.add_argument("--image", action="append", default=[], metavar="PATH", help="an image (repeatable)")
    gen.add_argument("--audio", action="append", default=[], metavar="PATH", help="a recording (repeatable)")
    gen.add_argument("--stream", action="store_true", help="print the answer as it is generated")
    gen.add_argument("--json", action="store_true", help="print {prompt, answer} as JSON")
    add_decoding(gen)


# What a model of each task is asked when no --prompt is given (the built-in sets' prompts).
DEFAULT_PROMPTS = {"captioning": "describe the picture.", "transcription": "transcribe the recording."}


def run(args: argparse.Namespace) -> int:
    from ..inference.generate import GenerationPredictor

    predictor = GenerationPredictor(args.model, device=args.device)
    prompt = args.prompt if args.prompt is not None else DEFAULT_PROMPTS.get(predictor.model.task_name)
    if prompt is None:
        raise ValueError(f"--prompt is needed for a {predictor.model.task_name} model")
    attachments = {name: paths for name, paths in (("image", args.image), ("audio", args.audio)) if paths}
    options = decoding_options(args)
    if args.stream and not args.json:
        for piece in predictor.generate(prompt, attachments=attachments, stream=True, **options):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return 0
    answer = predictor.generate(prompt, attachments=attachments, **options)
    print(json.dumps({"prompt": prompt, "answer": answer}, ensure_ascii=False) if args.json else answer)
    return 0
