"""A fast native CLIP (ViT image tower + causal text tower), exposed as polymodal Encoders and as a model.

Written for training speed on CPU and GPU alike:
- one fused QKV Linear per block and ``F.scaled_dot_product_attention`` (``is_causal`` for text),
  with head split/merge done as views (the only copy is the one SDPA's kernel layout needs, and the backward
  assembles the q/k/v gradients with a single copy);
- the MLP is one autograd function (``_FusedMLP``) with the activation's constants folded into its two
  matmuls: 3 forward and 7 backward kernels instead of 5 and 9 (fewer passes over the [T, 4D] activations);
- pooled-only paths (``encode_image`` / ``encode_text``) compute the last block for the single token that is
  pooled (CLS / EOT) only, and drop text positions past the batch's last EOT: exact, since nothing else
  reaches the pooled output (causal attention, per-token MLP);
- the patch embedding is one matmul over the (non-overlapping) patches instead of a strided convolution, and the
  token embedding's [vocab, width] weight gradient is written into the buffer of the previous step on CPU
  (``TokenEmbedding``): a fresh 100 MB allocation per step costs the kernel's page faults, ~3 % of a ViT-B/32 step;
- LayerNorm always runs in fp32 (bf16/fp16 inputs are upcast), optional gradient checkpointing per block.

Weights load from / export to Hugging Face ``CLIPModel`` and open_clip layouts (see ``convert.py``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..encoders.base import Encoder
from ..registry import ENCODERS
from ..types import ModalityOutput


@dataclass
class CLIPNativeConfig:
    """The CLIP architecture. Defaults are OpenAI ViT-B/32 (the fields HF ``CLIPConfig`` needs)."""

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
    def vit_b_32(cls, **overrides) -> CLIPNativeConfig:
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides) -> CLIPNativeConfig:
        """A few-hundred-kB CLIP for tests and CPU smoke runs."""
        base = dict(image_size=32, patch_size=8, vision_width=64, vision_layers=2, vision_heads=4, text_width=32,
                    text_layers=2, text_heads=4, embed_dim=32, vocab_size=100, context_length=16, eos_token_id=99)
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {"vit-b-32": CLIPNativeConfig.vit_b_32, "tiny": CLIPNativeConfig.tiny}


class LayerNormFp32(nn.LayerNorm):
    """LayerNorm whose statistics are always computed in fp32 (low-precision inputs are upcast and cast back)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype in (torch.float32, torch.float64):
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        out = F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps)
        return out.to(x.dtype)


def quick_gelu(x: Tensor) -> Tensor:
    """CLIP's x·σ(1.702x), written as silu(1.702x)/1.702: silu is one fused kernel forward and backward."""
    return F.silu(x * 1.702) * (1 / 1.702)


# activation → (pre-scale s, fn, fn_backward): act(h) = fn(s·h) / s. quick_gelu(h) = silu(1.702h) / 1.702.
_MLP_ACTS = {"quick_gelu": (1.702, F.silu, torch.ops.aten.silu_backward),
             "gelu": (1.0, F.gelu, torch.ops.aten.gelu_backward)}


class _FusedMLP(torch.autograd.Function):
    """fc2(act(fc1(x))) for x [T, D] with the activation's scales folded into the two matmuls.

    Forward is three kernels: z = s·(x W1ᵀ + b1) (one addmm with alpha = beta = s), a = fn(z), and
    out = (a W2ᵀ)/s + b2 (one addmm with alpha = 1/s). Backward needs no scaling pass either, since
    ∂out/∂h = fn'(z) exactly: grad_h = fn_backward(grad W2, z). Autograd through the module path would run
    five forward and nine backward kernels, four of them extra passes over the [T, 4D] activations.
    """

    @staticmethod
    def forward(ctx, x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, act: str) -> Tensor:
        scale, fn, _ = _MLP_ACTS[act]
        z = torch.addmm(b1, x, w1.t(), beta=scale, alpha=scale)
        a = fn(z)
        ctx.save_for_backward(x, w1, w2, z, a)
        ctx.act = act
        return torch.addmm(b2, a, w2.t(), alpha=1 / scale)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, w1, w2, z, a = ctx.saved_tensors
        scale, _, fn_backward = _MLP_ACTS[ctx.act]
        need = ctx.needs_input_grad
        grad_h = fn_backward(grad.mm(w2), z)  # = ∂loss/∂(x W1ᵀ + b1): the 1/s and s cancel
        # beta = 0: the first argument only gives the shape, it is not read
        grad_w2 = torch.addmm(w2, grad.t(), a, beta=0, alpha=1 / scale) if need[3] else None
        grad_b2 = grad.sum(0) if need[4] else None
        grad_w1 = grad_h.t().mm(x) if need[1] else None
        grad_b1 = grad_h.sum(0) if need[2] else None
        grad_x = grad_h.mm(w1) if need[0] else None
        return grad_x, grad_w1, grad_b1, grad_w2, grad_b2, None


def _storage_use_count(storage: torch.UntypedStorage) -> int | None:
    """How many holders a storage has (ours included); None where this torch build cannot tell."""
    counter = getattr(torch._C, "_storage_Use_Count", None)
    return None if counter is None else counter(storage._cdata)


class _EmbeddingLookup(torch.autograd.Function):
    """weight[ids] whose weight gradient goes into the owner's buffer from the previous step when it is free."""

    @staticmethod
    def forward(ctx, ids: Tensor, weight: Tensor, owner: TokenEmbedding) -> Tensor:
        ctx.save_for_backward(ids)
        ctx.owner = owner
        ctx.weight_shape, ctx.weight_dtype = weight.shape, weight.dtype
        return F.embedding(ids, weight)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        (ids,) = ctx.saved_tensors
        grad_weight = ctx.owner.gradient_buffer(ctx.weight_shape, ctx.weight_dtype, grad.device)
        grad_weight.index_add_(0, ids.reshape(-1), grad.reshape(-1, grad.shape[-1]).to(grad_weight.dtype))
        return None, grad_weight, None


class TokenEmbedding(nn.Embedding):
    """nn.Embedding whose dense weight gradient reuses last step's memory on CPU (same values, same autograd).

    A vocabulary-sized gradient ([49408, 512] fp32 = 100 MB for CLIP) is allocated afresh every step once the
    optimizer sets grads to None, and glibc serves allocations that large straight from the kernel: every page
    faults in again, which took ~150 ms per step here. This module keeps the gradient's storage (not the tensor)
    and hands it back to autograd as a new tensor when nobody else holds it, i.e. after ``zero_grad`` dropped
    it; while ``.grad`` is still alive (gradient accumulation) or the caller kept a reference, a fresh buffer is
    allocated as usual. The returned gradient is owned by autograd alone, so AccumulateGrad adopts it without a
    copy and hooks (DDP, post-accumulate) see an ordinary gradient. GPUs have a caching allocator: off there.
    """

    reuse_gradient_buffer = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._gradient_storage: torch.UntypedStorage | None = None

    def forward(self, ids: Tensor) -> Tensor:
        weight = self.weight
        if (self.reuse_gradient_buffer and weight.requires_grad and torch.is_grad_enabled()
                and weight.device.type == "cpu" and self.padding_idx is None and self.max_norm is None
                and not self.scale_grad_by_freq and not self.sparse):
            return _EmbeddingLookup.apply(ids, weight, self)
        return super().forward(ids)

    def gradient_buffer(self, shape: torch.Size, dtype: torch.dtype, device: torch.device) -> Tensor:
        """A zeroed [V, D] tensor: on last step's storage when only this module still holds it, else new."""
        storage = self._gradient_storage
        numel = math.prod(shape)
        if (storage is not None and storage.device == device and _storage_use_count(storage) == 1
                and storage.nbytes() == numel * dtype.itemsize):
            return torch.empty(0, dtype=dtype, device=device).set_(storage, 0, shape).zero_()
        buffer = torch.zeros(shape, dtype=dtype, device=device)
        storage = buffer.untyped_storage()
        self._gradient_storage = storage if _storage_use_count(storage) is not None else None
        return buffer

    def _apply(self, fn, recurse=True):  # .to() / .half() / ...: the cached storage no longer matches
        self._gradient_storage = None
        return super()._apply(fn, recurse)

    def __getstate__(self):  # pickling / deepcopy: the cache is not part of the module
        state = super().__getstate__()
        return {**state, "_gradient_storage": None}


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block: x + attn(ln_1(x)); x + mlp(ln_2(x)). tokens [B, N, D] → [B, N, D]."""

    def __init__(self, width: int, heads: int, mlp_dim: int, act: str, eps: float):
        super().__init__()
        self.heads = heads
        self.ln_1 = LayerNormFp32(width, eps=eps)
        self.qkv = nn.Linear(width, 3 * width)  # rows ordered [q; k; v], like open_clip's in_proj
        self.out_proj = nn.Linear(width, width)
        self.ln_2 = LayerNormFp32(width, eps=eps)
        self.fc1 = nn.Linear(width, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, width)
        self.act_name = act
        self.act = quick_gelu if act == "quick_gelu" else F.gelu

    def mlp(self, x: Tensor) -> Tensor:
        h = self.ln_2(x)
        if h.dtype == self.fc1.weight.dtype and not torch.is_autocast_enabled(h.device.type):
            # the fused function's backward works in the forward's dtypes, which autocast would change
            out = _FusedMLP.apply(h.reshape(-1, h.shape[-1]), self.fc1.weight, self.fc1.bias, self.fc2.weight,
                                  self.fc2.bias, self.act_name)
            return out.view(*h.shape[:-1], out.shape[-1])
        return self.fc2(self.act(self.fc1(h)))

    def forward(self, x: Tensor, causal: bool = False, attn_mask: Tensor | None = None) -> Tensor:
        """x [B, N, D]; attn_mask [B, 1, N, N] bool (True = may attend) or None."""
        batch, length, width = x.shape
        qkv = self.qkv(self.ln_1(x))
        # [B, N, 3, H, hd] → three [B, H, N, hd] views: no copy before SDPA. Unbinding dim 2 (not a leading
        # dim of a permuted view) makes the backward stack the q/k/v grads straight into the [B, N, 3D] layout
        # of the qkv output: one copy, where permute-then-unbind needs a stack plus a transposing clone.
        q, k, v = (t.transpose(1, 2) for t in qkv.view(batch, length, 3, self.heads, -1).unbind(2))
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal and attn_mask is None)
        x = x + self.out_proj(attn.transpose(1, 2).reshape(batch, length, width))
        return x + self.mlp(x)

    def forward_query(self, x: Tensor, query_index: Tensor | None, key_mask: Tensor | None) -> Tensor:
        """The block's output at one position per sample: x [B, N, D] → [B, D].

        query_index [B] long (None = position 0, the CLS token); key_mask [B, N] bool keys that position sees.
        Keys/values are computed for every position, queries, out_proj and the MLP for one token only.
        """
        batch, length, width = x.shape
        # split (not slicing) so that the backward is one cat per tensor instead of zero-filled full-size grads
        w_q, w_kv = self.qkv.weight.split([width, 2 * width])
        b_q, b_kv = self.qkv.bias.split([width, 2 * width])
        k, v = (t.transpose(1, 2) for t in F.linear(self.ln_1(x), w_kv, b_kv).view(
            batch, length, 2, self.heads, -1).unbind(2))
        # the query token is picked once and normalised again (one row): a second gather from ln_1(x) would
        # cost another zero-filled [B, N, D] gradient in the backward
        x_q = x[:, 0] if query_index is None else x[torch.arange(batch, device=x.device), query_index]
        q = F.linear(self.ln_1(x_q), w_q, b_q).view(batch, self.heads, 1, -1)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, 1, hd]
        x_q = x_q + self.out_proj(attn.reshape(batch, width))
        return x_q + self.mlp(x_q)


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float, act: str, eps: float):
        super().__init__()
        mlp_dim = round(width * mlp_ratio)
        self.blocks = nn.ModuleList(ResidualAttentionBlock(width, heads, mlp_dim, act, eps) for _ in range(layers))
        self.gradient_checkpointing = False

    def forward(self, x: Tensor, causal: bool = False, attn_mask: Tensor | None = None,
                skip_last: bool = False) -> Tensor:
        blocks = self.blocks[:-1] if skip_last else self.blocks
        for block in blocks:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, causal, attn_mask, use_reentrant=False)
            else:
                x = block(x, causal, attn_mask)
        return x


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
        # stride == kernel: the convolution is a matmul over the flattened patches ([B·P, C·p·p] @ [C·p·p, Dv]),
        # one copy to gather the patches instead of the convolution's im2col plus a transposing flatten
        patches = pixel_values.to(weight.dtype).reshape(batch, c.num_channels, grid, p, grid, p)
        patches = patches.permute(0, 2, 4, 1, 3, 5).reshape(batch, grid * grid, -1)
        patches = patches @ weight.view(weight.shape[0], -1).t()
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


# ------------------------------------------------------------------------------------ polymodal encoders


def _tower_config(preset: str, pretrained: str | None, load_weights: bool, overrides: dict):
    """A (config, CLIPModelNative | None) pair: pretrained HF CLIP weights when asked, else the preset."""
    if pretrained is not None and load_weights:
        from .convert import from_hf_clip  # local import: convert imports transformers

        model = from_hf_clip(pretrained)
        return model.config, model
    if preset not in PRESETS:
        raise ValueError(f"unknown CLIP preset {preset!r}; available: {', '.join(PRESETS)}")
    return PRESETS[preset](**overrides), None


class _CLIPTowerEncoder(Encoder):
    def _finish(self, config: CLIPNativeConfig, model: CLIPModelNative | None, project: bool, width: int,
                projection: str) -> None:
        self.config = config
        self.output_dim = config.embed_dim if project else width
        self.projection = nn.Linear(width, config.embed_dim, bias=False) if project else None
        if model is not None and project:  # keep the checkpoint's own projection
            self.projection.load_state_dict(getattr(model, projection).state_dict())

    def _project(self, x: Tensor) -> Tensor:
        return x if self.projection is None else self.projection(x)

    def _output(self, tokens: Tensor, mask: Tensor, pooled: Tensor, present: Tensor) -> ModalityOutput:
        mask = mask & present.unsqueeze(1)
        pooled = self._project(pooled) * present.unsqueeze(1).to(pooled.dtype)
        return ModalityOutput(tokens=self._project(tokens), mask=mask, pooled=pooled, present=present)


@ENCODERS.register("clip_vision", "CLIP ViT image tower (native, fast); HF CLIP weights via pretrained=")
class CLIPVisionEncoder(_CLIPTowerEncoder):
    """inputs {"pixel_values": [B, C, H, W]} → tokens [B, 1 + P, D] (ln_post), pooled = CLS token [B, D].

    ``project=True`` applies CLIP's visual projection to tokens and pooled (D = embed_dim): the pooled output
    is then exactly CLIP's image embedding. Other keyword options override the preset's config fields.
    """

    kind = "image"

    def __init__(self, preset: str = "vit-b-32", pretrained: str | None = None, project: bool = False,
                 gradient_checkpointing: bool = False, load_weights: bool = True, image_size: int | None = None,
                 in_channels: int | None = None, **config_overrides):
        super().__init__()
        # image_size / in_channels are named so build_encoder fills them from the image processor (as for the
        # other image presets): the tower then always matches the pixel_values the processor makes.
        shape = {key: value for key, value in (("image_size", image_size), ("num_channels", in_channels))
                 if value is not None}
        config, model = _tower_config(preset, pretrained, load_weights, {**shape, **config_overrides})
        for key, value in shape.items():
            if getattr(config, key) != value:  # a checkpoint's own shape wins; say so instead of failing later
                raise ValueError(f"clip_vision: {pretrained} expects {key}={getattr(config, key)}, got {value} "
                                 f"(set the image processor to match)")
        self.tower = model.visual if model is not None else CLIPVisionTower(config)
        self.tower.transformer.gradient_checkpointing = gradient_checkpointing
        self._finish(config, model, project, config.vision_width, "visual_projection")

    def forward_features(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        tokens = self.tower(inputs["pixel_values"])
        return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)

    def forward(self, inputs: dict[str, Tensor], present: Tensor) -> ModalityOutput:
        tokens, mask = self.forward_features(inputs)
        return self._output(tokens, mask, tokens[:, 0], present)


@ENCODERS.register("clip_text", "CLIP causal text tower (native, fast); HF CLIP weights via pretrained=")
class CLIPTextEncoder(_CLIPTowerEncoder):
    """inputs {"input_ids": [B, L], "attention_mask": [B, L]} → tokens [B, L, D] (ln_final), pooled at EOT."""

    kind = "text"

    @classmethod
    def token_capacity(cls, options: dict) -> tuple[int | None, str]:
        """(context_length, source) of the tower ``options`` build, without building it: the text processor's
        length never exceeds it (encoders/capacity.py)."""
        if options.get("context_length") is not None:
            return int(options["context_length"]), "encoder option context_length of clip_text"
        if options.get("pretrained") is not None and options.get("load_weights", True):
            from ..encoders.capacity import hf_text_capacity

            return hf_text_capacity(str(options["pretrained"])), f"context length of {options['pretrained']}"
        preset = options.get("preset", "vit-b-32")
        if preset not in PRESETS:
            return None, ""
        return PRESETS[preset]().context_length, f"context_length of the clip_text preset {preset!r}"

    def __init__(self, preset: str = "vit-b-32", pretrained: str | None = None, project: bool = False,
                 gradient_checkpointing: bool = False, load_weights: bool = True, **config_overrides):
        super().__init__()
        config, model = _tower_config(preset, pretrained, load_weights, config_overrides)
        self.max_tokens = config.context_length  # the text processor never emits more (encoders/capacity.py)
        self.max_tokens_source = "context_length of clip_text"
        self.tower = model.text if model is not None else CLIPTextTower(config)
        self.tower.transformer.gradient_checkpointing = gradient_checkpointing
        self._finish(config, model, project, config.text_width, "text_projection")

    def forward_features(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        input_ids = inputs["input_ids"]
        attention_mask = inputs.get("attention_mask")
        tokens = self.tower(input_ids, attention_mask)
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        return tokens, mask

    def forward(self, inputs: dict[str, Tensor], present: Tensor) -> ModalityOutput:
        tokens, mask = self.forward_features(inputs)
        eot = self.tower.eot_index(inputs["input_ids"])
        pooled = tokens[torch.arange(tokens.shape[0], device=tokens.device), eot]
        return self._output(tokens, mask, pooled, present)
