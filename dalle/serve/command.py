"""`dalle serve`'s command line: load the model once, build the server, serve until Ctrl-C."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from typing import Any, Sequence

import numpy as np

from dalle import precision
from dalle.cli.args import Parser
from dalle.serve.app import HttpLimits
from dalle.serve.server import DEFAULT_HOST, DEFAULT_PORT, ListenError, Server
from dalle.serve.validation import Defaults, Limits
from dalle.serve.worker import GenerateFn, ProgressFn, RerankFn

DEFAULT_CHECKPOINT = "outputs/demo/dalle"
DEFAULT_MAX_COMPILED = 8


class StartupError(RuntimeError):
    """The model or the CLIP could not be loaded; the message names the path (not the port: see ListenError)."""


# How the generator's messages name the completion inputs: the API's field labels (dalle/serve/validation.py
# LABELS), which dalle/serve/worker.py `generator_field` maps back to the fields.
COMPLETION_LABELS = ("image", "keep rows")


def generator_fn(gen: Any, top_p: float | None = None) -> GenerateFn:
    """Adapts a `dalle.generation.Generator` to the server's generate function (same seed -> same images as
    `dalle generate` with the same settings, since both sample all n candidates of a prompt in one call; with an
    image, as `dalle generate --image-prompt FILE --keep-rows K`). `top_p` applies to every request (None: the
    model's sampling section)."""

    def generate(prompt: str, n: int, condition_scale: float, top_k: int, temperature: float, seed: int,
                 progress: ProgressFn, *, image: bytes | None = None, keep_rows: int | None = None) -> np.ndarray:
        if (image is None) != (keep_rows is None):
            raise ValueError(f"image completion needs both image and keep_rows, got image "
                             f"{'None' if image is None else f'of {len(image)} bytes'} and keep_rows {keep_rows}")
        image_prompt, kept = None, ""
        if image is not None and keep_rows is not None:
            progress(0.02, f"encoding the uploaded image ({len(image):,} bytes)")
            image_prompt = gen.completion_prompt(image, keep_rows, labels=COMPLETION_LABELS)
            kept = f", the top {keep_rows} of {gen.vqgan.tokens_per_side} code rows kept"
        progress(0.05, f"sampling {n} image(s) ({gen.model.image_length} codes each{kept})")
        codes = gen.codes([prompt], num_images=n, seed=seed, condition_scale=condition_scale, top_k=top_k,
                          top_p=top_p, temperature=temperature, image_prompt=image_prompt)
        progress(0.8, "decoding with the VQGAN")
        return gen.decode(codes)

    return generate


def clip_scorer(clip: Any) -> RerankFn:
    """A loaded CLIP (`dalle.modeling.clip.model.load_clip`: `embed_images`, `embed_texts`) -> the server's rerank
    function, scoring with the eval job's `candidate_scores` so the demo ranks exactly as `dalle eval` does."""
    from dalle.eval import rerank

    def score(prompt: str, images: np.ndarray) -> np.ndarray:
        return rerank.candidate_scores(clip, images, [prompt])[0]

    return score


def _parser() -> Parser:
    from dalle import serve

    p = Parser(prog="dalle serve", description=(serve.__doc__ or "").split("\n\n")[0],
               examples="dalle serve --checkpoint outputs/emoji/dalle\n"
                        "dalle serve --checkpoint weights/dalle_mini --dtype bfloat16 --port 8080")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                   help=f"trained workdir or model dir (default: {DEFAULT_CHECKPOINT}, what `make demo` writes)")
    p.add_argument("--dtype", choices=precision.DTYPES, default="float32",
                   help="parameter and compute precision (bfloat16 halves the weights' memory)")
    p.add_argument("--clip", default=None, help="CLIP checkpoint to rerank with (dalle convert clip / clip_shapes); "
                                                "'' = images in sampling order (default: sampling.clip_checkpoint)")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to bind (default {DEFAULT_HOST}: this machine only; 0.0.0.0 exposes the demo)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any free)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a host name the page may be reached by besides localhost, 127.0.0.1, [::1] and --host "
                        "(repeatable; e.g. this machine's LAN name with --host 0.0.0.0). Requests naming any other "
                        "Host get 400, which stops DNS-rebinding pages")
    p.add_argument("--max-images", type=int, default=16, help="most images one request may ask for")
    p.add_argument("--max-queue", type=int, default=8, help="requests that may wait; more get HTTP 503")
    p.add_argument("--max-compiled", type=int, default=DEFAULT_MAX_COMPILED,
                   help="compiled samplers kept (each distinct number of images or top-k compiles one and holds "
                        f"its memory; the least recently used is dropped beyond this; default "
                        f"{DEFAULT_MAX_COMPILED})")
    # Sampling flags default to None: the model's `sampling` section (dalle/sampling_schema.py) decides.
    p.add_argument("--n", type=int, default=None, help="the page's default number of images (sampling.candidates)")
    p.add_argument("--top", type=int, default=None,
                   help="the page's default 'keep best' when reranking (sampling.keep)")
    p.add_argument("--condition-scale", type=float, default=None,
                   help="the page's default guidance (sampling.guidance)")
    p.add_argument("--temperature", type=float, default=None, help="the page's default temperature")
    p.add_argument("--top-k", type=int, default=None, help="the page's default top-k")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass for every request (1 = off)")
    p.add_argument("--no-warmup", action="store_true",
                   help="skip compiling the default request at startup (the first request then pays for it)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every HTTP request")
    return p


# Which sampling setting each flag overrides (dalle/sampling_schema.py), and how errors name it.
FLAG_LABELS = {"candidates": "--n", "keep": "--top", "guidance": "--condition-scale", "temperature": "--temperature",
               "top_k": "--top-k", "top_p": "--top-p", "clip_checkpoint": "--clip"}


def build_server(args: argparse.Namespace, http: HttpLimits = HttpLimits()) -> Server:
    """Loads the model (once) and the optional CLIP, and binds the server. Raises ValueError for a bad setting,
    StartupError when the model or CLIP cannot be read (naming the path), ListenError when the address cannot
    be bound."""
    from dalle import generation, sampling_schema
    from dalle.modeling import sampling

    for name in ("max_images", "max_queue", "max_compiled", "n"):
        if getattr(args, name, None) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} = {getattr(args, name)} must be >= 1")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port = {args.port} must be between 0 and 65535")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ValueError(f"--top-p = {args.top_p} must be in (0, 1]")
    if args.top is not None and args.top < 0:
        raise ValueError(f"--top = {args.top} must be >= 0 (0 = keep all)")
    if args.condition_scale is not None and not 0 <= args.condition_scale <= Limits.max_condition_scale:
        raise ValueError(f"--condition-scale = {args.condition_scale} must be between 0 and "
                         f"{Limits.max_condition_scale:g}")
    try:
        gen = generation.Generator.from_checkpoint(args.checkpoint, dtype=args.dtype)
    except OSError as e:  # unreadable weights or tokenizer: a model problem, whatever errno says
        raise StartupError(f"cannot load the model from {args.checkpoint}: {e}") from e
    # Every distinct (n, top-k, ...) compiles a decode loop that holds memory; requests choose them, so bound it.
    sampling.limit_compiled(gen.model, getattr(args, "max_compiled", DEFAULT_MAX_COMPILED))
    settings = gen.settings({"candidates": args.n, "keep": args.top, "guidance": args.condition_scale,
                             "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
                             "clip_checkpoint": args.clip}, FLAG_LABELS)
    for what, value, bound in (("guidance", settings.guidance, Limits.max_condition_scale),
                               ("temperature", settings.temperature, Limits.max_temperature)):
        if value > bound:
            raise ValueError(f"the default {what} {value:g} (a flag or the model's sampling section) is above the "
                             f"page's limit {bound:g}")
    rerank_fn = None
    clip_dir = sampling_schema.rerank_clip(settings, from_user=args.clip is not None)
    if clip_dir:
        from dalle.modeling.clip import model as clip

        try:
            # CLIPs trained on our data tokenize with the DALL·E model's sentencepiece model when they name none.
            rerank_fn = clip_scorer(clip.load_clip(clip_dir, tokenizer_path=gen.config.data.tokenizer_path,
                                                      unknown_words=gen.config.data.get("unknown_words", "keep")))
        except OSError as e:
            raise StartupError(f"cannot load the CLIP from {clip_dir}: {e}") from e
    limits = Limits(max_images=args.max_images, image_codes=int(gen.model.image_vocab_size),
                    code_rows=int(gen.vqgan.tokens_per_side))  # completion keeps 1..rows-1 of the image's rows
    defaults = Defaults.from_sampling(settings, rerank_fn is not None, args.max_images)
    fn = generator_fn(gen, top_p=settings.top_p)

    def warmup() -> None:  # compiles the default request's shapes while the page is already up
        images = fn("a", defaults.n, defaults.condition_scale, defaults.top_k, defaults.temperature, 0,
                    lambda f, s: None)
        if rerank_fn is not None:
            rerank_fn("a", images)
    examples: Sequence[str] = settings.examples[:5]  # the model's sampling.examples (its training config's)
    m = gen.model
    side = gen.vqgan.tokens_per_side * gen.vqgan.downsample_factor
    info = (f"{gen.config.model.get('kind', 'dalle_bart')} model from {args.checkpoint} · {side}×{side} px · "
            f"{m.image_length} codes of {m.image_vocab_size} in {limits.code_rows} rows")
    return Server(fn, rerank_fn=rerank_fn, host=args.host, port=args.port, limits=limits, defaults=defaults,
                  max_queue=args.max_queue, warmup=None if args.no_warmup else warmup, model_info=info,
                  examples=examples, allowed_hosts=getattr(args, "allowed_host", []), http=http,
                  access_log=bool(getattr(args, "verbose", False)))


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    if not args.verbose:
        for noisy in ("absl", "jax", "orbax", "uvicorn.error", "uvicorn.access"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    print(f"dalle serve: loading {args.checkpoint} ...", file=sys.stderr, flush=True)
    from dalle import model_dir as checkpoint

    try:
        server = build_server(args)
    except ListenError as e:  # the port is taken, or the address is not this machine's
        print(f"dalle serve: error: cannot listen on {e.host}:{e.port}: {e.strerror} (pick another with --port)",
              file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, StartupError, checkpoint.CheckpointError) as e:
        print(f"dalle serve: error: {e}", file=sys.stderr)
        return 2
    if not _is_loopback(args.host):
        print(f"dalle serve: warning: listening on {args.host}, reachable from other machines (the page answers "
              f"only to the host names {', '.join(sorted(server.allowed_hosts))}; add more with --allowed-host)",
              file=sys.stderr)
    print(f"dalle serve: {server.url}  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\ndalle serve: stopped", file=sys.stderr)
    finally:
        server.close()
    return 0
