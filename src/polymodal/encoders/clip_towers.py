"""Native CLIP: its architecture config, the ViT image tower, the causal text tower and the two-tower model.

Written for training speed on CPU and GPU alike (the kernels live in ``polymodal.layers``):
- one fused QKV Linear per block and ``F.scaled_dot_product_attention`` (``is_causal`` for text)
  (``layers.transformer``), the MLP as one autograd function (``layers.mlp.FusedMLP``);
- pooled-only paths (``encode_image`` / ``encode_text``) compute the last block for the single token that is
  pooled (CLS / EOT) only, and drop text positions past the batch's last EOT: exact, since nothing else
  reaches the pooled output (causal attention, per-token MLP);
- the patch embedding is one matmul over the (non-overlapping) patches instead of a strided convolution, and the
  token embedding's [vocab, width] weight gradient reuses the previous step's buffer on CPU
  (``layers.TokenEmbedding``);
- LayerNorm always runs in fp32 (bf16/fp16 inputs are upcast), optional gradient checkpointing per block.
- on CPU, fp32 products run on oneDNN where it beats the linked BLAS (MKL on AMD CPUs: ~2×; ``layers.gemm``).

Architectures are data: ``CLIPNativeConfig.from_preset(name)`` reads ``polymodal/presets/clip/<name>.yaml``
(``vit-b-32``, ``tiny``). Weights load from / export to Hugging Face ``CLIPModel`` and open_clip layouts
(``polymodal.encoders.clip_convert``). Reference: Radford et al. 2021, "Learning Transferable Visual Models From
Natural Language Supervision"; layouts follow HF ``CLIPModel`` and open_clip's ``VisionTransformer``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import LayerNormFp32, TokenEmbedding, Transformer, linear
from ..presets import load_preset, preset_names


@dataclass
class CLIPNativeConfig:
    """The CLIP architecture. Defaults are OpenAI ViT-B/32 (the fields HF ``CLIPConfig`` needs).

    Raises ValueError naming the field for an unknown ``act`` / ``text_pool``, an image size that is not a
    multiple of the patch size, or a width not divisible by its head count.
    """

    image_size: int = 224
    patch_size: int = 32
    num_channels: int = 3
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    mlp_ratio: float = 4.0
    embed_dim: int = 512
    vocab_size: int = 49408
    context_length: int = 77
    act: Literal["quick_gelu", "gelu"] = "quick_gelu"
    layer_norm_eps: float = 1e-5
    # "eos": pool at the first ``eos_token_id`` (HF); "argmax": at the largest token id (open_clip / legacy HF).
    text_pool: Literal["eos", "argmax"] = "eos"
    eos_token_id: int = 49407
    logit_scale_init: float = math.log(1 / 0.07)
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.act not in ("quick_gelu", "gelu"):
            raise ValueError(f"CLIPNativeConfig.act must be 'quick_gelu' or 'gelu', got {self.act!r}")
        if self.text_pool not in ("eos", "argmax"):
            raise ValueError(f"CLIPNativeConfig.text_pool must be 'eos' or 'argmax', got {self.text_pool!r}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        for tower in ("vision", "text"):
            width, heads = getattr(self, f"{tower}_width"), getattr(self, f"{tower}_heads")
            if heads < 1 or width % heads:
                raise ValueError(f"{tower}_width {width} is not divisible by {tower}_heads {heads}")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> CLIPNativeConfig:
        """The architecture of preset ``name`` (``polymodal/presets/clip/<name>.yaml``), fields overridden by
        ``overrides``. Raises PresetError (a ValueError) for an unknown name, TypeError for an unknown field."""
        return cls(**{**load_preset("clip", name), **overrides})

    @classmethod
    def vit_b_32(cls, **overrides) -> CLIPNativeConfig:
        return cls.from_preset("vit-b-32", **overrides)

    @classmethod
    def tiny(cls, **overrides) -> CLIPNativeConfig:
        """A few-hundred-kB CLIP for tests and CPU smoke runs."""
        return cls.from_preset("tiny", **overrides)

    def to_dict(self) -> dict:
        return asdict(self)


def clip_preset_names() -> list[str]:
    """Names ``CLIPNativeConfig.from_preset`` and the ``preset`` option of clip_vision / clip_text accept."""
    return preset_names("clip")


class CLIPVisionTower(nn.Module):
    """ViT with class token, pre-LN: pixel_values [B, C, H, W] → tokens [B, 1 + P, Dv] (ln_post applied)."""

    def __init__(self, config: CLIPNativeConfig):
        super().__init__()
        c = config
        self.config = c
        self.num_patches = (c.image_size // c.patch_size) ** 2
        # a Conv2d for the weight layout (and HF / open_clip checkpoints); forward runs it as one matmul
        self.patch_embed = nn.Conv2d(c.num_channels, c.vision_width, c.patch_size, c.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(c.vision_width) * c.vision_width**-0.5)
        self.position_embedding = nn.Parameter(torch.randn(self.num_patches + 1, c.vision_width) * 0.02)
        self.ln_pre = LayerNormFp32(c.vision_width, eps=c.layer_norm_eps)
        self.transformer = Transformer(c.vision_width, c.vision_layers, c.vision_heads, c.mlp_ratio, c.act,
                                       c.layer_norm_eps)
        self.ln_post = LayerNormFp32(c.vision_width, eps=c.layer_norm_eps)

    def embed(self, pixel_values: Tensor) -> Tensor:
        c = self.config
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != (c.num_channels, c.image_size, c.image_size):
            raise ValueError(f"pixel_values must be [B, {c.num_channels}, {c.image_size}, {c.image_size}], "
                             f"got {list(pixel_values.shape)}")
        weight = self.patch_embed.weight
        batch, grid, p = pixel_values.shape[0], c.image_size // c.patch_size, c.patch_size
        if type(self.patch_embed) is not nn.Conv2d:
            # a PEFT adapter wraps the convolution (its .weight is the base weight): call it so the update applies
            patches = self.patch_embed(pixel_values.to(weight.dtype)).flatten(2).transpose(1, 2)
        else:
            # stride == kernel: the convolution is a matmul over the flattened patches ([B·P, C·p·p] @
            # [C·p·p, Dv]), one copy to gather the patches instead of the convolution's im2col plus a transposing
            # flatten
            patches = pixel_values.to(weight.dtype).reshape(batch, c.num_channels, grid, p, grid, p)
            patches = patches.permute(0, 2, 4, 1, 3, 5).reshape(batch, grid * grid, -1)
            patches = linear(patches, weight.view(weight.shape[0], -1))
        cls = (self.class_embedding + self.position_embedding[0]).expand(patches.shape[0], 1, -1)
        x = torch.cat([cls, patches + self.position_embedding[1:]], dim=1)
        return self.ln_pre(x)

    def forward(self, pixel_values: Tensor) -> Tensor:
        """tokens [B, 1 + P, Dv] after ln_post; tokens[:, 0] is the pooled (CLS) feature."""
        return self.ln_post(self.transformer(self.embed(pixel_values)))

    def forward_pooled(self, pixel_values: Tensor) -> Tensor:
        """ln_post(CLS) [B, Dv]; the last block runs for the CLS token only."""
        x = self.transformer(self.embed(pixel_values), skip_last=True)
        return self.ln_post(self.transformer.blocks[-1].forward_query(x, None, None))


class CLIPTextTower(nn.Module):
    """Causal text transformer: input_ids [B, L] → tokens [B, L, Dt] (ln_final applied); pooled at EOT."""

    def __init__(self, config: CLIPNativeConfig):
        super().__init__()
        c = config
        self.config = c
        self.token_embedding = TokenEmbedding(c.vocab_size, c.text_width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.position_embedding = nn.Parameter(torch.randn(c.context_length, c.text_width) * 0.01)
        self.transformer = Transformer(c.text_width, c.text_layers, c.text_heads, c.mlp_ratio, c.act,
                                       c.layer_norm_eps)
        self.ln_final = LayerNormFp32(c.text_width, eps=c.layer_norm_eps)

    def eot_index(self, input_ids: Tensor) -> Tensor:
        """[B] position pooled per sample: first ``eos_token_id`` (HF), or the largest id (open_clip)."""
        if self.config.text_pool == "argmax":
            return input_ids.argmax(dim=-1)
        return (input_ids == self.config.eos_token_id).int().argmax(dim=-1)

    def _prepare(self, input_ids: Tensor, attention_mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Embeddings [B, L, Dt] and, only for left/middle padding, a causal ∧ key-padding mask [B, 1, L, L]."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [B, L], got {list(input_ids.shape)}")
        length = input_ids.shape[1]
        if length > self.config.context_length:
            raise ValueError(f"input_ids has {length} tokens, more than context_length {self.config.context_length}")
        x = self.token_embedding(input_ids) + self.position_embedding[:length]
        mask = None
        # Right padding needs no mask: with causal attention real tokens never see the pads after them.
        if attention_mask is not None and bool((attention_mask[:, 1:] > attention_mask[:, :-1]).any()):
            causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
            eye = torch.eye(length, dtype=torch.bool, device=x.device)  # pads see themselves: no empty rows (NaN)
            mask = ((causal & attention_mask.bool()[:, None, :]) | eye)[:, None]
        return x, mask

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """tokens [B, L, Dt] after ln_final."""
        x, mask = self._prepare(input_ids, attention_mask)
        return self.ln_final(self.transformer(x, causal=True, attn_mask=mask))

    def forward_pooled(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """ln_final(EOT token) [B, Dt]; positions after the batch's last EOT are never computed."""
        eot = self.eot_index(input_ids)
        if attention_mask is None or bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all()):
            keep = int(eot.max()) + 1  # exact: with causal attention nothing after the EOT reaches it
            input_ids = input_ids[:, :keep]
            attention_mask = None if attention_mask is None else attention_mask[:, :keep]
        x, mask = self._prepare(input_ids, attention_mask)
        x = self.transformer(x, causal=True, attn_mask=mask, skip_last=True)
        positions = torch.arange(x.shape[1], device=x.device)
        key_mask = positions[None, :] <= eot[:, None]
        if mask is not None:
            key_mask = key_mask & attention_mask.bool()
        return self.ln_final(self.transformer.blocks[-1].forward_query(x, eot, key_mask))


class CLIPModelNative(nn.Module):
    """CLIP: two towers, two bias-free projections to ``embed_dim`` and a learned logit scale."""

    def __init__(self, config: CLIPNativeConfig | None = None):
        super().__init__()
        self.config = config = config or CLIPNativeConfig()
        self.visual = CLIPVisionTower(config)
        self.text = CLIPTextTower(config)
        self.visual_projection = nn.Linear(config.vision_width, config.embed_dim, bias=False)
        self.text_projection = nn.Linear(config.text_width, config.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init)))
        self.set_gradient_checkpointing(config.gradient_checkpointing)

    def set_gradient_checkpointing(self, enabled: bool = True) -> CLIPModelNative:
        self.visual.transformer.gradient_checkpointing = enabled
        self.text.transformer.gradient_checkpointing = enabled
        return self

    def encode_image(self, pixel_values: Tensor, normalize: bool = False) -> Tensor:
        """pixel_values [B, C, H, W] → image embeddings [B, E] (HF ``get_image_features``)."""
        emb = self.visual_projection(self.visual.forward_pooled(pixel_values))
        return F.normalize(emb, dim=-1) if normalize else emb

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor | None = None, normalize: bool = False) -> Tensor:
        """input_ids [B, L] (right-padded, as CLIP tokenizers do) → text embeddings [B, E]."""
        emb = self.text_projection(self.text.forward_pooled(input_ids, attention_mask))
        return F.normalize(emb, dim=-1) if normalize else emb

    def forward(self, pixel_values: Tensor, input_ids: Tensor,
                attention_mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(image_emb [B, E] L2-normalised, text_emb [B, E] L2-normalised, logit_scale.exp() scalar)."""
        image = self.encode_image(pixel_values, normalize=True)
        text = self.encode_text(input_ids, attention_mask, normalize=True)
        return image, text, self.logit_scale.exp()
