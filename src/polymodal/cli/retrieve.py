"""``polymodal retrieve``: embed a gallery once with an aligned model, then search it with any other modality.

    polymodal retrieve index runs/align/best --data spoken-digits --split test --modality image --out img_index
    polymodal retrieve query img_index --text "seven" --top 5
    polymodal retrieve query img_index --audio seven.wav --json
    polymodal retrieve index ... --backend faiss --backend-option nprobe=32     # approximate: pip install 'polymodal[ann]'

The workflow is :mod:`polymodal.recipes.retrieve` (build_index, query_index); the index itself is
:mod:`polymodal.inference.retrieval` (see its backends module for the options and their defaults).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import positive

QUERY_KINDS = ("text", "image", "audio")
BACKEND_CHOICES = ("exact", "faiss", "usearch")  # = inference.retrieval.backends.BACKEND_NAMES, without torch


def add_parser(sub) -> None:
    """Register ``retrieve index`` / ``retrieve query`` on the top-level subparsers of ``polymodal``."""
    parser = sub.add_parser(
        "retrieve",
        help="cross-modal search with an aligned model: build an index, query it with text/image/audio",
        description="Embed a gallery (images, audio or texts) with a trained alignment model and save it as an "
        "index; then query the index with another modality and get the top-k items with cosine scores.",
    )
    actions = parser.add_subparsers(dest="retrieve_command", metavar="ACTION", required=True)
    index = actions.add_parser("index", help="embed a gallery and save the index")
    index.add_argument("model", help="alignment model directory (or run directory with best/)")
    index.add_argument("--data", required=True, help="a built-in data set name (e.g. spoken-digits) or a manifest")
    index.add_argument("--split", default="test", help="split of a built-in data set (default: %(default)s)")
    index.add_argument("--modality", required=True, help="which of the model's modalities to index")
    index.add_argument("--out", required=True, help="index directory to write")
    index.add_argument("--limit", type=positive, default=None, help="index only the first N rows")
    index.add_argument("--batch-size", type=positive, default=128)
    index.add_argument("--keep-duplicates", action="store_true", help="keep items with identical embeddings")
    index.add_argument("--backend", default="exact", choices=BACKEND_CHOICES,
                       help="search backend saved with the index: exact brute force, or approximate faiss / usearch "
                       "(needs pip install 'polymodal[ann]') (default: %(default)s)")
    index.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE",
                       help="backend parameter, repeatable. faiss: index=ivf|hnsw, nlist, nprobe, "
                       "train_points_per_list, train_iterations, m, ef_construction, ef_search, threads; "
                       "usearch: connectivity, expansion_add, expansion_search, dtype=f32|f16|bf16, threads")
    query = actions.add_parser("query", help="search an index with a text, an image or an audio file")
    query.add_argument("index", help="index directory (from `polymodal retrieve index`)")
    query.add_argument("--text", default=None, help="query string")
    query.add_argument("--image", default=None, help="query image file")
    query.add_argument("--audio", default=None, help="query audio file")
    query.add_argument("--query-modality", default=None,
                       help="the model modality that embeds the query (default: the only one of its kind)")
    query.add_argument("--model", default=None, help="model directory (default: the one that built the index)")
    query.add_argument("--top", type=positive, default=5, help="how many results (default: %(default)s)")
    query.add_argument("--exact", action="store_true",
                       help="brute-force search even if the index was built with an approximate backend")
    query.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE",
                       help="search-time parameter of the index's backend, repeatable: faiss nprobe, ef_search; "
                       "usearch expansion_search; threads")
    query.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    from ..inference.retrieval.backends import parse_option_strings

    if args.retrieve_command == "index":
        from ..recipes.retrieve import build_index

        index, info = build_index(args.model, args.data, args.modality, args.out, split=args.split, limit=args.limit,
                                  batch_size=args.batch_size, dedupe=not args.keep_duplicates, backend=args.backend,
                                  backend_options=parse_option_strings(args.backend_option))
        dropped = info["rows"] - info["items"]
        print(f"indexed {info['items']} {args.modality} items ({index.dim}-d) from {args.data}"
              f"{f' [{args.split}]' if not Path(args.data).is_file() else ''}"
              f"{f', {dropped} duplicates skipped' if dropped else ''}"
              f"{f', {args.backend} backend' if args.backend != 'exact' else ''} → {args.out}")
        return 0
    given = [(kind, getattr(args, kind)) for kind in QUERY_KINDS if getattr(args, kind) is not None]
    if len(given) != 1:
        raise ValueError("give exactly one query: --text STRING, --image FILE or --audio FILE")
    kind, raw = given[0]
    if kind != "text" and not Path(raw).is_file():
        raise FileNotFoundError(f"--{kind} {raw}: no such file")
    if args.top < 1:
        raise ValueError(f"--top must be ≥ 1, got {args.top}")
    from ..recipes.retrieve import query_index

    results = query_index(args.index, raw, kind, top=args.top, model=args.model, query_modality=args.query_modality,
                          exact=args.exact, search_options=parse_option_strings(args.backend_option))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"top {len(results)} for {kind} query {raw!r}:")
    for r in results:
        extra = "  ".join(f"{key} {r[key]}" for key in ("label", "source") if r[key] is not None)
        print(f"  {r['rank']:>3d}. {r['score']:+.4f}  {r['id']}  {extra}")
    return 0
