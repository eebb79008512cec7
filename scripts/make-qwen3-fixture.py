#!/usr/bin/env python3
"""Writes tests/fixtures/qwen3/tied/: a tiny random Qwen3ForCausalLM checkpoint (transformers), its logits, a
PEFT adapter on all seven projections, and the GGUF llama.cpp's own converter (convert_hf_to_gguf.py) writes
from it: the references our Rust tests convert to GGUF, run in llama.cpp and train on.

The layout of Qwen3-0.6B/1.7B/4B: q_norm and k_norm (RMS norms over each head, before the rope), no q/k/v
biases, an explicit head_dim (32 here, twice hidden_size / num_attention_heads, as Qwen3-0.6B's 128 is for
its 1024 / 16), tied embeddings. The attention is made sharp (q_proj and k_proj scaled by Q_K_SCALE) so that
the rope and the q/k norms matter.

Run with a Python that has torch, transformers, safetensors and peft, and llama.cpp's converter (the
conversion/ and gguf-py/ folders beside convert_hf_to_gguf.py, as in llama-cpp-python's source package,
which scripts/bench-peers.sh unpacks into target/peers/llama.cpp):
    python scripts/make-qwen3-fixture.py LLAMA_CPP_DIR
The converter reads the SentencePiece model of tests/data/spm (480 pieces, padded to the checkpoint's 512 by
the converter); Qwen's byte-level BPE path would need a tokenizer whose hash llama.cpp knows. The tests write
the tiny tokenizer of tests/it/common for our own conversion.

Files: config.json, model.safetensors (bf16), logits.bin (f32, [n_tokens, vocab]), llama-cpp-f32.gguf,
adapter/ and logits-adapter.bin (PEFT, r=4, lora_alpha=8), reference.json.
"""
import copy
import os
import sys

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from hf_fixture import (
    layers_nmse, llama_cpp_convert, logits_of, make_adapter, nmse, print_summary, reinit, save_bf16, sharpen, versions,
    write_f32, write_reference,
)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "qwen3", "tied")
CONFIG = dict(
    vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=32, max_position_embeddings=1024, rms_norm_eps=1e-6,
    rope_parameters=dict(rope_type="default", rope_theta=1000000.0), tie_word_embeddings=True,
    attention_bias=False, bos_token_id=1, eos_token_id=2,
)
Q_K_SCALE = 5.0
TOKENS = [1] + [(37 * i + 11) % 509 + 3 for i in range(47)]
ADAPTER = dict(r=4, lora_alpha=8,
               target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
ADAPTER_SEED = 4321


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make-qwen3-fixture.py LLAMA_CPP_DIR")
    torch.manual_seed(1234)
    model = Qwen3ForCausalLM(Qwen3Config(**CONFIG, attn_implementation="eager")).eval()
    reinit(model)
    with torch.no_grad():
        # The q/k norms' weights away from 1, so that a norm applied with the wrong weight shows.
        for name, p in model.named_parameters():
            if name.endswith(("q_norm.weight", "k_norm.weight")):
                p.uniform_(0.5, 1.5)
                p.copy_(p.to(torch.bfloat16).to(torch.float32))
    sharpen(model, Q_K_SCALE)
    logits = logits_of(model, TOKENS)
    moved = layers_nmse(model, TOKENS, logits)
    # The same model without its q/k norms: how far a graph that skipped them would be off.
    plain = copy.deepcopy(model)
    for layer in plain.model.layers:
        layer.self_attn.q_norm = torch.nn.Identity()
        layer.self_attn.k_norm = torch.nn.Identity()
    without_norms = nmse(logits_of(plain, TOKENS), logits)
    save_bf16(model, OUT)
    write_f32(logits, os.path.join(OUT, "logits.bin"))
    adapter_nmse, adapter_argmax, _ = make_adapter(OUT, model, TOKENS, logits, ADAPTER, ADAPTER_SEED)
    llama_cpp_convert(OUT, sys.argv[1], [os.path.join(ROOT, "tests", "data", "spm", "tokenizer.model")])
    write_reference(
        OUT,
        {
            "tokens": TOKENS, "shape": list(logits.shape), "config": CONFIG, "q_k_scale": Q_K_SCALE,
            "layers_nmse_vs_embeddings_only": moved, "nmse_without_qk_norms": without_norms,
            "adapter": dict(ADAPTER, target_modules=sorted(ADAPTER["target_modules"]),
                            adapter_nmse_vs_base=adapter_nmse),
            "llama_cpp_converter": "convert_hf_to_gguf.py --outtype f32 (llama-cpp-python 0.3.36's llama.cpp), "
                                   "tokenizer.model of tests/data/spm",
            "versions": versions(),
        },
    )
    print_summary(OUT, logits, moved)
    print(f"  without the q/k norms the logits move by nmse {without_norms:.3e}")
    print(f"  adapter: moves the logits by nmse {adapter_nmse:.3e}, argmax {adapter_argmax}")


if __name__ == "__main__":
    main()
