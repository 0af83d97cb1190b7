"""What a `/api/generate` body may ask for, checked field by field with a message that names the field and its value.

Hostile bodies are answered with a FieldError, never an exception the server did not expect: JSON nested deeper
than Python's parser recurses, numbers with more digits than `int()` converts (Python refuses strings over 4300
digits), NaN/Infinity, booleans where numbers belong, values of the wrong type, and values long enough that
echoing them would flood the message (they are shortened).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import random
import re
import reprlib
from typing import Any, Mapping

MAX_SEED = 2 ** 31 - 1
MAX_JSON_DEPTH = 16  # a valid body nests 1 level; json.loads recurses per level and fails near Python's limit
MAX_DIGITS = 30  # whole numbers longer than this are out of every field's range; their digits are not converted


class FieldError(ValueError):
    """A request field that cannot be used; `field` is the API name so the page can highlight its input (None:
    the body as a whole)."""

    def __init__(self, field: str | None, message: str):
        super().__init__(message)
        self.field = field


@dataclasses.dataclass(frozen=True)
class Limits:
    """Bounds on what one request may ask for, so a single visitor cannot monopolise the model."""

    max_images: int = 16
    max_prompt_chars: int = 500
    max_condition_scale: float = 20.0
    max_temperature: float = 5.0
    image_codes: int = 16384  # top-k can range up to the model's codebook size
    # Image completion: an upload is decoded and encoded by the worker, so its size bounds that work (and the body);
    # 256 KiB holds a photo at the few hundred pixels the tokenizer resizes it to anyway.
    max_image_bytes: int = 256 * 1024
    code_rows: int = 0  # the model's rows of image codes (keep 1..code_rows-1); 0 = completion not available

    @property
    def completion(self) -> bool:
        """Whether a request may complete an image: it needs a row to keep and a row to draw."""
        return self.code_rows >= 2


def _schema_default(key: str) -> Any:
    """A field defaulting to the sampling schema's value (dalle/sampling_schema.py: the one place defaults live)."""

    def default() -> Any:
        from dalle import sampling_schema

        return sampling_schema.sampling_defaults()[key]

    return dataclasses.field(default_factory=default)


@dataclasses.dataclass(frozen=True)
class Defaults:
    """The values the page starts with and the API uses for missing fields (seed None = a fresh random seed):
    `dalle serve` takes them from the model's `sampling` section (`from_sampling`) with the command line's
    overrides; fields not given here are the sampling schema's."""

    n: int = _schema_default("candidates")
    top: int = _schema_default("keep")  # 0 = keep all n
    condition_scale: float = _schema_default("guidance")
    top_k: int = _schema_default("top_k")
    temperature: float = _schema_default("temperature")

    @classmethod
    def from_sampling(cls, settings: Any, reranking: bool, max_images: int) -> "Defaults":
        """From `dalle.sampling_schema.Sampling`; keeping fewer than n needs reranking."""
        n = min(settings.candidates, max_images)
        return cls(n=n, top=min(settings.keep, n) if reranking else 0, condition_scale=settings.guidance,
                   top_k=settings.top_k, temperature=settings.temperature)


@dataclasses.dataclass(frozen=True)
class GenerateRequest:
    prompt: str
    n: int
    top: int  # images kept (== n when not reranking)
    condition_scale: float
    top_k: int
    temperature: float
    seed: int
    # Image completion (both None for plain generation): the uploaded file's bytes, still encoded (the worker
    # decodes them, so a picture that is no image is the job's error), and how many top code rows to keep.
    image: bytes | None = dataclasses.field(default=None, repr=False)
    keep_rows: int | None = None
    image_bytes: int = 0  # len(image), kept after the worker drops the bytes of a finished job

    def __post_init__(self) -> None:
        if self.image is not None and not self.image_bytes:
            object.__setattr__(self, "image_bytes", len(self.image))

    @property
    def completion(self) -> bool:
        return self.keep_rows is not None

    def to_json(self) -> dict[str, Any]:
        """The request as a client sees it: the upload by its size (echoing it would resend up to the whole limit
        on every poll)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "image"}


FIELDS = ("prompt", "n", "top", "condition_scale", "top_k", "temperature", "seed", "image", "keep_rows")
LABELS = {"prompt": "prompt", "n": "number of images", "top": "keep best", "condition_scale": "guidance",
          "top_k": "top-k", "temperature": "temperature", "seed": "seed", "image": "image",
          "keep_rows": "keep rows"}


def max_request_bytes(limits: Limits) -> int:
    """A bound on the body of a valid request: the largest image as base64 in a data: URL, the prompt with every
    character JSON-escaped as a surrogate pair (12 bytes), and 4 KiB for the other fields, names and spaces. The
    HTTP body limit must be at least this, or a legal upload would be refused as too large."""
    return 4 * -(-limits.max_image_bytes // 3) + 12 * limits.max_prompt_chars + 4096


# ----------------------------------------------------------------------------------------------------------------
# Showing values in messages
# ----------------------------------------------------------------------------------------------------------------
_SHOW = reprlib.Repr()
_SHOW.maxstring = 60  # a 60 KB string in a field is named by its first and last characters
_SHOW.maxother = 60
_SHOW.maxlevel = 2  # [[[...]]]: nested values are not walked (a deep one would exhaust the recursion limit)
_SHOW.maxlist = _SHOW.maxtuple = _SHOW.maxdict = 4


def show(value: Any) -> str:
    """`repr(value)` for a message, shortened so a hostile value cannot make the message long."""
    return _SHOW.repr(value)


def clip(text: str, limit: int = 200) -> str:
    """`text`, cut to `limit` characters with an ellipsis: for strings that go into messages as they are."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class HugeNumber(int):
    """A whole number written with more than MAX_DIGITS digits: outside the range of every field, and possibly
    beyond what `int()` converts at all. It keeps its text for the message (first digits and the count) and
    compares as ±10**MAX_DIGITS, so the ordinary range checks reject it with their usual message."""

    text: str

    def __new__(cls, text: str) -> "HugeNumber":
        text = text.strip()
        self = super().__new__(cls, -10 ** MAX_DIGITS if text.startswith("-") else 10 ** MAX_DIGITS)
        self.text = text
        return self

    def __repr__(self) -> str:
        digits = sum(c.isdigit() for c in self.text)
        return f"{self.text[:12]}…({digits} digits)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)


def whole_number(text: str) -> int:
    """`int(text)` for a string of digits, or a HugeNumber when it has more than MAX_DIGITS of them."""
    if sum(c.isdigit() for c in text) > MAX_DIGITS:
        return HugeNumber(text)
    return int(text)


# ----------------------------------------------------------------------------------------------------------------
# The body
# ----------------------------------------------------------------------------------------------------------------
_JSON_STRUCTURE = re.compile(r'[\[\]{}"\\]')


def json_depth(text: str) -> int:
    """How deep brackets nest in `text`, outside JSON strings: one linear pass, so the depth is known before
    `json.loads` recurses into it."""
    depth = deepest = 0
    in_string = False
    escaped_at = -1
    for m in _JSON_STRUCTURE.finditer(text):
        at, ch = m.start(), m.group()
        if at == escaped_at:
            continue
        if in_string:
            if ch == "\\":
                escaped_at = at + 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_json_body(raw: bytes) -> Any:
    """The request body as JSON; FieldError (field None) for anything that is not. Integers longer than
    MAX_DIGITS become HugeNumber, so `int()`'s digit limit is never hit; NaN and Infinity are let through for
    the field checks to name."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FieldError(None, f"the request body is not valid JSON: it is not UTF-8 text ({e.reason} at byte "
                               f"{e.start})") from None
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise FieldError(None, f"the request body is not valid JSON for this API: it nests {depth} levels deep; "
                               f"the limit is {MAX_JSON_DEPTH}")
    try:
        return json.loads(text or "null", parse_int=whole_number)
    except json.JSONDecodeError as e:
        raise FieldError(None, f"the request body is not valid JSON: {clip(str(e))}") from None
    except (RecursionError, ValueError) as e:  # belt and braces: the checks above should make these unreachable
        raise FieldError(None, f"the request body is not valid JSON: {clip(str(e))}") from None


# ----------------------------------------------------------------------------------------------------------------
# The fields
# ----------------------------------------------------------------------------------------------------------------
def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _as_int(field: str, value: Any) -> int:
    label = LABELS[field]
    if isinstance(value, bool):
        raise FieldError(field, f"{label} = {show(value)} is not a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return whole_number(str(int(value)))  # 1e300 has 301 digits: shown shortened
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return whole_number(value)
    raise FieldError(field, f"{label} = {show(value)} is not a whole number")


def _as_float(field: str, value: Any) -> float:
    label = LABELS[field]
    if isinstance(value, HugeNumber):
        value = value.text  # float() has no digit limit: a number this long is out of range or infinite
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise FieldError(field, f"{label} = {show(value)} is not a number")
    try:
        out = float(value)
    except ValueError:
        raise FieldError(field, f"{label} = {show(value)} is not a number") from None
    if not math.isfinite(out):
        raise FieldError(field, f"{label} = {show(value)} must be a finite number")
    return out


def parse_request(body: Any, limits: Limits, defaults: Defaults, reranking: bool,
                  rng: random.Random | None = None) -> GenerateRequest:
    """Validates a `/api/generate` body (numbers may come as JSON numbers or as the strings a form holds; blank
    numeric fields take their defaults, a blank seed a random one). Raises FieldError naming the first bad field."""
    if not isinstance(body, Mapping):
        raise FieldError(None, f"the request body must be a JSON object with the fields {', '.join(FIELDS)}")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise FieldError(clip(unknown[0], 100), f"unknown field {show(unknown[0])} (known: {', '.join(FIELDS)})")

    prompt = body.get("prompt")
    if prompt is None or (isinstance(prompt, str) and not prompt.strip()):
        raise FieldError("prompt", "prompt is empty: describe the image, e.g. 'a red circle'")
    if not isinstance(prompt, str):
        raise FieldError("prompt", f"prompt = {show(prompt)} must be text")
    prompt = " ".join(prompt.split())  # newlines and runs of spaces mean nothing to the tokenizer
    if len(prompt) > limits.max_prompt_chars:
        raise FieldError("prompt", f"prompt is {len(prompt)} characters long; the limit is "
                                   f"{limits.max_prompt_chars}")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as e:  # "\ud800" is valid JSON but no text: the tokenizer would fail on it
        raise FieldError("prompt", f"prompt = {show(prompt)} contains an unpaired surrogate "
                                   f"({show(e.object[e.start:e.end])}), which is not a character") from None

    def value(field: str, default: Any) -> Any:
        v = body.get(field)
        return default if _blank(v) else v

    n = _as_int("n", value("n", min(defaults.n, limits.max_images)))
    if not 1 <= n <= limits.max_images:
        raise FieldError("n", f"number of images = {n} must be between 1 and {limits.max_images}")

    top = _as_int("top", value("top", defaults.top if reranking else 0))
    if reranking:
        if not 0 <= top <= n:
            raise FieldError("top", f"keep best = {top} must be between 0 (keep all) and the number of images ({n})")
    elif top not in (0, n):
        raise FieldError("top", f"keep best = {top} needs CLIP reranking, which is off (start `dalle serve` with "
                                f"--clip DIR); leave it empty to show all {n} images")
    top = top or n

    scale = _as_float("condition_scale", value("condition_scale", defaults.condition_scale))
    if not 0 <= scale <= limits.max_condition_scale:
        raise FieldError("condition_scale", f"guidance = {scale:g} must be between 0 and "
                                            f"{limits.max_condition_scale:g} (1 = off)")
    top_k = _as_int("top_k", value("top_k", defaults.top_k))
    if not 0 <= top_k <= limits.image_codes:
        raise FieldError("top_k", f"top-k = {top_k} must be between 0 (off) and {limits.image_codes} "
                                  f"(the model's image codes)")
    temperature = _as_float("temperature", value("temperature", defaults.temperature))
    if not 0 <= temperature <= limits.max_temperature:
        raise FieldError("temperature", f"temperature = {temperature:g} must be between 0 (greedy) and "
                                        f"{limits.max_temperature:g}")
    seed_value = body.get("seed")
    if _blank(seed_value):
        seed = (rng or random).randrange(MAX_SEED + 1)
    else:
        seed = _as_int("seed", seed_value)
        if not 0 <= seed <= MAX_SEED:
            raise FieldError("seed", f"seed = {seed} must be between 0 and {MAX_SEED} (empty = random)")
    image, keep_rows = _completion(body.get("image"), body.get("keep_rows"), limits)
    return GenerateRequest(prompt, int(n), int(top), scale, int(top_k), temperature, int(seed), image, keep_rows)


def _completion(image_value: Any, rows_value: Any, limits: Limits) -> tuple[bytes | None, int | None]:
    """(image bytes, keep_rows) of an image completion, or (None, None) when both fields are blank."""
    if _blank(image_value) and _blank(rows_value):
        return None, None
    given = "image" if not _blank(image_value) else "keep_rows"
    if not limits.completion:
        raise FieldError(given, "image completion is not available on this server (it does not know the model's "
                                "rows of image codes); leave image and keep rows empty")
    rows = limits.code_rows
    if _blank(rows_value):
        raise FieldError("keep_rows", f"keep rows is missing: completing an image needs how many of its top code "
                                      f"rows to keep (1 to {rows - 1} of {rows})")
    if _blank(image_value):
        raise FieldError("image", f"image is missing: keep rows = {show(rows_value)} needs a picture to complete "
                                  f"(leave keep rows empty to generate from the prompt alone)")
    keep_rows = _as_int("keep_rows", rows_value)
    if not 1 <= keep_rows <= rows - 1:
        raise FieldError("keep_rows", f"keep rows = {keep_rows} must be between 1 and {rows - 1} (the model's "
                                      f"images are {rows} code rows; the rest are drawn)")
    return decode_image_field(image_value, limits.max_image_bytes), int(keep_rows)


def decode_image_field(value: Any, max_bytes: int) -> bytes:
    """The bytes of an `image` field: plain base64, or a `data:<type>;base64,<data>` URL (what the page's
    FileReader sends). The media type is not trusted either way: the worker decodes the bytes as a picture and
    says so if they are none. Whitespace is dropped (base64 is often wrapped in lines)."""
    if not isinstance(value, str):
        raise FieldError("image", f"image = {show(value)} must be text: the picture as base64 or as a "
                                  f"data:image/...;base64, URL")
    payload = value.strip()
    if payload[:5].lower() == "data:":
        header, comma, payload = payload.partition(",")
        if not comma:
            raise FieldError("image", f"image = {show(value)} is a data: URL without a ',' before its data")
        if "base64" not in (p.strip().lower() for p in header[5:].split(";")[1:]):
            raise FieldError("image", f"image is a data: URL ({show(header + ',')}) without ';base64'; send the "
                                      f"picture base64-encoded (FileReader.readAsDataURL does)")
    payload = re.sub(r"\s+", "", payload)
    too_large = f"the limit is {max_bytes:,} bytes ({max_bytes / 1024:.4g} KiB)"
    if 4 * max_bytes // 3 + 4 < len(payload):  # more characters than the limit's base64 needs: do not decode
        size = len(payload) * 3 // 4 - min(2, len(payload) - len(payload.rstrip("=")))  # exact if it is base64
        raise FieldError("image", f"image is about {size:,} bytes; {too_large}")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:  # ValueError: characters outside ASCII
        raise FieldError("image", f"image = {show(value)} is not valid base64: {clip(str(e), 120)}") from None
    if not data:
        raise FieldError("image", "image is empty (0 bytes): choose a picture file")
    if len(data) > max_bytes:
        raise FieldError("image", f"image is {len(data):,} bytes; {too_large}")
    return data
