#!/usr/bin/env python3
"""Writes tests/fixtures/peft-llama/: a tiny random LlamaForCausalLM (transformers) with a random
PEFT LoRA adapter on all seven projections, and the logits PyTorch computes with the adapter, the
reference tests/it/adapter_peft_reference.rs compares llama.cpp against.

Run with a Python that has torch, transformers and peft:
    /work/pyvenv/bin/python scripts/make-peft-fixture.py

Files (kept small: the tokenizer is not stored, the test writes the fixture tokenizer of
tests/it/common/fixtures.rs, whose vocabulary of 512 the model's matches):
    model.safetensors           base weights, bf16 (tied embeddings, so no lm_head)
    adapter/adapter_config.json PEFT's own config (r=4, lora_alpha=8)
    adapter/adapter_model.safetensors  f32, as PEFT saves it
    reference.json              tokens, shape, library versions
    logits.bin                  PEFT model's logits for the tokens, f32 little-endian, [n_tokens, vocab]
"""
import copy
import json
import os
import sys

import peft
import torch
import transformers
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "peft-llama")
# The same hyper-parameters as TinyLlamaSpec { tie_embeddings: true, ..default } in the Rust fixtures.
CONFIG = dict(
    vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=10000.0,
    tie_word_embeddings=True, hidden_act="silu", attention_bias=False, mlp_bias=False,
)
TOKENS = [1, 34, 63, 92, 121, 150, 179, 208]


def main():
    torch.manual_seed(1234)
    model = LlamaForCausalLM(LlamaConfig(**CONFIG, attn_implementation="eager")).eval()
    with torch.no_grad():
        for p in model.parameters():
            # Round the weights to bf16 (what is stored), and compute with exactly those values in f32.
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    os.makedirs(OUT, exist_ok=True)
    # A bf16 copy is saved: casting the model itself would also round its rotary inv_freq buffer,
    # which casting back does not undo, and the logits below would use bf16 rope frequencies.
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(os.path.join(OUT, "hf-tmp"), safe_serialization=True)
    os.replace(os.path.join(OUT, "hf-tmp", "model.safetensors"), os.path.join(OUT, "model.safetensors"))
    for f in os.listdir(os.path.join(OUT, "hf-tmp")):
        os.remove(os.path.join(OUT, "hf-tmp", f))
    os.rmdir(os.path.join(OUT, "hf-tmp"))

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0, task_type="CAUSAL_LM")
    pm = get_peft_model(model, lora).eval()
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:  # PEFT starts B at zero, which would make the adapter a no-op
                p.copy_(torch.empty_like(p).uniform_(-0.05, 0.05))
    pm.save_pretrained(os.path.join(OUT, "adapter"))
    for extra in ["README.md"]:
        path = os.path.join(OUT, "adapter", extra)
        if os.path.exists(path):
            os.remove(path)
    with torch.no_grad():
        logits = pm(torch.tensor([TOKENS])).logits[0].to(torch.float32).contiguous()
        with pm.disable_adapter():
            without = pm(torch.tensor([TOKENS])).logits[0]
    logits.numpy().astype("<f4").tofile(os.path.join(OUT, "logits.bin"))
    moved = float(((logits - without) ** 2).sum() / (without**2).sum())
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(
            {
                "tokens": TOKENS, "shape": list(logits.shape), "config": CONFIG,
                "adapter_nmse_vs_base": moved,
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                             "peft": peft.__version__, "python": sys.version.split()[0]},
            },
            f, indent=2,
        )
        f.write("\n")
    print(f"wrote {OUT}: logits {tuple(logits.shape)}, adapter moves logits by nmse {moved:.3e}")


if __name__ == "__main__":
    main()
