"""What an adapter tells the engine about one model family (the only model-specific code)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

__all__ = [
    "Adapter",
    "FrameEncoder",
    "InstanceAttribute",
    "VideoGrid",
    "VideoLayout",
    "checked_encoder",
    "images_along_dim0",
    "temporal_patches",
]


@dataclass
class VideoLayout:
    """Where the video tokens of one sample are in its LLM input sequence.

    positions: (n,) sequence positions of the video tokens, ascending
    frame: (n,) frame index of each within its video (a Qwen temporal patch counts as a frame)
    patch: (n,) group key; equal keys = same patch position of the same video
    """

    positions: torch.Tensor
    frame: torch.Tensor
    patch: torch.Tensor

    @classmethod
    def empty(cls, device: torch.device | str = "cpu") -> "VideoLayout":
        e = torch.zeros(0, dtype=torch.long, device=device)
        return cls(e, e.clone(), e.clone())

    @classmethod
    def from_parts(
        cls, positions: list, frames: list, patches: list, device: torch.device | str = "cpu"
    ) -> "VideoLayout":
        """Concatenate per-frame pieces (lists of 1-D tensors); empty lists give an empty layout."""
        if not positions:
            return cls.empty(device)
        return cls(torch.cat(positions).to(device), torch.cat(frames).to(device), torch.cat(patches).to(device))

    def __len__(self) -> int:
        return int(self.positions.numel())

    def to(self, device: torch.device | str) -> "VideoLayout":
        return VideoLayout(self.positions.to(device), self.frame.to(device), self.patch.to(device))

    def select(self, rows: torch.Tensor) -> "VideoLayout":
        """The layout of the tokens ``rows`` (a bool mask or indices) only."""
        return VideoLayout(self.positions[rows], self.frame[rows], self.patch[rows])


@dataclass
class VideoGrid:
    """How the tokens of one video tile its frames (for pictures; the engine never reads it).

    frames: model frames (a Qwen temporal patch of ``temporal_patch`` input frames is one)
    rows, cols: tokens per frame, ordered row by row
    frame_size: (height, width) in pixels of a frame as the processor made it
    cell: (height, width) in pixels of the box one token covers: token (r, c) covers
        ``y in [r * cell[0], (r + 1) * cell[0])`` and ``x in [c * cell[1], (c + 1) * cell[1])``; the boxes
        may leave a margin at the right and bottom (LLaVA-OneVision's 27 patches of 14 px in 384 px)
    positions: (frames * rows * cols,) sequence positions of the grid tokens, frame by frame, then row
        by row; all of them are in the sample's :class:`VideoLayout`
    others: sequence positions of this video's placeholder tokens that are no grid cell (LLaVA-OneVision's
        newline after the video, Video-LLaVA's CLS token before each frame): they stay, as text does
    temporal_patch: input frames per model frame
    """

    frames: int
    rows: int
    cols: int
    frame_size: tuple[int, int]
    cell: tuple[float, float]
    positions: torch.Tensor
    others: torch.Tensor
    temporal_patch: int = 1

    @property
    def tokens(self) -> int:
        return self.frames * self.rows * self.cols

    def box(self, row: int, col: int) -> tuple[float, float, float, float]:
        """Pixel box ``(x0, y0, x1, y1)`` (x1, y1 exclusive) of token (row, col) in a processed frame."""
        h, w = self.cell
        return col * w, row * h, (col + 1) * w, (row + 1) * h


@dataclass(frozen=True)
class FrameEncoder:
    """A vision encoder module that encodes each frame (or temporal patch) without looking at the others,
    and how one call of its ``forward`` splits into calls over fewer frames (chunked vision encoding).

    module: the encoder (its ``forward`` is what gets wrapped)
    split: ``(arguments, frames) -> list of arguments, or None``: ``arguments`` are the call's arguments
        by name (``**kwargs`` spread out); each returned dict is one call over at most ``frames`` input
        frames, in order, so that joining the outputs along dim 0 gives what the one call returns. None
        when the call needs no split. Raises ``ValueError`` for a call it cannot split exactly.
    """

    module: nn.Module
    split: Callable[[dict[str, Any], int], list[dict[str, Any]] | None]


def checked_encoder(family: str, module: nn.Module, classes: tuple[str, ...]) -> nn.Module:
    """``module`` if its class is one whose frame independence was checked (``classes``), else a
    ``ValueError``: a family built with ``AutoModel.from_config(vision_config)`` can carry any encoder."""
    if type(module).__name__ not in classes:
        raise ValueError(
            f"chunked vision encoding is not available for {family} with a {type(module).__name__} vision encoder: "
            f"only {', '.join(classes)} were checked to encode each frame independently"
        )
    return module


def images_along_dim0(module: nn.Module) -> FrameEncoder:
    """An encoder that takes a batch of frames as images along dim 0 of its first tensor argument (CLIP,
    SigLIP, InternViT, ...): a call splits into runs of ``frames`` images; every tensor argument with that
    same dim 0 (a per-image mask) is cut alike, everything else is passed as it is."""

    def split(arguments: dict[str, Any], frames: int) -> list[dict[str, Any]] | None:
        tensors = [v for v in arguments.values() if isinstance(v, torch.Tensor) and v.ndim >= 1]
        if not tensors or tensors[0].shape[0] <= frames:
            return None
        n = tensors[0].shape[0]
        per_image = {k for k, v in arguments.items() if isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == n}
        return [{k: (v[i : i + frames] if k in per_image else v) for k, v in arguments.items()}
                for i in range(0, n, frames)]  # fmt: skip

    return FrameEncoder(module, split)


def temporal_patches(module: nn.Module, temporal: int) -> FrameEncoder:
    """An encoder called as ``forward(hidden_states, grid_thw, **kwargs)`` with the flattened patches of
    every image / video in ``hidden_states`` (``t * h * w`` rows per ``grid_thw`` row, temporal patch after
    temporal patch) whose attention is segmented per temporal patch (Qwen-VL, GLM-4V vision towers).

    A chunk is a whole number of temporal patches (``frames // temporal`` of them), filled greedily in
    order: a video's grid row is cut along t, and the tail of one row shares a chunk with the head of the
    next (each keeps its own grid row). The patches of a chunk are one contiguous slice (a view). Any other
    tensor argument (precomputed ``cu_seqlens``, ``position_ids``, window indices, ...) describes the whole
    call and cannot be cut: refused."""

    def split(arguments: dict[str, Any], frames: int) -> list[dict[str, Any]] | None:
        hidden, grid = arguments.get("hidden_states"), arguments.get("grid_thw")
        if not isinstance(hidden, torch.Tensor) or not isinstance(grid, torch.Tensor):
            raise ValueError("chunked vision encoding needs hidden_states and grid_thw tensors in the encoder call")
        other = sorted(k for k, v in arguments.items()
                       if isinstance(v, torch.Tensor) and k not in ("hidden_states", "grid_thw"))  # fmt: skip
        if other:
            raise ValueError(
                f"chunked vision encoding cannot split a call that passes precomputed {', '.join(other)} for the whole "
                "input; pass only the pixels and the grid (remove the chunking handle to encode it in one call)"
            )
        per_chunk = frames // temporal  # temporal patches per chunk
        rows = [tuple(int(v) for v in r) for r in grid.tolist()]
        if hidden.shape[0] != sum(t * h * w for t, h, w in rows):
            raise ValueError(f"hidden_states has {hidden.shape[0]} patch rows; grid_thw {rows} describes "
                             f"{sum(t * h * w for t, h, w in rows)}")  # fmt: skip
        if sum(t for t, _, _ in rows) <= per_chunk:
            return None
        chunks, current, taken, start, end = [], [], 0, 0, 0
        for t, h, w in rows:
            done = 0
            while done < t:
                n = min(t - done, per_chunk - taken)
                current.append([n, h, w])
                taken, done, end = taken + n, done + n, end + n * h * w
                if taken == per_chunk:
                    chunks.append((current, start, end))
                    current, taken, start = [], 0, end
        if current:
            chunks.append((current, start, end))
        return [
            dict(arguments, hidden_states=hidden[a:b], grid_thw=torch.tensor(g, dtype=grid.dtype, device=grid.device))
            for g, a, b in chunks
        ]

    return FrameEncoder(module, split)


def special_token_id(tokenizer: Any, name: str, token: str) -> int | None:
    """Id of a named special token (``tokenizer.<name>_id``), else of its usual spelling, else None."""
    value = getattr(tokenizer, f"{name}_id", None)
    if isinstance(value, int):
        return value
    value = tokenizer.convert_tokens_to_ids(token)
    return value if isinstance(value, int) and value != tokenizer.unk_token_id else None


class Adapter(ABC):
    """Model-family glue: where the video tokens are and which modules to hook."""

    #: human-readable family name, e.g. "Qwen2-VL"
    family: str = ""
    #: transformers class names this adapter handles
    model_classes: tuple[str, ...] = ()
    #: example checkpoints, for the docs and error messages
    checkpoints: tuple[str, ...] = ()

    def __init__(self, model: nn.Module, processor: Any = None):
        self.model = model
        self.processor = processor  # the model's processor (or tokenizer), for families that need it

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return type(model).__name__ in cls.model_classes

    def _base(self) -> nn.Module:
        """The multimodal base model (``XForConditionalGeneration.model``), or the model itself."""
        return self.base_of(self.model)

    @staticmethod
    def base_of(model: nn.Module) -> nn.Module:
        """The multimodal base model of ``model`` (``XForConditionalGeneration.model``), or ``model``."""
        return model.model if hasattr(model, "lm_head") else model

    @classmethod
    def frame_encoders(cls, model: nn.Module, frames: int) -> list[FrameEncoder]:
        """The vision encoder module(s) of ``model`` that video frames go through, each with how one call
        splits into calls over at most ``frames`` input frames whose outputs, joined along dim 0, are what
        the one call returns (:func:`framefusion.chunked_vision`). A classmethod: it needs no processor.

        Raises ``ValueError`` when this family's encoder is not known to encode frames independently, or
        when ``frames`` is not a whole number of the units it encodes together (temporal patches). The
        default refuses: a family opts in once its encoder was read and tested
        (:func:`images_along_dim0`, :func:`temporal_patches`)."""
        raise ValueError(
            f"chunked vision encoding is not available for {cls.family or cls.__name__}: its vision encoder was not "
            "checked to encode frames independently"
        )

    def input_module(self) -> nn.Module:
        """Module whose forward receives input_ids / grids / attention_mask / position_ids."""
        return self._base()

    def decoder_layers(self) -> nn.ModuleList:
        """The LLM decoder layers, in order."""
        return self._base().language_model.layers

    def text_config(self) -> Any:
        """Config of the LLM (num_hidden_layers, _attn_implementation)."""
        return self._base().language_model.config

    def label_tokenizer(self) -> Any:
        """The tokenizer that reads the text labels between frames, for families whose frames arrive
        as images (InternVL, SmolVLM): the processor's tokenizer, or the tokenizer passed as processor."""
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        if tokenizer is None:
            raise ValueError(
                f"{self.family} needs its processor (or tokenizer) to tell video frames from images: "
                "framefusion.apply(model, config, processor=processor)"
            )
        return tokenizer

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids`` exactly as written (special tokens kept, no clean-up)."""
        return self.label_tokenizer().decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def first_reducible_layer(self, inputs: dict[str, Any]) -> int:
        """Index of the first decoder layer at which tokens may be removed (default 0)."""
        return 0

    def install(self, record) -> list:
        """Extra hooks for inputs the input module does not see; ``record(name, value)`` keeps a value
        for the next prefill in this thread. Returns handles with ``remove()``."""
        return []

    @abstractmethod
    def video_layouts(self, inputs: dict[str, Any]) -> list[VideoLayout] | None:
        """One layout per sample from the input module's kwargs; None if the inputs carry no ids."""

    def video_grids(self, inputs: dict[str, Any], layouts: list[VideoLayout]) -> list[list[VideoGrid]] | None:
        """How each video's tokens tile its frames: per sample (row of ``layouts``, as
        :meth:`video_layouts` returned them for ``inputs``), one :class:`VideoGrid` per video in
        sequence order. None (the default) when this family's frames are not patch grids; a
        ``ValueError`` when the inputs do not carry what the geometry needs. Only pictures use it."""
        return None

    @classmethod
    def draws_grids(cls) -> bool:
        """Whether this family implements :meth:`video_grids` (its frames are patch grids)."""
        return cls.video_grids is not Adapter.video_grids

    def attention_probe(
        self, layer: nn.Module, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, last: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Query of token ``last[b]`` of each row and keys of all tokens at ``layer``, positions applied.

        Returns (q (b, heads, d), k (b, kv_heads, L, d), scaling). Default: a Llama/Qwen2-style
        layer (input_layernorm, self_attn.q_proj/k_proj, optional q_norm/k_norm, rotate-half RoPE
        with cos/sin of shape (b, L, d)).
        """
        attn = layer.self_attn
        x = layer.input_layernorm(hidden)
        b, length, _ = x.shape
        head_dim = attn.head_dim
        rows = torch.arange(b, device=x.device)
        q = attn.q_proj(x[rows, last][:, None]).view(b, 1, -1, head_dim)
        k = attn.k_proj(x).view(b, length, -1, head_dim)
        if getattr(attn, "q_norm", None) is not None:
            q = attn.q_norm(q)
        if getattr(attn, "k_norm", None) is not None:
            k = attn.k_norm(k)
        q = q.transpose(1, 2)  # (b, h, 1, d)
        k = k.transpose(1, 2)  # (b, kv, L, d)
        q = _rope(q, cos[rows, last][:, None], sin[rows, last][:, None])
        k = _rope(k, cos, sin)
        return q[:, :, 0], k, float(attn.scaling)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    cos, sin = cos.unsqueeze(1).to(x.dtype), sin.unsqueeze(1).to(x.dtype)
    return x * cos + _rotate_half(x) * sin


def split_videos(layout: VideoLayout, video_of_key: Any) -> list[tuple[int, torch.Tensor]]:
    """``(video, token indices)`` of each video in ``layout``, in sequence order; ``video_of_key`` maps
    the (n,) patch keys to the (n,) video index each key encodes (each adapter keys videos its own way)."""
    videos = video_of_key(layout.patch)  # (n,) video index of each token
    order = []
    for video in videos.tolist():
        if not order or order[-1] != video:
            order.append(video)
    return [(video, (videos == video).nonzero(as_tuple=True)[0]) for video in order]


def grid_positions(layout: VideoLayout, tokens: torch.Tensor, within: torch.Tensor, per_frame: int) -> torch.Tensor:
    """(frames * per_frame,) positions of a video's tokens ordered frame, then cell; ``tokens`` index the
    video's tokens in ``layout`` and ``within`` is each one's cell index in its frame. Raises when the
    video is not whole frames of ``per_frame`` cells."""
    frame = layout.frame[tokens]
    frames = int(frame.max()) + 1
    if tokens.numel() != frames * per_frame or bool((within >= per_frame).any()):
        raise ValueError(f"a video of {tokens.numel()} tokens is not {frames} frames of {per_frame} grid cells")
    slot = frame * per_frame + within  # (n,) place in frame-major, row-major order
    positions = torch.full((frames * per_frame,), -1, dtype=torch.long, device=tokens.device)
    positions[slot] = layout.positions[tokens]
    if bool((positions < 0).any()):
        raise ValueError("two tokens of a video claim the same frame and grid cell")
    return positions


def tile_grids(
    layouts: list[VideoLayout], rows: int, cols: int, frame_size: tuple[int, int], cell: tuple[float, float]
) -> list[list[VideoGrid]]:
    """Per sample, one :class:`VideoGrid` per video for families whose frames are one tile each of
    ``rows x cols`` tokens keyed ``cell + video * rows * cols`` (InternVL, SmolVLM); no non-grid tokens."""
    per_tile = rows * cols
    per_sample = []
    for layout in layouts:
        videos = []
        for _, tokens in split_videos(layout, lambda key: key // per_tile):
            positions = grid_positions(layout, tokens, layout.patch[tokens] % per_tile, per_tile)
            frames = positions.numel() // per_tile
            videos.append(VideoGrid(frames, rows, cols, frame_size, cell, positions, positions[:0], 1))
        per_sample.append(videos)
    return per_sample


class InstanceAttribute:
    """Sets ``obj.name = value`` on the instance (a wrapped method); ``remove()`` gives the instance back
    what it had: its own earlier attribute (another wrapper, e.g. the user's), or none, uncovering the
    class's. A later wrapper set over this one and still in place is left alone."""

    _NONE = object()

    def __init__(self, obj, name: str, value: Any):
        self.obj, self.name, self.value = obj, name, value
        self.previous = vars(obj).get(name, self._NONE)
        setattr(obj, name, value)

    def remove(self) -> None:
        if vars(self.obj).get(self.name, self._NONE) is not self.value:
            return  # already removed, or wrapped over by someone else: theirs stays
        if self.previous is self._NONE:
            delattr(self.obj, self.name)
        else:
            setattr(self.obj, self.name, self.previous)
