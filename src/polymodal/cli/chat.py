"""``polymodal chat``: a conversation with a saved generation model. Interactive on a terminal (``/image PATH``,
``/audio PATH``, ``/reset``, ``/quit``; answers streamed); otherwise a conversation read from stdin, one line per
user turn (the same commands work), each answer printed on its own line."""

from __future__ import annotations

import argparse
import sys

from .generate import add_decoding, decoding_options

HELP = "commands: /image PATH, /audio PATH (attach to the next question), /reset, /quit"


def add_parser(sub) -> None:
    chat = sub.add_parser(
        "chat",
        help="chat with a generation model about images and recordings",
        description="A multi-turn conversation with a saved generation model. " + HELP + ". Reads the "
        "conversation from stdin when it is not a terminal (one user turn per line).",
    )
    chat.add_argument("model", help="model directory (or run directory)")
    chat.add_argument("--image", action="append", default=[], metavar="PATH", help="attach to the first question")
    chat.add_argument("--audio", action="append", default=[], metavar="PATH", help="attach to the first question")
    chat.add_argument("--no-stream", action="store_true", help="print each answer when it is complete")
    add_decoding(chat)


def run(args: argparse.Namespace) -> int:
    from ..data.errors import DataError
    from ..inference.generate import GenerationPredictor

    predictor = GenerationPredictor(args.model, device=args.device)
    conversation = predictor.conversation()
    for modality, paths in (("image", args.image), ("audio", args.audio)):
        for path in paths:
            conversation.attach(modality, path)
    interactive = sys.stdin.isatty()
    stream = not args.no_stream
    options = decoding_options(args)
    if interactive:
        print(f"chatting with a {predictor.model.task_name} model ({', '.join(predictor.modalities)}); {HELP}")
    while True:
        if interactive:
            try:
                line = input("you> ")
            except EOFError:
                break
        else:
            line = sys.stdin.readline()
            if not line:
                break
        line = line.strip()
        if not line:
            continue
        command, _, rest = line.partition(" ")
        if command in ("/quit", "/exit"):
            break
        if command == "/reset":
            conversation.reset()
            if interactive:
                print("(conversation reset)")
            continue
        if command in ("/image", "/audio"):
            try:
                conversation.attach(command[1:], rest.strip())
            except (DataError, OSError, ValueError) as err:
                if not interactive:
                    raise
                print(f"error: {err}")
            continue
        if command.startswith("/"):
            if not interactive:
                raise ValueError(f"unknown command {command!r}; {HELP}")
            print(HELP)
            continue
        if interactive:
            print("model> ", end="", flush=True)
        if stream:
            for piece in conversation.ask(line, stream=True, **options):
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
        else:
            print(conversation.ask(line, **options))
    return 0
