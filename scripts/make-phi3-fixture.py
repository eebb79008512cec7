#!/usr/bin/env python3
"""Writes tests/fixtures/phi3/partial-rope/ (or /longrope/): a tiny random Phi3ForCausalLM checkpoint (transformers), its
logits, a PEFT adapter on all four projections, and the GGUF llama.cpp's own converter (convert_hf_to_gguf.py)
writes from it: the references our Rust tests convert to GGUF, run in llama.cpp and train on.

The layout of Phi-3-mini-4k and Phi-4-mini: one fused qkv_proj (rows q; k; v), one fused gate_up_proj (rows
gate; up), RMS norms, a NEOX rope, no biases, untied embeddings (Phi-3's; Phi-4-mini ties them, which the
Llama fixtures already cover), grouped-query attention (Phi-4-mini's), and Phi-4-mini's partial rope
(partial_rotary_factor 0.75: 12 of each head's 16 dimensions rotate); with `longrope`, the long-context
variants' rope (Phi-3-mini-128k, Phi-3.5-mini, Phi-4-mini as published): short and long per-pair factors and
the attention factor, with an original context of 32 that the fixture's 48 tokens run past. The attention is made sharp (the q and k rows of qkv_proj
scaled by Q_K_SCALE) so that the rope matters.

Run with a Python that has torch, transformers, safetensors and peft, and llama.cpp's converter (the
conversion/ and gguf-py/ folders beside convert_hf_to_gguf.py, as in llama-cpp-python's source package,
which scripts/bench-peers.sh unpacks into target/peers/llama.cpp):
    python scripts/make-phi3-fixture.py LLAMA_CPP_DIR [partial-rope|longrope]
The converter reads the SentencePiece model of tests/data/spm (480 pieces, padded to the checkpoint's 512 by
the converter). The tests write the tiny tokenizer of tests/it/common for our own conversion.

Files: config.json, model.safetensors (bf16), logits.bin (f32, [n_tokens, vocab]), llama-cpp-f32.gguf,
adapter/ and logits-adapter.bin (PEFT, r=4, lora_alpha=8), reference.json.
"""
import copy
import os
import sys

import torch
from transformers import Phi3Config, Phi3ForCausalLM

from hf_fixture import (
    layers_nmse, llama_cpp_convert, logits_of, make_adapter, nmse, print_summary, reinit, save_bf16, versions,
    write_f32, write_reference,
)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CONFIG = dict(
    vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=1024, original_max_position_embeddings=1024,
    rms_norm_eps=1e-5, rope_parameters=dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.75),
    tie_word_embeddings=False, sliding_window=None, bos_token_id=1, eos_token_id=2, pad_token_id=0,
)
# Phi-3-mini-128k's and Phi-4-mini's long context: the rope's per-pair factors, short ones up to
# original_max_position_embeddings and long ones beyond (transformers picks by the sequence length,
# llama.cpp by its context size), and cos/sin scaled by sqrt(1 + ln(1024/32) / ln(32)) = sqrt(2).
# 48 tokens run past the original 32: the long factors.
ROPE_PAIRS = 6
LONGROPE_CONFIG = dict(
    CONFIG, original_max_position_embeddings=32,
    rope_parameters=dict(
        rope_type="longrope", rope_theta=10000.0, partial_rotary_factor=0.75, original_max_position_embeddings=32,
        short_factor=[1.0 + 0.25 * i for i in range(ROPE_PAIRS)],
        long_factor=[1.0 + 1.5 * i for i in range(ROPE_PAIRS)],
    ),
)
VARIANTS = {"partial-rope": CONFIG, "longrope": LONGROPE_CONFIG}
Q_K_SCALE = 5.0
TOKENS = [1] + [(37 * i + 11) % 509 + 3 for i in range(47)]
ADAPTER = dict(r=4, lora_alpha=8, target_modules=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"])
ADAPTER_SEED = 4321


def sharpen_qkv(model, scale):
    """Scales the q and k rows of every fused qkv_proj weight by `scale` (rounded to bf16 again, as stored),
    as hf_fixture.sharpen does for separate q_proj and k_proj."""
    c = model.config
    head_dim = c.hidden_size // c.num_attention_heads
    qk_rows = (c.num_attention_heads + c.num_key_value_heads) * head_dim
    with torch.no_grad():
        for layer in model.model.layers:
            w = layer.self_attn.qkv_proj.weight
            w[:qk_rows] = (w[:qk_rows] * scale).to(torch.bfloat16).to(torch.float32)


def main():
    if len(sys.argv) not in (2, 3) or sys.argv[2:] and sys.argv[2] not in VARIANTS:
        sys.exit(f"usage: make-phi3-fixture.py LLAMA_CPP_DIR [{'|'.join(VARIANTS)}]")
    variant = sys.argv[2] if len(sys.argv) == 3 else "partial-rope"
    config = VARIANTS[variant]
    out = os.path.join(ROOT, "tests", "fixtures", "phi3", variant)
    torch.manual_seed(1234)
    model = Phi3ForCausalLM(Phi3Config(**config, attn_implementation="eager")).eval()
    reinit(model)
    with torch.no_grad():
        # RMS norm weights away from 1, so that a norm applied with the wrong weight shows.
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                p.uniform_(0.5, 1.5)
                p.copy_(p.to(torch.bfloat16).to(torch.float32))
    sharpen_qkv(model, Q_K_SCALE)
    logits = logits_of(model, TOKENS)
    moved = layers_nmse(model, TOKENS, logits)
    # How far a graph would be off that rotated every dimension of the heads, or read the fused
    # gate_up_proj's halves the other way round.
    sensitivity = {}
    if variant == "partial-rope":
        full = Phi3ForCausalLM(Phi3Config(**dict(config, rope_parameters=dict(config["rope_parameters"],
                                                                              partial_rotary_factor=1.0)),
                                          attn_implementation="eager")).eval()
        full.load_state_dict(model.state_dict())
        sensitivity["nmse_with_full_rope"] = nmse(logits_of(full, TOKENS), logits)
    # How far the short factors, or plain rope, would be from the long context's.
    if variant == "longrope":
        for name, parameters in [
            ("nmse_with_short_factors", dict(config["rope_parameters"], long_factor=config["rope_parameters"]["short_factor"])),
            ("nmse_without_rope_factors", dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.75)),
        ]:
            other = Phi3ForCausalLM(Phi3Config(**dict(config, rope_parameters=parameters),
                                               attn_implementation="eager")).eval()
            other.load_state_dict(model.state_dict())
            sensitivity[name] = nmse(logits_of(other, TOKENS), logits)
    swapped = copy.deepcopy(model)
    with torch.no_grad():
        for layer in swapped.model.layers:
            w = layer.mlp.gate_up_proj.weight
            w.copy_(torch.cat([w[config["intermediate_size"]:], w[:config["intermediate_size"]]]))
    gate_up_swapped = nmse(logits_of(swapped, TOKENS), logits)
    save_bf16(model, out)
    write_f32(logits, os.path.join(out, "logits.bin"))
    adapter_nmse, adapter_argmax, _ = make_adapter(out, model, TOKENS, logits, ADAPTER, ADAPTER_SEED)
    llama_cpp_convert(out, sys.argv[1], [os.path.join(ROOT, "tests", "data", "spm", "tokenizer.model")])
    write_reference(
        out,
        {
            "tokens": TOKENS, "shape": list(logits.shape), "config": config, "q_k_scale": Q_K_SCALE,
            "layers_nmse_vs_embeddings_only": moved, "nmse_gate_up_swapped": gate_up_swapped, **sensitivity,
            "adapter": dict(ADAPTER, target_modules=sorted(ADAPTER["target_modules"]),
                            adapter_nmse_vs_base=adapter_nmse),
            "llama_cpp_converter": "convert_hf_to_gguf.py --outtype f32 (llama-cpp-python 0.3.36's llama.cpp), "
                                   "tokenizer.model of tests/data/spm",
            "versions": versions(),
        },
    )
    print_summary(out, logits, moved)
    print(f"  {sensitivity}, swapping gate and up: nmse {gate_up_swapped:.3e}")
    print(f"  adapter: moves the logits by nmse {adapter_nmse:.3e}, argmax {adapter_argmax}")


if __name__ == "__main__":
    main()
