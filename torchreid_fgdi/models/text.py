"""The text side of CLIP-FGDI: learnable prompts and CLIP's text transformer over prompt embeddings."""

from __future__ import annotations

import torch
from torch import nn

IDENTITY_TEMPLATE = "A photo of a X X X X person."
DOMAIN_TEMPLATE = "A photo of a X X X X person from X dataset."


class PromptLearner(nn.Module):
    """Identity prompts (4 learnable vectors per identity) and domain prompts (+1 per domain).

    The fixed words of each template travel as buffers (their token embeddings), named and
    shaped as in the authors' checkpoints, so those load without conversion:
    ``token_prefix`` / ``token_suffix`` around the identity vectors; ``token_prefix_domain``,
    ``token_intermediate_domain`` ("person from") and ``token_suffix_domain`` in the domain
    template. The identity vectors are detached inside domain prompts: stage 2b trains only
    ``dmctx``.

    Args:
        num_classes: identities over all sources.
        num_domains: source domains.
        token_embedding: CLIP's token embedding table (read once, not kept).
        tokenizer: CLIP's tokenizer (``open_clip.get_tokenizer``).
    """

    def __init__(self, num_classes: int, num_domains: int, token_embedding: nn.Embedding, tokenizer):
        super().__init__()
        tokens = tokenizer([IDENTITY_TEMPLATE, DOMAIN_TEMPLATE])
        placeholder = tokenizer(["X"])[0, 1]
        with torch.no_grad():
            embedded = token_embedding(tokens).float()
        (ident,) = (tokens[0] == placeholder).nonzero(as_tuple=True)
        (dom,) = (tokens[1] == placeholder).nonzero(as_tuple=True)
        first, last, dom_slot = int(ident[0]), int(ident[-1]) + 1, int(dom[-1])
        self.num_ctx = last - first
        self.register_buffer("token_prefix", embedded[:1, :first].clone())
        self.register_buffer("token_suffix", embedded[:1, last:].clone())
        self.register_buffer("token_prefix_domain", embedded[1:, :first].clone())
        self.register_buffer("token_intermediate_domain", embedded[1:, last:dom_slot].clone())
        self.register_buffer("token_suffix_domain", embedded[1:, dom_slot + 1 :].clone())
        # EOT is the largest token id: its position is where the text feature is read.
        self.eot_identity = int(tokens[0].argmax())
        self.eot_domain = int(tokens[1].argmax())
        dim = embedded.shape[-1]
        self.clsctx = nn.Parameter(torch.empty(num_classes, self.num_ctx, dim).normal_(std=0.02))
        self.dmctx = nn.Parameter(torch.empty(num_domains, 1, dim).normal_(std=0.02))

    def forward(self, pids: torch.Tensor, dsetids: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        """Prompt embeddings [B, 77, dim] and the EOT position: identity prompts, or domain prompts
        of (pid, domain) when ``dsetids`` is given."""
        if dsetids is None:
            return self._join(self.token_prefix, self.clsctx[pids], self.token_suffix), self.eot_identity
        prompts = self._join(
            self.token_prefix_domain,
            self.clsctx[pids].detach(),
            self.token_intermediate_domain,
            self.dmctx[dsetids],
            self.token_suffix_domain,
        )
        return prompts, self.eot_domain

    @staticmethod
    def _join(*parts: torch.Tensor) -> torch.Tensor:
        """Concatenates along the sequence, broadcasting the fixed [1, L, dim] template parts to the batch."""
        n = max(p.shape[0] for p in parts)
        return torch.cat([p.expand(n, -1, -1) for p in parts], 1)


class TextEncoder(nn.Module):
    """CLIP's text transformer fed with prompt embeddings instead of token ids.

    Keeps open_clip's own modules (``transformer``, ``positional_embedding``, ``ln_final``,
    ``text_projection``, causal ``attn_mask``), so open_clip's text weights load unchanged.
    """

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.transformer = clip.transformer
        self.positional_embedding = clip.positional_embedding
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)

    def forward(self, prompts: torch.Tensor, eot_index: int) -> torch.Tensor:
        x = prompts + self.positional_embedding.to(prompts.dtype)
        # open_clip's Transformer takes [B, L, D] and handles its own layout (unlike its blocks).
        x = self.transformer(x, attn_mask=self.attn_mask)
        x = self.ln_final(x[:, eot_index])
        return x @ self.text_projection
