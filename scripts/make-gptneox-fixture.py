#!/usr/bin/env python3
"""Writes tests/fixtures/gptneox/{parallel,sequential}/: two tiny random GPTNeoXForCausalLM checkpoints
(transformers) and the logits PyTorch computes for them, the references our Rust tests convert to GGUF
and compare llama.cpp against.

    parallel    the Pythia / Dolly v2 layout: use_parallel_residual (x + attn(ln1(x)) + mlp(ln2(x))),
                partial rotary (rotary_pct 0.25: the first 4 of each head's 16 dims), biases on every
                projection, untied embed_in / lm_head
    sequential  use_parallel_residual=False (h = x + attn(ln1(x)); h + mlp(ln2(h))) and full rotary
                (rotary_pct 1.0), otherwise the same

Run with a Python that has torch, transformers, safetensors and peft:
    target/peers/py/bin/python scripts/make-gptneox-fixture.py

Files per variant (kept small: the tokenizer is not stored, the test writes the fixture tokenizer of
tests/it/common/fixtures.rs, whose vocabulary of 512 the models' matches):
    config.json        exactly as transformers' save_pretrained wrote it (transformers 5.x writes the
                       rotary fraction and base as rope_parameters.partial_rotary_factor and
                       rope_parameters.rope_theta, not rotary_pct / rotary_emb_base)
    model.safetensors  weights, bf16; the output matrix is stored as embed_out.weight, as in the published
                       Pythia checkpoints (transformers 5.x calls the module lm_head, save_pretrained maps
                       it back to embed_out)
    reference.json     tokens, shape, the GPTNeoXConfig values that matter, how query_key_value splits,
                       library versions
    logits.bin         the model's logits for the tokens, f32 little-endian, [n_tokens, vocab]
    adapter/adapter_config.json        a random PEFT LoRA adapter on the same model (r=4, lora_alpha=8,
                                       on query_key_value, dense, dense_h_to_4h and dense_4h_to_h; PEFT
                                       matches "dense" as a name suffix, so only attention.dense),
                                       PEFT's own config, target_modules sorted
    adapter/adapter_model.safetensors  f32, as PEFT saves it
    logits-adapter.bin the PEFT model's logits (base + adapter) for the same tokens, f32 little-endian,
                       [n_tokens, vocab]

The weights are random but larger than transformers' init (std 0.02 gives nearly uniform logits, and
transformers zeroes the biases): Linear weights uniform in +-1/sqrt(fan_in) and biases +-0.1, embeddings
+-0.5, LayerNorm weights 1 +- 0.1 and biases +-0.1, then rounded to bf16 (what is stored); the logits are
computed in f32 from exactly those values.
The adapter is made after all of that (so the base files do not depend on it) on an f32 copy of the
same model: lora_A as PEFT initialises it (global RNG re-seeded with ADAPTER_SEED), lora_B, which PEFT
starts at zero, uniform in +-0.05 from a generator seeded with ADAPTER_SEED + 1.
"""
import os

import peft
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from hf_fixture import (
    logits_of, make_adapter, print_summary, reinit, save_bf16, versions, write_f32, write_reference,
)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "gptneox")
COMMON = dict(
    vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
    hidden_act="gelu", layer_norm_eps=1e-5, max_position_embeddings=128, attention_bias=True,
    tie_word_embeddings=False,
)


def rope(rotary_pct):
    # transformers 5.x: rotary_pct / rotary_emb_base live in rope_parameters (as partial_rotary_factor and
    # rope_theta); the old keyword arguments are still converted, but rotary_emb_base=10000 would be kept
    # as the int 10000.
    return dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=rotary_pct)


VARIANTS = {
    # Pythia / Dolly v2: parallel residual, rotary on a quarter of each head.
    "parallel": dict(COMMON, use_parallel_residual=True, rope_parameters=rope(0.25)),
    # Sequential residual (attention, then the MLP on its output), rotary on the whole head.
    "sequential": dict(COMMON, use_parallel_residual=False, rope_parameters=rope(1.0)),
}
# The GPTNeoXConfig attributes (after __post_init__) recorded in reference.json.
RECORDED = [
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "hidden_act", "rope_parameters", "use_parallel_residual", "attention_bias", "layer_norm_eps",
    "max_position_embeddings", "tie_word_embeddings",
]
QKV_LAYOUT = (
    "GPTNeoXAttention views the fused query_key_value output of 3 * hidden_size rows as [num_attention_heads, "
    "3 * head_size] and chunks the last dim into q, k, v: per head interleaved, rows go q0 k0 v0 q1 k1 v1 ... "
    "(each head_size={head_size} rows; the bias likewise), not [all q, all k, all v]. Rotary (rotate_half / "
    "NeoX style: dim i pairs with dim i + rotary_ndims / 2, inv_freq = rope_theta^(-2i / rotary_ndims)) "
    "acts on the first rotary_ndims = int(head_size * partial_rotary_factor) = {rotary_ndims} dims of each "
    "q and k head, the other {rest} pass through unchanged; scores are scaled by head_size^-0.5. "
    "use_parallel_residual={parallel}, hidden_act={act} (exact erf GELU), layer_norm_eps={eps}, "
    "tie_word_embeddings={tied} (own output matrix, saved as embed_out.weight, no bias)."
)
TOKENS = [1, 34, 63, 92, 121, 150, 179, 208]
# Every projection of a GPT-NeoX layer: the fused QKV, the attention output, and the two MLP matrices.
ADAPTER = dict(r=4, lora_alpha=8, target_modules=["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"])
ADAPTER_SEED = 4321


def make(variant, config_kwargs):
    out = os.path.join(OUT, variant)
    torch.manual_seed(1234)
    config = GPTNeoXConfig(**config_kwargs, attn_implementation="eager")
    model = GPTNeoXForCausalLM(config).eval()
    reinit(model)
    logits = logits_of(model, TOKENS)
    with torch.no_grad():
        # The logits with the decoder layers skipped, to show that the layers matter (not only the embeddings).
        t = model.gpt_neox
        skipped = model.lm_head(t.final_layer_norm(t.embed_in(torch.tensor(TOKENS))))
    moved = float(((logits - skipped) ** 2).sum() / (logits**2).sum())
    attn = model.gpt_neox.layers[0].attention
    qkv_layout = QKV_LAYOUT.format(
        head_size=attn.head_size, rotary_ndims=attn.rotary_ndims, rest=attn.head_size - attn.rotary_ndims,
        parallel=model.config.use_parallel_residual, act=model.config.hidden_act, eps=model.config.layer_norm_eps,
        tied=model.config.tie_word_embeddings,
    )
    recorded = {k: getattr(model.config, k) for k in RECORDED}
    recorded.update(head_size=attn.head_size, rotary_ndims=attn.rotary_ndims)
    save_bf16(model, out)
    write_f32(logits, os.path.join(out, "logits.bin"))
    # The adapter only now, after every base file and value: nothing of the base depends on it.
    adapter_nmse, adapter_argmax, pm = make_adapter(out, model, TOKENS, logits, ADAPTER, ADAPTER_SEED)
    # The layer-0 modules PEFT wrapped (relative to gpt_neox.layers.0).
    layer0 = pm.base_model.model.gpt_neox.layers[0]
    wrapped = sorted(n for n, m in layer0.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer))
    write_reference(
        out,
        {
            "tokens": TOKENS, "shape": list(logits.shape), "config_kwargs": config_kwargs,
            "config": recorded,
            "qkv_layout": qkv_layout, "layers_nmse_vs_embeddings_only": moved,
            "adapter": dict(ADAPTER, target_modules=sorted(ADAPTER["target_modules"]),
                            wrapped_modules=wrapped, adapter_nmse_vs_base=adapter_nmse),
            "versions": versions(),
        },
    )
    print_summary(out, logits, moved)
    print(f"  adapter on {wrapped}: moves the logits by nmse {adapter_nmse:.3e}, argmax {adapter_argmax}")


def main():
    for variant, config_kwargs in VARIANTS.items():
        make(variant, config_kwargs)


if __name__ == "__main__":
    main()
