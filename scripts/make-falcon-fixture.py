#!/usr/bin/env python3
"""Writes tests/fixtures/falcon/{mqa,gqa}/: two tiny random FalconForCausalLM checkpoints (transformers)
and the logits PyTorch computes for them, the references our Rust tests convert to GGUF and compare
llama.cpp against.

    mqa  the Falcon-7B layout: multi_query (one shared K/V head), parallel attention with a single
         input_layernorm, tied embeddings (so no lm_head in the safetensors)
    gqa  the Falcon-40B layout: new_decoder_architecture, num_kv_heads=2 K/V groups, two layer norms
         per layer (ln_attn, ln_mlp), untied lm_head

Run with a Python that has torch, transformers, safetensors and peft:
    target/peers/py/bin/python scripts/make-falcon-fixture.py

Files per variant (kept small: the tokenizer is not stored, the test writes the fixture tokenizer of
tests/it/common/fixtures.rs, whose vocabulary of 512 the models' matches):
    config.json        exactly as transformers' save_pretrained wrote it
    model.safetensors  weights, bf16
    reference.json     tokens, shape, the FalconConfig values that matter, how query_key_value splits,
                       library versions
    logits.bin         the model's logits for the tokens, f32 little-endian, [n_tokens, vocab]
    adapter/adapter_config.json        a random PEFT LoRA adapter on the same model (r=4, lora_alpha=8,
                                       on query_key_value, dense, dense_h_to_4h and dense_4h_to_h),
                                       PEFT's own config, target_modules sorted
    adapter/adapter_model.safetensors  f32, as PEFT saves it
    logits-adapter.bin the PEFT model's logits (base + adapter) for the same tokens, f32 little-endian,
                       [n_tokens, vocab]

The weights are random but larger than transformers' init (std 0.02 gives nearly uniform logits):
Linear weights uniform in +-1/sqrt(fan_in), embeddings +-0.5, LayerNorm weights 1 +- 0.1 and biases
+-0.1, then rounded to bf16 (what is stored); the logits are computed in f32 from exactly those values.
The adapter is made after all of that (so the base files do not depend on it) on an f32 copy of the
same model: lora_A as PEFT initialises it (global RNG re-seeded with ADAPTER_SEED), lora_B, which PEFT
starts at zero, uniform in +-0.05 from a generator seeded with ADAPTER_SEED + 1.
"""
import os

import torch
from transformers import FalconConfig, FalconForCausalLM

from hf_fixture import (
    logits_of, make_adapter, print_summary, reinit, save_bf16, versions, write_f32, write_reference,
)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "falcon")
COMMON = dict(
    vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, parallel_attn=True,
    bias=False, alibi=False, layer_norm_epsilon=1e-5, max_position_embeddings=128, rope_theta=10000.0,
)
VARIANTS = {
    # Falcon-7B: multi-query attention, one LayerNorm shared by attention and MLP, tied embeddings.
    "mqa": dict(COMMON, multi_query=True, new_decoder_architecture=False, tie_word_embeddings=True),
    # Falcon-40B: grouped K/V heads in kv-group-interleaved query_key_value, ln_attn + ln_mlp, own lm_head.
    "gqa": dict(COMMON, num_kv_heads=2, new_decoder_architecture=True, num_ln_in_parallel_attn=2,
                tie_word_embeddings=False),
}
# The FalconConfig attributes (after __post_init__) recorded in reference.json.
RECORDED = [
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_kv_heads", "head_dim",
    "multi_query", "new_decoder_architecture", "parallel_attn", "num_ln_in_parallel_attn", "bias", "alibi",
    "layer_norm_epsilon", "max_position_embeddings", "rope_parameters", "ffn_hidden_size", "activation",
    "tie_word_embeddings",
]
QKV_LAYOUT = {
    "mqa": "multi_query and not new_decoder_architecture: the fused output of (num_heads + 2) * head_dim "
           "rows is viewed as [num_heads + 2, head_dim]; the first num_heads heads are the queries, head "
           "num_heads is the single key and head num_heads + 1 the single value, shared by all query heads "
           "(num_kv_heads in config.json is ignored, the attention uses 1 K/V head).",
    "gqa": "new_decoder_architecture: the fused output of (num_attention_heads + 2 * num_kv_heads) * head_dim "
           "rows is viewed as [num_kv_heads groups, num_attention_heads / num_kv_heads + 2, head_dim]; in "
           "each group the first num_attention_heads / num_kv_heads heads are that group's queries, then one "
           "key and one value, which are broadcast to the group's query heads (so rows go q0 q1 k0 v0 q2 q3 "
           "k1 v1 here, each head_dim=16 rows).",
}
TOKENS = [1, 34, 63, 92, 121, 150, 179, 208]
# Every projection of a Falcon layer: the fused QKV, the attention output, and the two MLP matrices.
ADAPTER = dict(r=4, lora_alpha=8, target_modules=["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"])
ADAPTER_SEED = 4321


def make(variant, config_kwargs):
    out = os.path.join(OUT, variant)
    torch.manual_seed(1234)
    config = FalconConfig(**config_kwargs, attn_implementation="eager")
    model = FalconForCausalLM(config).eval()
    reinit(model)
    logits = logits_of(model, TOKENS)
    with torch.no_grad():
        # The logits with the decoder layers skipped, to show that the layers matter (not only the embeddings).
        t = model.transformer
        skipped = model.lm_head(t.ln_f(t.word_embeddings(torch.tensor(TOKENS))))
    moved = float(((logits - skipped) ** 2).sum() / (logits**2).sum())
    save_bf16(model, out)
    write_f32(logits, os.path.join(out, "logits.bin"))
    # The adapter only now, after every base file and value: nothing of the base depends on it.
    adapter_nmse, adapter_argmax, _ = make_adapter(out, model, TOKENS, logits, ADAPTER, ADAPTER_SEED)
    write_reference(
        out,
        {
            "tokens": TOKENS, "shape": list(logits.shape), "config_kwargs": config_kwargs,
            "config": {k: getattr(model.config, k) for k in RECORDED},
            "qkv_layout": QKV_LAYOUT[variant], "layers_nmse_vs_embeddings_only": moved,
            "adapter": dict(ADAPTER, target_modules=sorted(ADAPTER["target_modules"]),
                            adapter_nmse_vs_base=adapter_nmse),
            "versions": versions(),
        },
    )
    print_summary(out, logits, moved)
    print(f"  adapter: moves the logits by nmse {adapter_nmse:.3e}, argmax {adapter_argmax}")


def main():
    for variant, config_kwargs in VARIANTS.items():
        make(variant, config_kwargs)


if __name__ == "__main__":
    main()
