"""ALBEF (salesforce/ALBEF) in plain PyTorch, as a reference for albef-cpp.

The modules use the official state_dict names, so official `.pth` checkpoints
load with strict key matching: `AlbefPretrain` has the names of
models/model_pretrain.py (BertForMaskedLM: `text_encoder.bert.*`,
`text_encoder.cls.*`) and `AlbefRetrieval` those of models/model_retrieval.py
(BertModel: `text_encoder.*`). The forward passes follow models/vit.py and
models/xbert.py step by step, in the same order of floating-point operations,
so fp32 results match the official code to rounding. Weight initialisation is
PyTorch's default, not the official one: these models are meant to be loaded
from a checkpoint (or timed).

It needs only torch, numpy and PyYAML, and is the PyTorch baseline for the
benchmarks: every function takes batches and runs under
`torch.autocast('cpu', dtype=torch.bfloat16)`. `AlbefPretrain(momentum=True)`
also has the official pretraining forward (momentum distillation, ITC with
queues, ITM with sampled hard negatives, MLM), so a training step can be timed
the way the official Pretrain.py runs it; grit_forward is GRIT-VLP's step on it.

SIMLA (codezakh/SIMLA) is here too: `SimlaPretrain` has the names of
models/simla/pretrain.py (the single-stream BERT of models/med.py, read from a
bert_config with add_cross_attention and no fusion_layer; the ViT's
mask_token; mim_head and concept_head with momentum copies) and
`simla_forward` its pretraining forward (ITC, ITM, MLM, MIM, pseudo-keyword
supervision), the official fixture's five losses to 1.2e-7.
"""
import json
import math
import os
import types

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

# ViT-B/16, which the official models hard-code; a config's `vision_config` overrides it.
VIT_B16 = {"patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12, "mlp_ratio": 4}
# Special tokens of bert-base-uncased; the official mask() reads them from its tokenizer.
PAD_ID, CLS_ID, MASK_ID = 0, 101, 103
# HF BertConfig defaults for fields a config_bert.json may leave out.
BERT_DEFAULTS = {"hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
                 "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "type_vocab_size": 2, "pad_token_id": 0}


# ----------------------------------------------------------------------------- config

def resolve_path(relative, config_path):
    """Finds a path named in a config the way albef-cpp's Config::resolve does:
    as given if absolute or present relative to the working directory, else
    relative to the config's folder, else to that folder's parent."""
    if not relative or os.path.isabs(relative) or os.path.exists(relative):
        return relative
    folder = os.path.dirname(config_path)
    for base in (folder, os.path.dirname(folder)):
        candidate = os.path.join(base, relative)
        if os.path.exists(candidate):
            return os.path.normpath(candidate)
    return relative


def load_config(path):
    """Reads a YAML config; adds `bert` (the BERT json as a namespace, with HF
    defaults filled in) and `vision` (ViT-B/16 updated by `vision_config`).
    A BERT json with `add_cross_attention` and no `fusion_layer` (SIMLA's
    shared_bert.json) is the single-stream BERT: `single_stream` is set and
    `fusion_layer` is 0 (a cross-attention in every layer)."""
    with open(path) as f:
        config = yaml.safe_load(f)
    config["bert_config"] = resolve_path(config["bert_config"], path)
    with open(config["bert_config"]) as f:
        bert = {**BERT_DEFAULTS, **json.load(f)}
    bert["single_stream"] = bool(bert.get("add_cross_attention")) and "fusion_layer" not in bert
    if bert["single_stream"]:
        bert["fusion_layer"] = 0
    config["bert"] = types.SimpleNamespace(**bert)
    config["vision"] = {**VIT_B16, **(config.get("vision_config") or {})}
    return config


# ----------------------------------------------------------------------------- ViT (models/vit.py, timm 0.4.9)

class PatchEmbed(nn.Module):
    """Non-overlapping patches by a strided convolution, no norm (timm PatchEmbed)."""

    def __init__(self, img_size, patch_size, embed_dim):
        super().__init__()
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection (timm layout).
    With `register_hook` (models/vit.py, for Grad-CAM) the attention
    probabilities [B, heads, N, N] are kept in `attention_map` and their
    gradient, once a backward reaches them, in `attn_gradients`."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.attention_map = None
        self.attn_gradients = None

    def save_attn_gradients(self, attn_gradients):
        self.attn_gradients = attn_gradients

    def forward(self, x, register_hook=False):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        if register_hook:  # ALBEF's ViT has no attention dropout: the probabilities as the softmax gives them
            self.attention_map = attn
            attn.register_hook(self.save_attn_gradients)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    """Pre-norm transformer block. ALBEF uses no dropout and no drop-path in the ViT."""

    def __init__(self, dim, num_heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, register_hook=False):
        x = x + self.attn(self.norm1(x), register_hook)
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """With `mask_token` (SIMLA's models/vit.py) the ViT has a learned
    `mask_token` [1, 1, width], zeros at construction, for masked image modelling."""

    def __init__(self, img_size, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4, mask_token=False):
        super().__init__()
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(img_size, patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if mask_token else None
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def forward(self, images, register_blk=-1, masked_patches=None):
        """`register_blk` = i keeps block i's attention and its gradient (models/vit.py; -1: none).
        `masked_patches` [B, patches] (bool or 0/1, row-major as the patches) replaces
        those patch embeddings by `mask_token` before the [CLS] token and the position
        embedding are added: x * (1 - w) + mask_token * w, as SIMLA's vit.py."""
        x = self.patch_embed(images)
        if masked_patches is not None:
            mask_tokens = self.mask_token.expand(x.shape[0], x.shape[1], -1)
            w = masked_patches.unsqueeze(-1).type_as(mask_tokens)
            x = x * (1 - w) + mask_tokens * w
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.pos_embed[:, :x.size(1), :]
        for index, block in enumerate(self.blocks):
            x = block(x, register_blk == index)
        return self.norm(x)


def interpolate_pos_embed(pos_embed, vit):
    """Resizes a checkpoint's position embedding to `vit`'s patch grid, as
    ALBEF's interpolate_pos_embed does: the CLS row is kept and the square grid
    is resized with bicubic interpolation (align_corners=False). Returns the
    input itself when the grid sizes already agree."""
    num_patches = vit.patch_embed.num_patches
    extra = vit.pos_embed.shape[-2] - num_patches
    old = int((pos_embed.shape[-2] - extra) ** 0.5)
    new = int(num_patches ** 0.5)
    if old == new:
        return pos_embed
    width = pos_embed.shape[-1]
    grid = pos_embed[:, extra:].reshape(-1, old, old, width).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    return torch.cat((pos_embed[:, :extra], grid.permute(0, 2, 3, 1).flatten(1, 2)), dim=1)


# ----------------------------------------------------------------------------- BERT (models/xbert.py, HF 4.8)

class BertEmbeddings(nn.Module):
    """Word (+ token type) + position embeddings, LayerNorm, dropout. The
    single-stream BERT (SIMLA's med.py) has no token_type_embeddings and can
    start from `inputs_embeds` (any [B, L, hidden] sequence) instead of ids."""

    def __init__(self, c):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        if not getattr(c, "single_stream", False):
            self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = c.hidden_dropout_prob
        # A persistent buffer: the official checkpoints carry it.
        self.register_buffer("position_ids", torch.arange(c.max_position_embeddings).expand((1, -1)))

    def forward(self, input_ids=None, inputs_embeds=None):
        x = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        if hasattr(self, "token_type_embeddings"):
            # Token type 0 everywhere (ALBEF never passes token_type_ids); HF's order of the two sums.
            x = x + self.token_type_embeddings(torch.zeros_like(input_ids))
        # med.py adds in place (into the caller's tensor for inputs_embeds); the values are the same.
        x = x + self.position_embeddings(self.position_ids[:, :x.shape[1]])
        return F.dropout(self.LayerNorm(x), self.dropout, self.training)


class BertSelfAttention(nn.Module):
    """Scaled dot-product attention; cross-attention takes keys and values from
    the image tokens, whose width is `encoder_width`. xbert's Grad-CAM hook: a
    cross-attention with `save_attention` set keeps its attention
    probabilities (after the softmax, before dropout) in `attention_map` and
    their gradient, once a backward reaches them, in `attn_gradients`."""

    def __init__(self, c, cross):
        super().__init__()
        self.cross = cross
        self.save_attention = False
        self.record_probs = False  # keep the probabilities in `probs` (no hook): SIMLA's PSL reads a self-attention
        self.probs = None
        self.attention_map = None
        self.attn_gradients = None
        self.num_heads = c.num_attention_heads
        self.head_size = c.hidden_size // c.num_attention_heads
        source_width = c.encoder_width if cross else c.hidden_size
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(source_width, c.hidden_size)
        self.value = nn.Linear(source_width, c.hidden_size)
        self.dropout = c.attention_probs_dropout_prob

    def heads(self, x):
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_size).permute(0, 2, 1, 3)

    def save_attn_gradients(self, attn_gradients):
        self.attn_gradients = attn_gradients

    def forward(self, hidden, mask, source):
        q, k, v = self.heads(self.query(hidden)), self.heads(self.key(source)), self.heads(self.value(source))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_size)
        if mask is not None:
            scores = scores + mask
        probs = scores.softmax(dim=-1)
        if self.record_probs:
            self.probs = probs
        if self.save_attention and self.cross:
            self.attention_map = probs
            probs.register_hook(self.save_attn_gradients)
        probs = F.dropout(probs, self.dropout, self.training)
        context = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
        return context.view(context.shape[0], context.shape[1], -1)


class BertResidualOutput(nn.Module):
    """dense -> dropout -> LayerNorm(. + residual): HF's BertSelfOutput and BertOutput."""

    def __init__(self, c, in_features):
        super().__init__()
        self.dense = nn.Linear(in_features, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = c.hidden_dropout_prob

    def forward(self, x, residual):
        return self.LayerNorm(F.dropout(self.dense(x), self.dropout, self.training) + residual)


class BertAttention(nn.Module):
    def __init__(self, c, cross=False):
        super().__init__()
        self.self = BertSelfAttention(c, cross)
        self.output = BertResidualOutput(c, c.hidden_size)

    def forward(self, hidden, mask, source):
        return self.output(self.self(hidden, mask, source), hidden)


class BertIntermediate(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)

    def forward(self, x):
        return F.gelu(self.dense(x))  # HF ACT2FN['gelu'] is the exact erf GELU


class BertLayer(nn.Module):
    """Self-attention, then (from `fusion_layer` on) cross-attention to the
    image (or, in the VQA decoder, the question states), then the feed-forward
    block. Without `image_embeds` the cross-attention is skipped (the single-stream
    BERT's text mode: med.py runs it only in mode 'multimodal')."""

    def __init__(self, c, index):
        super().__init__()
        self.attention = BertAttention(c)
        self.crossattention = BertAttention(c, cross=True) if index >= c.fusion_layer else None
        self.intermediate = BertIntermediate(c)
        self.output = BertResidualOutput(c, c.intermediate_size)

    def forward(self, hidden, mask, image_embeds, image_mask=None):
        x = self.attention(hidden, mask, hidden)
        if self.crossattention is not None and image_embeds is not None:
            # ALBEF's image mask is all ones, so the official additive mask is 0 and is left
            # out; the VQA decoder passes the question's padding mask.
            x = self.crossattention(x, image_mask, image_embeds)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(c, i) for i in range(c.num_hidden_layers)])


class BertModel(nn.Module):
    """ALBEF's split BERT, without pooler. `mode` picks the layers: 'text' =
    [0, fusion_layer) on token ids, 'fusion' = [fusion_layer, N) on text
    embeddings with the image, 'multi_modal' = all layers on token ids with the image.
    The single-stream BERT (SIMLA, `config.single_stream`) runs all layers in
    both of its modes: 'text' without the cross-attentions, 'multimodal' (or
    'multi_modal') with them; `inputs_embeds` replaces the word embeddings
    (SIMLA's MIM feeds the ViT output through the text encoder that way)."""

    def __init__(self, c):
        super().__init__()
        self.config = c
        self.embeddings = BertEmbeddings(c)
        self.encoder = BertEncoder(c)

    def forward(self, attention_mask, input_ids=None, text_embeds=None, image_embeds=None, mode="multi_modal",
                image_mask=None, causal=False, inputs_embeds=None):
        fusion, total = self.config.fusion_layer, self.config.num_hidden_layers
        mode = "multi_modal" if mode == "multimodal" else mode
        if getattr(self.config, "single_stream", False):
            if mode not in ("text", "multi_modal"):
                raise ValueError(f"the single-stream BERT has modes text and multimodal, not '{mode}'")
            start, end = 0, total
        else:
            start, end = {"text": (0, fusion), "fusion": (fusion, total), "multi_modal": (0, total)}[mode]
        if mode == "text":
            image_embeds = None
        if text_embeds is not None:
            hidden = text_embeds
        else:
            hidden = self.embeddings(input_ids, inputs_embeds)
        # Extended masks in the parameters' dtype, as HF 4.8's get_extended_attention_mask (-10000;
        # a decoder's is causal too) and invert_attention_mask (-1e9 in fp32) build them.
        dtype = self.embeddings.word_embeddings.weight.dtype
        mask = attention_mask[:, None, None, :].to(dtype)
        if causal:
            positions = torch.arange(hidden.shape[1], device=hidden.device)
            mask = mask * (positions[None, :] <= positions[:, None]).to(dtype)[None, None]
        mask = (1.0 - mask) * -10000.0
        if image_mask is not None:
            image_mask = (1.0 - image_mask[:, None, None, :].to(dtype)) * -1e9
        for index in range(start, end):
            # NLVR2 passes a list of two images: fusion layer i reads image (i - fusion_layer) % 2.
            source = (image_embeds[(index - fusion) % len(image_embeds)] if isinstance(image_embeds, (list, tuple))
                      else image_embeds)
            hidden = self.encoder.layer[index](hidden, mask, source, image_mask)
        return hidden


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x):
        # CPU autocast (torch 1.13) does not cast layer_norm inputs; elsewhere the fp32
        # residual stream does it, here there is no residual, so cast to the weights' dtype.
        return self.LayerNorm(F.gelu(self.dense(x)).to(self.LayerNorm.weight.dtype))


class BertLMPredictionHead(nn.Module):
    def __init__(self, c, word_embeddings):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(c.vocab_size))
        self.transform = BertPredictionHeadTransform(c)
        # Tied as in HF: the decoder weight is the word embedding matrix and its
        # bias is `bias`, so the state_dict has both names for each tensor.
        self.decoder = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight
        self.decoder.bias = self.bias

    def forward(self, x):
        return self.decoder(self.transform(x))


class BertOnlyMLMHead(nn.Module):
    def __init__(self, c, word_embeddings):
        super().__init__()
        self.predictions = BertLMPredictionHead(c, word_embeddings)


class BertForMaskedLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.bert = BertModel(c)
        self.cls = BertOnlyMLMHead(c, self.bert.embeddings.word_embeddings)


class BertLMHeadModel(nn.Module):
    """xbert's BertLMHeadModel as models/model_vqa.py uses it: causal
    self-attention, every layer (fusion_layer 0) cross-attending to the
    question states, the LM head tied to its own word embeddings."""

    def __init__(self, c):
        super().__init__()
        self.config = c
        self.bert = BertModel(c)
        self.cls = BertOnlyMLMHead(c, self.bert.embeddings.word_embeddings)

    def forward(self, input_ids, attention_mask, encoder_states, encoder_mask, labels=None):
        """Logits [B, L, vocab]; with `labels` (-100 ignored) the summed token
        cross-entropy per row of the shifted prediction (reduction='none')."""
        hidden = self.bert(attention_mask, input_ids=input_ids, image_embeds=encoder_states, image_mask=encoder_mask,
                           causal=True)
        logits = self.cls.predictions(hidden)
        if labels is None:
            return logits
        shifted = logits[:, :-1, :].contiguous()
        loss = F.cross_entropy(shifted.view(-1, self.config.vocab_size), labels[:, 1:].contiguous().view(-1),
                               reduction="none")
        return loss.view(logits.size(0), -1).sum(1)


# ----------------------------------------------------------------------------- ALBEF

class _Albef(nn.Module):
    """What the pretraining and retrieval models share: encoders, projections,
    ITM head, temperature and (if `momentum`) the momentum copies and queues.
    Registration order follows the official constructors, so state_dict()
    lists the keys in the official order."""

    def __init__(self, config, text_encoder_class, momentum, idx_queue):
        super().__init__()
        vision, bert = config["vision"], config["bert"]
        embed_dim, vision_width = config["embed_dim"], config["vision_width"]
        self.visual_encoder = VisionTransformer(config["image_res"], **vision)
        self.text_encoder = text_encoder_class(bert)
        self.vision_proj = nn.Linear(vision_width, embed_dim)
        self.text_proj = nn.Linear(bert.hidden_size, embed_dim)
        self.temp = nn.Parameter(torch.tensor(float(config.get("temp", 0.07))))
        self.itm_head = nn.Linear(bert.hidden_size, 2)
        if momentum:
            self.visual_encoder_m = VisionTransformer(config["image_res"], **vision)
            self.vision_proj_m = nn.Linear(vision_width, embed_dim)
            self.text_encoder_m = text_encoder_class(bert)
            self.text_proj_m = nn.Linear(bert.hidden_size, embed_dim)
            self._add_queues(config, idx_queue)
            self.copy_params()

    def _add_queues(self, config, idx_queue=False):
        """The ITC feature queues (random unit columns), their pointer and the momentum coefficient."""
        embed_dim, queue_size = config["embed_dim"], config["queue_size"]
        self.register_buffer("image_queue", F.normalize(torch.randn(embed_dim, queue_size), dim=0))
        self.register_buffer("text_queue", F.normalize(torch.randn(embed_dim, queue_size), dim=0))
        if idx_queue:
            self.register_buffer("idx_queue", torch.full((1, queue_size), -100))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        self.queue_size = queue_size
        self.momentum = config.get("momentum", 0.995)

    @property
    def bert(self):
        return self.text_encoder

    def model_pairs(self):
        """(online, momentum) module pairs, in the official `model_pairs` order."""
        return [(self.visual_encoder, self.visual_encoder_m), (self.vision_proj, self.vision_proj_m),
                (self.text_encoder, self.text_encoder_m), (self.text_proj, self.text_proj_m)]

    @torch.no_grad()
    def copy_params(self):
        """As the official constructors: momentum weights start as copies and
        get no gradient (so an optimizer over requires_grad params skips them)."""
        for online, momentum in self.model_pairs():
            for param, param_m in zip(online.parameters(), momentum.parameters()):
                param_m.data.copy_(param.data)
                param_m.requires_grad = False

    @torch.no_grad()
    def _momentum_update(self):
        """EMA m <- m * momentum + p * (1 - momentum). Like the official code it
        rebinds `.data` to a new tensor (an allocation per parameter), which is
        part of what a training step costs there."""
        for online, momentum in self.model_pairs():
            for param, param_m in zip(online.parameters(), momentum.parameters()):
                param_m.data = param_m.data * self.momentum + param.data * (1.0 - self.momentum)

    @torch.no_grad()
    def _dequeue_and_enqueue(self, image_feat, text_feat):
        """Writes the batch's momentum features over the oldest queue columns.
        Single process: the official concat_all_gather is the identity."""
        batch_size = image_feat.shape[0]
        ptr = int(self.queue_ptr)
        assert self.queue_size % batch_size == 0  # as in the official code
        self.image_queue[:, ptr:ptr + batch_size] = image_feat.T
        self.text_queue[:, ptr:ptr + batch_size] = text_feat.T
        self.queue_ptr[0] = (ptr + batch_size) % self.queue_size

    def image_embeds(self, images):
        """ViT output [B, 1 + patches, vision_width]."""
        return self.visual_encoder(images)

    def image_feat(self, image_embeds):
        """L2-normalised projection of the image CLS token (the ITC feature)."""
        return F.normalize(self.vision_proj(image_embeds[:, 0, :]), dim=-1)

    def text_embeds(self, input_ids, attention_mask):
        """Text-only layers [0, fusion_layer) -> [B, L, hidden]."""
        return self.bert(attention_mask, input_ids=input_ids, mode="text")

    def text_feat(self, text_embeds):
        return F.normalize(self.text_proj(text_embeds[:, 0, :]), dim=-1)

    def fusion(self, text_embeds, attention_mask, image_embeds):
        """Fusion layers [fusion_layer, N) over text embeddings and the image -> last hidden state."""
        return self.bert(attention_mask, text_embeds=text_embeds, image_embeds=image_embeds, mode="fusion")

    def itm_logits(self, text_embeds, attention_mask, image_embeds):
        """[B, 2] image-text matching logits from the fused CLS token (column 1 = match)."""
        return self.itm_head(self.fusion(text_embeds, attention_mask, image_embeds)[:, 0, :])


class AlbefPretrain(_Albef):
    """models/model_pretrain.py: the text encoder is a BertForMaskedLM."""

    def __init__(self, config, momentum=False):
        super().__init__(config, BertForMaskedLM, momentum, idx_queue=False)
        self.mlm_probability = config.get("mlm_probability", 0.15)

    @property
    def bert(self):
        return self.text_encoder.bert

    def mlm_logits(self, input_ids, attention_mask, image_embeds, momentum=False):
        """All layers on the token ids with the image, then the MLM head -> [B, L, vocab]
        (of the momentum text encoder if `momentum`)."""
        encoder = self.text_encoder_m if momentum else self.text_encoder
        hidden = encoder.bert(attention_mask, input_ids=input_ids, image_embeds=image_embeds, mode="multi_modal")
        return encoder.cls.predictions(hidden)

    def mask(self, input_ids, vocab_size, targets=None, masked_indices=None, probability_matrix=None):
        """The official BERT masking, in place on `input_ids` (and `targets`):
        positions drawn with `probability_matrix` (never [PAD] or [CLS]) are the
        MLM targets (-100 elsewhere); of those, 80% become [MASK], half of the
        rest a random id, the others stay. Same random draws in the same order
        as the official mask(), so a seed reproduces its choices."""
        if masked_indices is None:
            masked_indices = torch.bernoulli(probability_matrix).bool()
        masked_indices[input_ids == PAD_ID] = False
        masked_indices[input_ids == CLS_ID] = False
        if targets is not None:
            targets[~masked_indices] = -100
        to_mask_token = torch.bernoulli(torch.full(input_ids.shape, 0.8)).bool() & masked_indices
        input_ids[to_mask_token] = MASK_ID
        to_random = torch.bernoulli(torch.full(input_ids.shape, 0.5)).bool() & masked_indices & ~to_mask_token
        random_ids = torch.randint(vocab_size, input_ids.shape, dtype=torch.long, device=input_ids.device)
        input_ids[to_random] = random_ids[to_random]
        return (input_ids, targets) if targets is not None else input_ids

    def contrastive(self, image, input_ids, attention_mask, alpha):
        """The ITC part of the official pretraining forward (ALBEF's, which SIMLA
        keeps): clamps temp; online image and text features (the text encoder in
        mode 'text'); the momentum update, then momentum features against
        [batch | queue as it was before this step] as soft targets; then
        dequeue/enqueue. Returns a namespace with loss_ita and what the later
        passes read (image_embeds, image_feat, text_embeds, image_embeds_m,
        image_feat_m, sim_i2t, sim_t2i)."""
        with torch.no_grad():
            self.temp.clamp_(0.001, 0.5)

        image_embeds = self.visual_encoder(image)
        image_feat = self.image_feat(image_embeds)
        text_embeds = self.text_embeds(input_ids, attention_mask)
        text_feat = self.text_feat(text_embeds)

        # ITC targets from the momentum encoders (updated first, as officially),
        # against [this batch | queue as it was before this step].
        with torch.no_grad():
            self._momentum_update()
            image_embeds_m = self.visual_encoder_m(image)
            image_feat_m = F.normalize(self.vision_proj_m(image_embeds_m[:, 0, :]), dim=-1)
            image_feat_all = torch.cat([image_feat_m.t(), self.image_queue.clone().detach()], dim=1)
            text_embeds_m = self.text_encoder_m.bert(attention_mask, input_ids=input_ids, mode="text")
            text_feat_m = F.normalize(self.text_proj_m(text_embeds_m[:, 0, :]), dim=-1)
            text_feat_all = torch.cat([text_feat_m.t(), self.text_queue.clone().detach()], dim=1)

            sim_i2t_m = image_feat_m @ text_feat_all / self.temp
            sim_t2i_m = text_feat_m @ image_feat_all / self.temp
            identity = torch.zeros(sim_i2t_m.size(), device=image.device)
            identity.fill_diagonal_(1)
            sim_i2t_targets = alpha * F.softmax(sim_i2t_m, dim=1) + (1 - alpha) * identity
            sim_t2i_targets = alpha * F.softmax(sim_t2i_m, dim=1) + (1 - alpha) * identity

        sim_i2t = image_feat @ text_feat_all / self.temp
        sim_t2i = text_feat @ image_feat_all / self.temp
        loss_i2t = -torch.sum(F.log_softmax(sim_i2t, dim=1) * sim_i2t_targets, dim=1).mean()
        loss_t2i = -torch.sum(F.log_softmax(sim_t2i, dim=1) * sim_t2i_targets, dim=1).mean()
        loss_ita = (loss_i2t + loss_t2i) / 2

        self._dequeue_and_enqueue(image_feat_m, text_feat_m)
        return types.SimpleNamespace(loss_ita=loss_ita, image_embeds=image_embeds, image_feat=image_feat,
                                     text_embeds=text_embeds, image_embeds_m=image_embeds_m,
                                     image_feat_m=image_feat_m, sim_i2t=sim_i2t, sim_t2i=sim_t2i)

    @staticmethod
    def hard_negatives(sim_i2t, sim_t2i, negatives=None):
        """ITM's hard negatives: one image per text, then one text per image, each
        drawn (torch.multinomial, in that order) in proportion to the in-batch
        softmax similarity with the pair itself excluded; `negatives` = (image
        index per text, text index per image) injects them instead. Returns two
        lists of ints."""
        bs = sim_i2t.size(0)
        with torch.no_grad():
            weights_i2t = F.softmax(sim_i2t[:, :bs], dim=1)
            weights_t2i = F.softmax(sim_t2i[:, :bs], dim=1)
            weights_i2t.fill_diagonal_(0)
            weights_t2i.fill_diagonal_(0)
        if negatives is not None:
            return [[int(i) for i in idx] for idx in negatives]
        neg_images = [torch.multinomial(weights_t2i[b], 1).item() for b in range(bs)]
        neg_texts = [torch.multinomial(weights_i2t[b], 1).item() for b in range(bs)]
        return neg_images, neg_texts

    def mlm_inputs(self, input_ids, masked=None):
        """(masked ids, labels): `masked` if given, else drawn by mask() at mlm_probability."""
        if masked is not None:
            return masked
        mlm_ids = input_ids.clone()
        labels = mlm_ids.clone()
        probability_matrix = torch.full(labels.shape, self.mlm_probability)
        return self.mask(mlm_ids, self.bert.config.vocab_size, targets=labels, probability_matrix=probability_matrix)

    def mlm_loss(self, mlm_ids, labels, attention_mask, image_embeds, image_embeds_m, alpha, distill_dim=-1):
        """MLM with distillation from the momentum model's predictions:
        (1 - alpha) CE + alpha * mean over the masked positions of
        -sum(log_softmax(logits, distill_dim) * softmax(logits_m, -1), -1).
        ALBEF's xbert normalises over the vocabulary (-1); SIMLA's med.py over
        dim 1, the sequence axis."""
        with torch.no_grad():
            logits_m = self.mlm_logits(mlm_ids, attention_mask, image_embeds_m, momentum=True)
        logits = self.mlm_logits(mlm_ids, attention_mask, image_embeds)
        soft_labels = F.softmax(logits_m, dim=-1)
        loss_ce = F.cross_entropy(logits.view(-1, self.bert.config.vocab_size), labels.view(-1))
        loss_distill = -torch.sum(F.log_softmax(logits, dim=distill_dim) * soft_labels, dim=-1)
        loss_distill = loss_distill[labels != -100].mean()
        return (1 - alpha) * loss_ce + alpha * loss_distill

    def forward(self, image, input_ids, attention_mask, alpha=0.0, negatives=None, masked=None):
        """The official pretraining forward (models/model_pretrain.py ALBEF.forward)
        -> (loss_mlm, loss_ita, loss_itm). Needs momentum=True. `text` is passed
        as its two tensors. The random choices can be injected for parity tests:
        `negatives` = (negative image index per text, negative text index per
        image), `masked` = (masked input ids, MLM labels); when None they are
        drawn as the official code draws them (multinomial, then mask())."""
        itc = self.contrastive(image, input_ids, attention_mask, alpha)
        image_embeds, text_embeds = itc.image_embeds, itc.text_embeds

        # ITM: positives, then one hard negative per text and per image.
        output_pos = self.fusion(text_embeds, attention_mask, image_embeds)
        bs = image.size(0)
        neg_images, neg_texts = self.hard_negatives(itc.sim_i2t, itc.sim_t2i, negatives)
        # Per-sample indexing + stack, as officially (not one index_select).
        image_embeds_neg = torch.stack([image_embeds[i] for i in neg_images], dim=0)
        text_embeds_neg = torch.stack([text_embeds[i] for i in neg_texts], dim=0)
        text_atts_neg = torch.stack([attention_mask[i] for i in neg_texts], dim=0)

        text_embeds_all = torch.cat([text_embeds, text_embeds_neg], dim=0)
        text_atts_all = torch.cat([attention_mask, text_atts_neg], dim=0)
        image_embeds_all = torch.cat([image_embeds_neg, image_embeds], dim=0)
        output_neg = self.fusion(text_embeds_all, text_atts_all, image_embeds_all)

        vl_output = self.itm_head(torch.cat([output_pos[:, 0, :], output_neg[:, 0, :]], dim=0))
        itm_labels = torch.cat([torch.ones(bs, dtype=torch.long), torch.zeros(2 * bs, dtype=torch.long)],
                               dim=0).to(image.device)
        loss_itm = F.cross_entropy(vl_output, itm_labels)

        mlm_ids, labels = self.mlm_inputs(input_ids, masked)
        loss_mlm = self.mlm_loss(mlm_ids, labels, attention_mask, image_embeds, itc.image_embeds_m, alpha)
        return loss_mlm, itc.loss_ita, loss_itm


def grit_forward(model, image, input_ids, attention_mask, masked=None):
    """GRIT-VLP's pretraining forward (jaeseokbyun/GRIT-VLP models/model_pretrain_GRIT_VLP.py)
    on an AlbefPretrain built with momentum=False -> (loss_mlm, loss_ita, loss_itm, image_feat,
    text_feat). ITC within the batch with the other side's features detached, plus the
    0.2-weighted consistency term; ITM with the argmax of the in-batch softmax as each
    negative; MLM without distillation. `masked` = (masked input ids, MLM labels) injects
    the masks; else they are drawn with model.mask at model.mlm_probability."""
    with torch.no_grad():
        model.temp.clamp_(0.001, 0.5)
    image_embeds = model.visual_encoder(image)
    image_feat = model.image_feat(image_embeds)
    text_embeds = model.text_embeds(input_ids, attention_mask)
    text_feat = model.text_feat(text_embeds)

    sim_i2t = image_feat @ text_feat.detach().t() / model.temp
    sim_t2i = text_feat @ image_feat.detach().t() / model.temp
    targets = torch.eye(image.size(0), device=image.device)
    log_i2t, log_t2i = F.log_softmax(sim_i2t, dim=1), F.log_softmax(sim_t2i, dim=1)
    loss_i2t = -torch.sum(log_i2t * targets, dim=1).mean()
    loss_t2i = -torch.sum(log_t2i * targets, dim=1).mean()
    loss_c_i2t = -torch.sum(log_i2t * F.softmax(sim_t2i.detach(), dim=1), dim=1).mean()
    loss_c_t2i = -torch.sum(log_t2i * F.softmax(sim_i2t.detach(), dim=1), dim=1).mean()
    loss_ita = (loss_i2t + loss_t2i) / 2 + 0.2 * (loss_c_i2t + loss_c_t2i) / 2

    output_pos = model.fusion(text_embeds, attention_mask, image_embeds)
    with torch.no_grad():
        weights_i2t = F.softmax(sim_i2t, dim=1)
        weights_t2i = F.softmax(sim_t2i, dim=1)
        weights_i2t.fill_diagonal_(0)
        weights_t2i.fill_diagonal_(0)
        neg_images = weights_t2i.argmax(dim=1)
        neg_texts = weights_i2t.argmax(dim=1)
    text_embeds_all = torch.cat([text_embeds, text_embeds[neg_texts]], dim=0)
    text_atts_all = torch.cat([attention_mask, attention_mask[neg_texts]], dim=0)
    image_embeds_all = torch.cat([image_embeds[neg_images], image_embeds], dim=0)
    output_neg = model.fusion(text_embeds_all, text_atts_all, image_embeds_all)
    vl_output = model.itm_head(torch.cat([output_pos[:, 0, :], output_neg[:, 0, :]], dim=0))
    bs = image.size(0)
    itm_labels = torch.cat([torch.ones(bs, dtype=torch.long), torch.zeros(2 * bs, dtype=torch.long)]).to(image.device)
    loss_itm = F.cross_entropy(vl_output, itm_labels)

    mlm_ids, labels = model.mlm_inputs(input_ids, masked)
    logits = model.mlm_logits(mlm_ids, attention_mask, image_embeds)
    loss_mlm = F.cross_entropy(logits.view(-1, model.bert.config.vocab_size), labels.view(-1))
    return loss_mlm, loss_ita, loss_itm, image_feat.detach(), text_feat.detach()


# ----------------------------------------------------------------------------- SIMLA (codezakh/SIMLA)

MIM_VOCAB = 8192  # DALL-E's dVAE codebook, hard-coded in models/simla/pretrain.py


class SimlaPretrain(AlbefPretrain):
    """models/simla/pretrain.py's SIMLA: ALBEF's pretraining model on the
    single-stream BERT (configs/shared_bert.json: every layer cross-attends,
    no token types; a config without it is refused), a ViT with `mask_token`,
    `mim_head` (Linear(vision width, 8192), over the dVAE's image tokens) and
    `concept_head` (Linear(embed_dim, vocabulary), pseudo-keywords), each with
    a momentum copy. Always built with the momentum model; registered in the
    official order, so the official checkpoints load with strict=True.
    `psl_layer` is the text layer whose self-attention picks the keywords:
    the last (the official code hard-codes 11, BERT-base's last). The
    training step is simla_forward()."""

    def __init__(self, config):
        if not getattr(config["bert"], "single_stream", False):
            raise ValueError("SIMLA needs the single-stream BERT (a bert_config with add_cross_attention and "
                             "no fusion_layer, as configs/shared_bert.json)")
        vision = {**config["vision"], "mask_token": True}
        config = {**config, "vision": vision}
        super().__init__(config, momentum=False)
        bert, embed_dim, vision_width = config["bert"], config["embed_dim"], config["vision_width"]
        self.mim_head = nn.Linear(vision["embed_dim"], MIM_VOCAB)
        self.mim_head_m = nn.Linear(vision["embed_dim"], MIM_VOCAB)
        self.visual_encoder_m = VisionTransformer(config["image_res"], **vision)
        self.vision_proj_m = nn.Linear(vision_width, embed_dim)
        self.text_encoder_m = BertForMaskedLM(bert)
        self.text_proj_m = nn.Linear(bert.hidden_size, embed_dim)
        self.concept_head = nn.Linear(embed_dim, bert.vocab_size)
        self.concept_head_m = nn.Linear(embed_dim, bert.vocab_size)
        self.psl_layer = bert.num_hidden_layers - 1
        self.copy_params()
        self._add_queues(config)

    def model_pairs(self):
        return super().model_pairs() + [(self.mim_head, self.mim_head_m), (self.concept_head, self.concept_head_m)]

    def mim_logits(self, image, masked_patches, input_ids, attention_mask, momentum=False):
        """MIM's pass: the masked image through the ViT, that sequence as the
        text encoder's `inputs_embeds` (BERT position embeddings, LayerNorm, all
        layers), cross-attending to the ONLINE text encoder's embeddings of the
        caption under its padding mask (for the momentum branch too, as
        officially), [CLS] dropped, the MIM head -> [B, patches, 8192]."""
        visual, text, head = ((self.visual_encoder_m, self.text_encoder_m, self.mim_head_m) if momentum
                              else (self.visual_encoder, self.text_encoder, self.mim_head))
        image_embeds = visual(image, masked_patches=masked_patches)
        text_states = self.bert.embeddings(input_ids)
        image_atts = torch.ones(image_embeds.shape[:2], dtype=torch.long, device=image.device)
        hidden = text.bert(image_atts, inputs_embeds=image_embeds, image_embeds=text_states,
                           image_mask=attention_mask, mode="multimodal")
        return head(hidden[:, 1:])

    @torch.no_grad()
    def keyword_positions(self, input_ids, attention_mask, image_embeds, per_head=4, keywords=5):
        """PSL's keyword choice: the momentum text encoder in mode multimodal
        (over the ONLINE image embeddings, as officially), the self-attention of
        layer `psl_layer`, its [CLS] row; the `per_head` most attended positions
        of every head, counted per position; the `keywords` most counted
        positions (torch.topk: ties broken as this CPU topk breaks them) -> [B, keywords]."""
        attention = self.text_encoder_m.bert.encoder.layer[self.psl_layer].attention.self
        attention.record_probs = True
        try:
            self.text_encoder_m.bert(attention_mask, input_ids=input_ids, image_embeds=image_embeds,
                                     mode="multimodal")
            probs = attention.probs
        finally:
            attention.record_probs, attention.probs = False, None
        batch, length = input_ids.shape
        top = probs[:, :, 0].reshape(-1, length).topk(per_head, dim=-1).indices.view(batch, -1)
        counts = torch.zeros(batch, length, dtype=top.dtype, device=top.device)
        counts.scatter_add_(1, top, torch.ones_like(top))
        return counts.topk(keywords, dim=-1).indices


def simla_forward(model, image, input_ids, attention_mask, masked_patches, visual_token_ids, alpha, masked=None,
                  negatives=None, keyword_positions=None):
    """SIMLA's pretraining forward (models/simla/pretrain.py SIMLA.forward) on a
    SimlaPretrain -> (loss_mlm, loss_ita, loss_itm, loss_mim, loss_pseudo).

    * ITC: ALBEF's (AlbefPretrain.contrastive; the text side = all layers
      without cross-attention), the momentum update covering the MIM and concept heads.
    * ITM: positives and negatives through all layers with cross-attention from
      the token ids (not from the ITC text states); negatives drawn as ALBEF's.
    * MLM: ALBEF's, but the distillation log_softmax runs over dim 1 (the
      sequence axis), as med.py's BertForMaskedLM does.
    * MIM: masked_patches [B, patches] (bool) marks the patches replaced by the
      mask token; visual_token_ids [B, patches] the dVAE tokens (the targets are
      the masked ones, row-major, as Pretrain.py takes them);
      (1 - alpha) CE + alpha * distillation from the momentum branch, both over
      the masked patches only.
    * PSL: multi-hot of the caption's tokens at the keyword positions ([CLS]
      zeroed) and sigmoid(concept_head_m(momentum image feature)) as targets of
      concept_head(image feature): (1 - alpha) BCE(hard) + alpha BCE(soft).

    Injected choices for parity tests: `masked` = (masked input ids, MLM
    labels), `negatives` = (negative image index per text, negative text index
    per image), `keyword_positions` [B, 5] (torch.topk's tie-breaking varies);
    when None they are drawn or computed as officially."""
    itc = model.contrastive(image, input_ids, attention_mask, alpha)
    image_embeds = itc.image_embeds
    bs = image.size(0)

    # ITM, from the token ids in multimodal mode.
    output_pos = model.bert(attention_mask, input_ids=input_ids, image_embeds=image_embeds, mode="multimodal")
    neg_images, neg_texts = model.hard_negatives(itc.sim_i2t, itc.sim_t2i, negatives)
    image_embeds_neg = torch.stack([image_embeds[i] for i in neg_images], dim=0)
    text_atts_neg = torch.stack([attention_mask[i] for i in neg_texts], dim=0)
    text_ids_neg = torch.stack([input_ids[i] for i in neg_texts], dim=0)
    text_atts_all = torch.cat([attention_mask, text_atts_neg], dim=0)
    text_ids_all = torch.cat([input_ids, text_ids_neg], dim=0)
    image_embeds_all = torch.cat([image_embeds_neg, image_embeds], dim=0)
    output_neg = model.bert(text_atts_all, input_ids=text_ids_all, image_embeds=image_embeds_all, mode="multimodal")
    vl_output = model.itm_head(torch.cat([output_pos[:, 0, :], output_neg[:, 0, :]], dim=0))
    itm_labels = torch.cat([torch.ones(bs, dtype=torch.long), torch.zeros(2 * bs, dtype=torch.long)],
                           dim=0).to(image.device)
    loss_itm = F.cross_entropy(vl_output, itm_labels)

    mlm_ids, labels = model.mlm_inputs(input_ids, masked)
    loss_mlm = model.mlm_loss(mlm_ids, labels, attention_mask, image_embeds, itc.image_embeds_m, alpha,
                              distill_dim=1)

    # MIM.
    masked_patches = masked_patches.bool()
    with torch.no_grad():
        logits_m = model.mim_logits(image, masked_patches, input_ids, attention_mask, momentum=True)
    soft_labels = F.softmax(logits_m, dim=-1)
    logits = model.mim_logits(image, masked_patches, input_ids, attention_mask)
    loss_ce = F.cross_entropy(logits[masked_patches], visual_token_ids[masked_patches])
    loss_distill = -torch.sum(F.log_softmax(logits, dim=-1) * soft_labels, dim=-1)
    loss_distill = loss_distill[masked_patches].mean()
    loss_mim = (1 - alpha) * loss_ce + alpha * loss_distill

    # Pseudo-keyword supervision.
    with torch.no_grad():
        if keyword_positions is None:
            keyword_positions = model.keyword_positions(input_ids, attention_mask, image_embeds)
        else:
            model.keyword_positions(input_ids, attention_mask, image_embeds)  # the official pass, result injected
        tokens = torch.gather(input_ids, 1, keyword_positions)
        hard_targets = torch.zeros(bs, model.concept_head.out_features, device=image.device)
        hard_targets.scatter_(1, tokens, 1)
        hard_targets[:, CLS_ID] = 0
        soft_targets = torch.sigmoid(model.concept_head_m(itc.image_feat_m))
    predictions = model.concept_head(itc.image_feat)
    loss_hard = F.binary_cross_entropy_with_logits(predictions, hard_targets)
    loss_soft = F.binary_cross_entropy_with_logits(predictions, soft_targets)
    loss_pseudo = (1 - alpha) * loss_hard + alpha * loss_soft
    return loss_mlm, itc.loss_ita, loss_itm, loss_mim, loss_pseudo


class AlbefRetrieval(_Albef):
    """models/model_retrieval.py: the text encoder is a plain BertModel."""

    def __init__(self, config, momentum=False):
        super().__init__(config, BertModel, momentum, idx_queue=True)


class AlbefVQA(nn.Module):
    """models/model_vqa.py: a plain BertModel encoder and the answer decoder
    `text_decoder` with `decoder_layers` layers (the official code hard-codes
    6; a config key overrides it for tiny models), with momentum copies if
    `momentum` (registered in the official order)."""

    def __init__(self, config, momentum=False):
        super().__init__()
        vision, bert = config["vision"], config["bert"]
        decoder = types.SimpleNamespace(**vars(bert))
        decoder.fusion_layer, decoder.num_hidden_layers = 0, int(config.get("decoder_layers", 6))
        self.visual_encoder = VisionTransformer(config["image_res"], **vision)
        self.text_encoder = BertModel(bert)
        self.text_decoder = BertLMHeadModel(decoder)
        if momentum:
            self.visual_encoder_m = VisionTransformer(config["image_res"], **vision)
            self.text_encoder_m = BertModel(bert)
            self.text_decoder_m = BertLMHeadModel(decoder)

    def question_states(self, images, question_ids, question_mask):
        """The encoder on the question over the image: last hidden state [B, Lq, hidden]."""
        image_embeds = self.visual_encoder(images)
        return self.text_encoder(question_mask, input_ids=question_ids, image_embeds=image_embeds)

    def rank_answer(self, question_states, question_atts, answer_ids, answer_atts, k):
        """model_vqa.py rank_answer, step by step: p(first token | [CLS]) for
        every answer, the k best of each question decoded in full with the
        question's states repeated k times (tile), log p(first) - summed CE
        (the first token counted twice, as officially), softmax, re-sorted.
        Returns (topk_ids, topk_probs, stages) with the intermediate values."""
        num_ques = question_states.size(0)
        start_ids = answer_ids[0, 0].repeat(num_ques, 1)
        logits = self.text_decoder(start_ids, torch.ones_like(start_ids), question_states, question_atts)[:, 0, :]
        prob_first_token = F.softmax(logits, dim=1).index_select(dim=1, index=answer_ids[:, 1])
        first_probs, first_ids = prob_first_token.topk(k, dim=1)
        input_ids = torch.cat([answer_ids.index_select(0, ids) for ids in first_ids], dim=0)
        input_atts = torch.cat([answer_atts.index_select(0, ids) for ids in first_ids], dim=0)
        targets = input_ids.masked_fill(input_ids == PAD_ID, -100)
        states = question_states.repeat_interleave(k, dim=0)  # tile(): question-major
        atts = question_atts.repeat_interleave(k, dim=0)
        answer_loss = self.text_decoder(input_ids, input_atts, states, atts, labels=targets).view(input_ids.size(0), -1)
        log_probs = torch.cat([first_probs.view(-1, 1).log(), -answer_loss], dim=1)
        log_probs_sum = log_probs.sum(1).view(num_ques, k)
        topk_probs, rerank = F.softmax(log_probs_sum, dim=-1).topk(k, dim=1)
        topk_ids = torch.gather(first_ids, 1, rerank)
        stages = {"prob_first_token": prob_first_token, "first_stage_ids": first_ids, "first_stage_probs": first_probs,
                  "answer_loss": answer_loss.view(-1), "log_probs_sum": log_probs_sum}
        return topk_ids, topk_probs, stages


def classifier_head(width, classes):
    """model_nlvr.py / model_ve.py's cls_head: Linear, ReLU, Linear."""
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, classes))


def share_cross_attention(bert, shared_from=None):
    """model_nlvr.py's share_cross_attention: in each pair of fusion layers
    (fusion_layer + 2i, + 2i + 1) the cross-attention key and value are the
    second layer's parameters. SIMLA's pairs start at its literal 6
    (`shared_from`), though every layer cross-attends."""
    c = bert.config
    for first in range(c.fusion_layer if shared_from is None else shared_from, c.num_hidden_layers, 2):
        a = bert.encoder.layer[first].crossattention.self
        b = bert.encoder.layer[first + 1].crossattention.self
        for name in ("key", "value"):
            getattr(a, name).weight = getattr(b, name).weight
            getattr(a, name).bias = getattr(b, name).bias


class AlbefNLVR(nn.Module):
    """models/model_nlvr.py: a BertModel with every fusion layer doubled (18
    layers for BERT-base), the pairs sharing cross-attention keys and values,
    over two images per text, and cls_head (2 classes). No momentum model
    (it takes no part in evaluation)."""

    def __init__(self, config):
        super().__init__()
        bert = types.SimpleNamespace(**vars(config["bert"]))
        bert.num_hidden_layers = bert.fusion_layer + 2 * (bert.num_hidden_layers - bert.fusion_layer)
        self.visual_encoder = VisionTransformer(config["image_res"], **config["vision"])
        self.text_encoder = BertModel(bert)
        self.cls_head = classifier_head(bert.hidden_size, 2)
        share_cross_attention(self.text_encoder)

    def forward(self, images, input_ids, attention_mask):
        """model_nlvr.py's forward(train=False): images [2B] = all first images, then all second ones."""
        image_embeds = self.visual_encoder(images)
        image0, image1 = torch.split(image_embeds, input_ids.size(0))
        hidden = self.text_encoder(attention_mask, input_ids=input_ids, image_embeds=[image0, image1])
        return self.cls_head(hidden[:, 0, :])


class SimlaNLVR(nn.Module):
    """SIMLA's models/simla/nlvr.py: models/xbert.py's BertModel (with
    token-type embeddings) with fusion_layer 0, so every layer cross-attends,
    layer i to image i % 2, and the layers from the 6th on doubled as in
    model_nlvr.py (18 for BERT-base); only the doubled pairs share keys and
    values. The doubling starts at config_bert.json's fusion_layer, or half
    the depth of a single-stream BERT json. `cls_head` (2 classes); no
    momentum model. `doubled_from` is where Pretrain_NLVR.py's conversion
    (ta_state_from_pretrain) starts too."""

    def __init__(self, config):
        super().__init__()
        bert = types.SimpleNamespace(**vars(config["bert"]))
        self.doubled_from = bert.num_hidden_layers // 2 if bert.single_stream else bert.fusion_layer
        bert.num_hidden_layers = self.doubled_from + 2 * (bert.num_hidden_layers - self.doubled_from)
        bert.fusion_layer, bert.single_stream = 0, False
        self.visual_encoder = VisionTransformer(config["image_res"], **config["vision"])
        self.text_encoder = BertModel(bert)
        self.cls_head = classifier_head(bert.hidden_size, 2)
        share_cross_attention(self.text_encoder, self.doubled_from)

    forward = AlbefNLVR.forward


class AlbefVE(nn.Module):
    """models/model_ve.py: the encoders and cls_head (3 classes), no momentum model."""

    def __init__(self, config):
        super().__init__()
        self.visual_encoder = VisionTransformer(config["image_res"], **config["vision"])
        self.text_encoder = BertModel(config["bert"])
        self.cls_head = classifier_head(config["bert"].hidden_size, 3)

    def forward(self, images, input_ids, attention_mask):
        """model_ve.py's forward(train=False)."""
        hidden = self.text_encoder(attention_mask, input_ids=input_ids, image_embeds=self.visual_encoder(images))
        return self.cls_head(hidden[:, 0, :])


def ta_state_from_pretrain(state, fusion_layer=6):
    """Pretrain_nlvr.py's conversion: 'bert.' dropped, text-encoder layer N >=
    fusion_layer (6 officially) copied to 2 (N - fusion_layer) + fusion_layer
    and the layer after it."""
    out = {}
    for key, value in state.items():
        if "bert" not in key:
            out[key] = value
            continue
        new_key = key.replace("bert.", "")
        if "layer" in new_key:
            parts = new_key.split(".")
            layer = int(parts[3])
            if layer >= fusion_layer:
                for copy in range(2):
                    parts[3] = str(2 * (layer - fusion_layer) + fusion_layer + copy)
                    out[".".join(parts)] = value
                continue
        out[new_key] = value
    return out


def vqa_state_from_pretrain(state, first_decoder_layer=6):
    """VQA.py's renaming of a pretraining checkpoint: every key with 'bert'
    also loads without 'bert.' (the encoder); text-encoder layers N >=
    `first_decoder_layer` (6 officially) become decoder layers N - 6, the
    embeddings and MLM head the decoder's (`text_encoder` -> `text_decoder`);
    the same for `_m`."""
    out = {}
    for key, value in state.items():
        if "bert" in key:
            out[key.replace("bert.", "")] = value
        if "text_encoder" in key:
            if "layer" in key:
                parts = key.split(".")
                layer = int(parts[4])
                if layer < first_decoder_layer:
                    continue
                parts[4] = str(layer - first_decoder_layer)
                key = ".".join(parts)
            out[key.replace("text_encoder", "text_decoder")] = value
        elif "bert" not in key:
            out[key] = value
    return out


def load_checkpoint(model, path):
    """Loads an official checkpoint as Retrieval.py does: takes ['model'] if
    present, resizes both ViT position embeddings to the model's grid, drops
    'bert.' from every key that contains 'bert' when the model is a retrieval
    model (pretrain checkpoint -> BertModel), then load_state_dict(strict=False).
    `path` may also be an already loaded checkpoint (saves loading it twice).
    Returns its message (missing and unexpected keys)."""
    checkpoint = torch.load(path, map_location="cpu") if isinstance(path, (str, os.PathLike)) else path
    state = dict(checkpoint["model"] if "model" in checkpoint else checkpoint)
    for name in ("visual_encoder", "visual_encoder_m"):
        key = name + ".pos_embed"
        if key in state and hasattr(model, name):
            state[key] = interpolate_pos_embed(state[key], getattr(model, name))
    if isinstance(model, AlbefRetrieval):
        state = {key.replace("bert.", "") if "bert" in key else key: value for key, value in state.items()}
    return model.load_state_dict(state, strict=False)


# ----------------------------------------------------------------------------- retrieval evaluation (Retrieval.py)

@torch.no_grad()
def evaluation(model, images, text_ids, text_mask, k_test, text_batch=256, image_batch=64):
    """Retrieval.py evaluation(): ITC similarities pick the k_test best
    candidates of every image (and of every text); only those are re-scored by
    the fusion encoder, with the raw ITM 'match' logit itm_head(...)[:, 1]
    (no softmax, the similarity is not added). Every other entry stays -100.
    Texts are encoded in chunks of `text_batch` and images in chunks of
    `image_batch` (the test loader's batch size); each image's (text's) k
    candidates form one fusion batch. Returns (score_i2t [N_img, N_txt],
    score_t2i [N_txt, N_img]) as float32 numpy arrays."""
    model.eval()
    text_embeds, text_feats = [], []
    for start in range(0, len(text_ids), text_batch):
        embeds = model.text_embeds(text_ids[start:start + text_batch], text_mask[start:start + text_batch])
        text_embeds.append(embeds)
        text_feats.append(model.text_feat(embeds))
    text_embeds, text_feats = torch.cat(text_embeds), torch.cat(text_feats)

    image_embeds, image_feats = [], []
    for start in range(0, len(images), image_batch):
        embeds = model.image_embeds(images[start:start + image_batch])
        image_embeds.append(embeds)
        image_feats.append(model.image_feat(embeds))
    image_embeds, image_feats = torch.cat(image_embeds), torch.cat(image_feats)

    # The ITC similarities in float32 even under bf16 autocast, as albef computes them (the official
    # evaluation runs in float32; rounded to bf16, near-tied candidates swap).
    with torch.autocast("cpu", enabled=False):
        sims = image_feats.float() @ text_feats.float().t()
    score_i2t = torch.full((len(images), len(text_ids)), -100.0)
    for i in range(len(images)):
        top = sims[i].topk(k=k_test, dim=0).indices
        score = model.itm_logits(text_embeds[top], text_mask[top], image_embeds[i].repeat(k_test, 1, 1))[:, 1]
        score_i2t[i, top] = score.to(score_i2t.dtype)

    sims = sims.t()
    score_t2i = torch.full((len(text_ids), len(images)), -100.0)
    for t in range(len(text_ids)):
        top = sims[t].topk(k=k_test, dim=0).indices
        score = model.itm_logits(text_embeds[t].repeat(k_test, 1, 1), text_mask[t].repeat(k_test, 1),
                                 image_embeds[top])[:, 1]
        score_t2i[t, top] = score.to(score_t2i.dtype)
    return score_i2t.numpy(), score_t2i.numpy()


def itm_eval(scores_i2t, scores_t2i, txt2img, img2txt):
    """Retrieval.py itm_eval(): recall@{1,5,10} in percent. The rank of a query
    is the position of its best ground truth in np.argsort(scores)[::-1]
    (numpy's default sort, reversed), so ties (e.g. the -100 entries) are
    ordered the way numpy orders them."""
    def recalls(ranks):
        ranks = np.asarray(ranks)
        return [100.0 * np.count_nonzero(ranks < n) / len(ranks) for n in (1, 5, 10)]

    def rank(scores, positives):
        order = np.argsort(scores)[::-1]
        return min((np.where(order == p)[0][0] for p in positives), default=1e20)

    tr1, tr5, tr10 = recalls([rank(s, img2txt[i]) for i, s in enumerate(scores_i2t)])
    ir1, ir5, ir10 = recalls([rank(s, [txt2img[t]]) for t, s in enumerate(scores_t2i)])
    tr_mean, ir_mean = (tr1 + tr5 + tr10) / 3, (ir1 + ir5 + ir10) / 3
    return {"txt_r1": tr1, "txt_r5": tr5, "txt_r10": tr10, "txt_r_mean": tr_mean,
            "img_r1": ir1, "img_r5": ir5, "img_r10": ir10, "img_r_mean": ir_mean,
            "r_mean": (tr_mean + ir_mean) / 2}


# ----------------------------------------------------------------------------- Grad-CAM (Grounding.py val())

def gradcam(model, image, text_ids, text_mask, mode, block_num):
    """Grounding.py val()'s Grad-CAM of one batch on a retrieval model (eval
    mode is the caller's, as val() sets it). Grad is enabled inside, so it may
    be called under no_grad; the backward runs outside any CPU autocast region
    (as the autocast docs prescribe; the forward stays under the caller's).

    'itm': the cross-attention of text layer `block_num` keeps its attention;
    ViT, then the text encoder over all layers with the image, loss = sum of
    the ITM 'match' logits itm_head(cls)[:, 1]; model.zero_grad(); backward.
    The maps [B, heads, L, 1 + g*g] lose the image [CLS] column and become
    [B, heads, L, g, g] (g = sqrt(patches), heads from the config where the
    official code hard-codes 12 and 24), gradients clamp(min=0), both times
    the text mask, gradcam = (cams * grads).mean(heads).mean(tokens) (the token
    mean divides by the padded length L and includes [CLS]).
    'itc': ViT block `block_num` keeps its attention; loss = sum of the
    diagonal of image_feat @ text_feat.T / temp; model.zero_grad(); backward;
    the [CLS] query's row without the [CLS] key, gradient clamp(0),
    gradcam = (cam * grad).mean(heads).

    Returns (gradcam [B, g, g], attention_map, attn_gradients), the last two
    as recorded (itm [B, heads, L, 1 + g*g], itc [B, heads, N, N]), detached."""
    batch = image.size(0)
    grid = int(round(math.sqrt(model.visual_encoder.patch_embed.num_patches)))
    with torch.enable_grad():
        if mode == "itm":
            attention = model.bert.encoder.layer[block_num].crossattention.self
            attention.save_attention = True
            try:
                image_embeds = model.visual_encoder(image)
                hidden = model.bert(text_mask, input_ids=text_ids, image_embeds=image_embeds, mode="multi_modal")
                loss = model.itm_head(hidden[:, 0, :])[:, 1].sum()
            finally:
                attention.save_attention = False
        elif mode == "itc":
            attention = model.visual_encoder.blocks[block_num].attn
            image_embeds = model.visual_encoder(image, register_blk=block_num)
            image_feat = model.image_feat(image_embeds)
            text_feat = model.text_feat(model.text_embeds(text_ids, text_mask))
            sim = image_feat @ text_feat.t() / model.temp
            loss = sim.diag().sum()
        else:
            raise ValueError(f"gradcam mode '{mode}': itm or itc")
        model.zero_grad()
        with torch.autocast("cpu", enabled=False):
            loss.backward()
    with torch.no_grad():
        grads = attention.attn_gradients.detach()
        cams = attention.attention_map.detach()
        heads = attention.num_heads
        if mode == "itm":
            mask = text_mask.view(text_mask.size(0), 1, -1, 1, 1)
            cams_masked = cams[:, :, :, 1:].reshape(batch, heads, -1, grid, grid) * mask
            grads_masked = grads[:, :, :, 1:].clamp(min=0).reshape(batch, heads, -1, grid, grid) * mask
            maps = (cams_masked * grads_masked).mean(1).mean(1)
        else:
            cam = cams[:, :, 0, 1:].reshape(batch, heads, grid, grid)
            grad = grads[:, :, 0, 1:].reshape(batch, heads, grid, grid).clamp(0)
            maps = (cam * grad).mean(1)
    # The module keeps no reference to the map or its gradient after the call.
    attention.attention_map = attention.attn_gradients = None
    return maps, cams, grads
