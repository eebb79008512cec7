#!/usr/bin/env python3
"""Writes tests/fixtures/llama3/{3.1,3.2}/: two tiny random LlamaForCausalLM checkpoints with Llama 3's rope
scaling (rope_type llama3), the logits transformers computes for them, a PEFT adapter on all seven
projections, and the GGUF llama.cpp's own converter (convert_hf_to_gguf.py) writes for each: the references
our Rust tests convert to GGUF, run in llama.cpp and train on.

    3.1  Llama 3.1/3.3 as transformers 5 saves it: rope_parameters {rope_type llama3, rope_theta, factor,
         low_freq_factor, high_freq_factor, original_max_position_embeddings}, an own lm_head
    3.2  Llama 3.2 1B/3B: tied embeddings, and config.json rewritten into the layout transformers 4.4x wrote
         (top-level rope_theta, a rope_scaling object, torch_dtype), which hub checkpoints still carry

The attention is made sharp (q_proj and k_proj scaled by Q_K_SCALE after the usual re-initialisation): at
transformers' 0.02 initialisation attention is nearly uniform and a wrong rope moves the logits by under 1%.
original_max_position_embeddings is 64, so that over TOKENS' positions the rope factors matter: the
reference records how much the logits move when the model is run without them.

Run with a Python that has torch, transformers, safetensors and peft, and llama.cpp's converter (the
conversion/ and gguf-py/ folders beside convert_hf_to_gguf.py, as in llama-cpp-python's source package,
which scripts/bench-peers.sh unpacks into target/peers/llama.cpp):
    python scripts/make-llama3-fixture.py LLAMA_CPP_DIR TOKENIZER_DIR
TOKENIZER_DIR holds the tests' tiny tokenizer (tokenizer.json and tokenizer_config.json:
what `cargo run --example demo_inputs -- DIR tiny` writes into DIR/hf-model); the
converter needs it, and the fixture does not keep it (the tests write the same tokenizer).

Files per variant:
    config.json, model.safetensors (bf16)  the checkpoint
    logits.bin             transformers' logits for TOKENS, f32 little-endian, [n_tokens, vocab]
    llama-cpp-f32.gguf     convert_hf_to_gguf.py --outtype f32 of the checkpoint (with the tiny tokenizer)
    adapter/, logits-adapter.bin  a random PEFT LoRA adapter (r=4, lora_alpha=8, all seven projections)
                           and the PEFT model's logits
    reference.json         tokens, shape, config, how much the rope factors and layers move the logits,
                           library versions
"""
import json
import os
import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hf_fixture import (
    layers_nmse, llama_cpp_convert, logits_of, make_adapter, nmse, print_summary, reinit, save_bf16, sharpen, versions,
    write_f32, write_reference,
)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "llama3")
ROPE = dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
            original_max_position_embeddings=64)
COMMON = dict(
    vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=1024, rms_norm_eps=1e-5, hidden_act="silu",
    attention_bias=False, mlp_bias=False, bos_token_id=1, eos_token_id=2,
)
VARIANTS = {
    "3.1": dict(COMMON, tie_word_embeddings=False),
    "3.2": dict(COMMON, tie_word_embeddings=True),
}
Q_K_SCALE = 5.0
# 48 tokens: positions far enough apart for the rope factors of the slow pairs to matter.
TOKENS = [1] + [(37 * i + 11) % 509 + 3 for i in range(47)]
ADAPTER = dict(r=4, lora_alpha=8,
               target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
ADAPTER_SEED = 4321


def old_layout(path):
    """Rewrites config.json as transformers 4.4x wrote Llama 3.2's: rope_theta at the top level, the scaling
    in rope_scaling, torch_dtype."""
    with open(path) as f:
        config = json.load(f)
    rope = config.pop("rope_parameters")
    config["rope_theta"] = rope.pop("rope_theta")
    config["rope_scaling"] = rope
    config["torch_dtype"] = config.pop("dtype", "bfloat16")
    with open(path, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")


def make(variant, config_kwargs, llama_cpp, tokenizer_dir):
    out = os.path.join(OUT, variant)
    torch.manual_seed(1234)
    model = LlamaForCausalLM(LlamaConfig(**config_kwargs, rope_parameters=ROPE, attn_implementation="eager")).eval()
    reinit(model)
    sharpen(model, Q_K_SCALE)
    logits = logits_of(model, TOKENS)
    # The same weights without the rope factors: how much a graph that ignored them would be off.
    plain = LlamaForCausalLM(LlamaConfig(**config_kwargs, rope_parameters=dict(rope_type="default", rope_theta=10000.0),
                                         attn_implementation="eager")).eval()
    plain.load_state_dict(model.state_dict())
    without_factors = nmse(logits_of(plain, TOKENS), logits)
    moved = layers_nmse(model, TOKENS, logits)
    save_bf16(model, out)
    if variant == "3.2":
        old_layout(os.path.join(out, "config.json"))
    write_f32(logits, os.path.join(out, "logits.bin"))
    adapter_nmse, adapter_argmax, _ = make_adapter(out, model, TOKENS, logits, ADAPTER, ADAPTER_SEED)

    # llama.cpp's converter, on a copy of the checkpoint with the tiny tokenizer.
    llama_cpp_convert(out, llama_cpp, [os.path.join(tokenizer_dir, n) for n in ["tokenizer.json", "tokenizer_config.json"]])

    write_reference(
        out,
        {
            "tokens": TOKENS, "shape": list(logits.shape), "config_kwargs": config_kwargs, "rope_parameters": ROPE,
            "q_k_scale": Q_K_SCALE, "layers_nmse_vs_embeddings_only": moved,
            "nmse_without_rope_factors": without_factors,
            "adapter": dict(ADAPTER, target_modules=sorted(ADAPTER["target_modules"]),
                            adapter_nmse_vs_base=adapter_nmse),
            "llama_cpp_converter": "convert_hf_to_gguf.py --outtype f32 (llama-cpp-python 0.3.36's llama.cpp)",
            "versions": versions(),
        },
    )
    print_summary(out, logits, moved)
    print(f"  without the rope factors the logits move by nmse {without_factors:.3e}")
    print(f"  adapter: moves the logits by nmse {adapter_nmse:.3e}, argmax {adapter_argmax}")


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: make-llama3-fixture.py LLAMA_CPP_DIR TOKENIZER_DIR")
    for variant, config_kwargs in VARIANTS.items():
        make(variant, config_kwargs, sys.argv[1], sys.argv[2])


if __name__ == "__main__":
    main()
