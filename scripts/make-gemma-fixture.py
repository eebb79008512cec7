#!/usr/bin/env python3
"""Writes tests/fixtures/gemma2/{9b,query-scale}/ and tests/fixtures/gemma3/{1b,4b}/: tiny random Gemma 2
(Gemma2ForCausalLM) and Gemma 3 text (Gemma3ForCausalLM, model_type gemma3_text) checkpoints made by
transformers, their logits, a PEFT adapter on all seven projections, and the GGUF llama.cpp's own converter
(convert_hf_to_gguf.py) writes from each: the references our Rust tests convert to GGUF, run in llama.cpp and
train on.

What makes Gemma differ from Llama, each made to matter here:
  - the embeddings scaled by sqrt(hidden_size); RMS norms that multiply by (1 + w): the stored w are drawn
    in +-0.5, so a graph that forgets the +1 is far off (llama.cpp's converter adds the 1 to every
    *norm.weight it writes);
  - a norm after the attention and one after the MLP (post_attention_layernorm, post_feedforward_layernorm)
    besides the usual pre-norms; a GELU (tanh approximation) gated MLP;
  - sliding-window attention on some layers (window SLIDING_WINDOW = 8 over 48 tokens): Gemma 2 alternates
    sliding and global layers (layer 0 sliding), Gemma 3 has five sliding layers and then a global one, so
    it takes six layers to show one global layer;
  - Gemma 2: tanh soft-capping of the attention scores and of the final logits (c * tanh(x / c)), with caps
    small enough against the sharpened scores and the logits that capping moves them;
  - Gemma 3: q/k RMS norms (with the +1), two rope bases (rope_theta 1e6 on global layers, 1e4 on sliding
    ones: in transformers 5 config.json carries them as rope_parameters.{full,sliding}_attention.rope_theta),
    tied embeddings, no soft-capping.

Variants:
    gemma2/9b   query_pre_attn_scalar = head_dim (Gemma 2 2B and 9B), head_dim * n_heads != hidden_size
    gemma2/query-scale  query_pre_attn_scalar (8) != head_dim (32), as Gemma 2 27B's 144 against its
                head_dim 128 (8 rather than 27B's hidden_size / n_heads = 16: a factor 2 in the scale moves
                the logits four times as much as sqrt(2) does through the capped scores). llama.cpp does not
                read query_pre_attn_scalar: it scales by 1/sqrt(head_dim), or 1/sqrt(n_embd / n_head) for a
                46-layer Gemma 2 (27B), so on this model llama.cpp's own conversion does NOT compute
                transformers' logits (nmse_with_head_dim_attention_scale is by how much)
    gemma3/1b   Gemma 3 1B's layout: no rope scaling
    gemma3/4b   Gemma 3 4B/12B/27B's: rope_parameters.full_attention = linear, factor 8 (global layers only)
    gemma3/multimodal  the layout Gemma 3 4B/12B/27B are published in (Gemma3ForConditionalGeneration: the
                text model under language_model., a vision tower and projector beside it, config.json's
                text_config), with gemma3/1b's text weights and a tiny random vision tower: its text-only
                logits are gemma3/1b's (checked here), and the conversion keeps the text part, as llama.cpp's
                converter does without --mmproj. Made by `make-gemma-fixture.py LLAMA_CPP_DIR multimodal`
                from gemma3/1b's files, which must exist (files: config.json, model.safetensors, logits.bin,
                reference.json).

The attention is made sharp (q_proj and k_proj scaled by Q_K_SCALE after the re-initialisation): at
transformers' initialisation attention is nearly uniform, and a wrong mask, rope or scale moves the logits by
under 1%. reference.json records, for each feature, the nmse by which the logits move when the model is run
without it (each above 1e-2, so the tests can assert the fixture tells it apart).

Run with a Python that has torch, transformers, safetensors and peft, and llama.cpp's converter (the
conversion/ and gguf-py/ folders beside convert_hf_to_gguf.py, as in llama-cpp-python's source package,
which scripts/bench-peers.sh unpacks into target/peers/llama.cpp):
    python scripts/make-gemma-fixture.py LLAMA_CPP_DIR
The converter reads the SentencePiece model of tests/data/spm (480 pieces, padded to the checkpoint's 512 by
the converter), as Gemma's own tokenizer is a SentencePiece model; the tests write the tiny tokenizer of
tests/it/common for our own conversion.

Files per variant: config.json, model.safetensors (bf16), logits.bin (f32, [n_tokens, vocab]),
llama-cpp-f32.gguf, adapter/ and logits-adapter.bin (PEFT, r=4, lora_alpha=8), reference.json.
"""
import copy
import json
import os
import sys

import torch
from transformers import Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig

from hf_fixture import (
    llama_cpp_convert, logits_of, make_adapter, nmse, print_summary, reinit, save_bf16, sharpen, versions,
    write_f32, write_reference,
)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures")
SLIDING_WINDOW = 8
GEMMA2 = dict(
    vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=32, max_position_embeddings=1024, rms_norm_eps=1e-6,
    hidden_activation="gelu_pytorch_tanh", sliding_window=SLIDING_WINDOW, attn_logit_softcapping=10.0,
    final_logit_softcapping=5.0, tie_word_embeddings=True, attention_bias=False, bos_token_id=1,
    eos_token_id=2, pad_token_id=0,
)
GEMMA3 = dict(
    vocab_size=512, hidden_size=64, intermediate_size=64, num_hidden_layers=6, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, max_position_embeddings=1024,
    rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh", sliding_window=SLIDING_WINDOW,
    tie_word_embeddings=True, attention_bias=False, bos_token_id=1, eos_token_id=2, pad_token_id=0,
)
GEMMA3_ROPE = dict(sliding_attention=dict(rope_type="default", rope_theta=10000.0),
                   full_attention=dict(rope_type="default", rope_theta=1000000.0))
VARIANTS = {
    ("gemma2", "9b"): dict(GEMMA2, query_pre_attn_scalar=32),
    ("gemma2", "query-scale"): dict(GEMMA2, query_pre_attn_scalar=8),
    ("gemma3", "1b"): dict(GEMMA3, rope_parameters=GEMMA3_ROPE),
    ("gemma3", "4b"): dict(GEMMA3, rope_parameters=dict(
        GEMMA3_ROPE, full_attention=dict(rope_type="linear", rope_theta=1000000.0, factor=8.0))),
}
Q_K_SCALE = 5.0
# 48 tokens: six times the sliding window, so that sliding layers see a fraction of what global ones see.
TOKENS = [1] + [(37 * i + 11) % 509 + 3 for i in range(47)]
ADAPTER = dict(r=4, lora_alpha=8,
               target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
ADAPTER_SEED = 4321


class GgmlCpuGelu(torch.nn.Module):
    """GELU as ggml's CPU backend computes it for f32 (GGML_GELU_FP16 in ggml-cpu/vec.h): 0 at or below -10,
    x at or above 10, else the tanh form of x rounded to f16, rounded to f16."""

    def forward(self, x):
        h = x.to(torch.float16).to(torch.float32)
        y = (0.5 * h * (1 + torch.tanh(0.7978845608028654 * h * (1 + 0.044715 * h * h)))).to(torch.float16)
        return torch.where(x <= -10, torch.zeros_like(x), torch.where(x >= 10, x, y.to(torch.float32)))


def build(family, config_kwargs):
    """A model of `family` with `config_kwargs` (eager attention: the only one with soft-capping)."""
    if family == "gemma2":
        return Gemma2ForCausalLM(Gemma2Config(**config_kwargs, attn_implementation="eager")).eval()
    return Gemma3ForCausalLM(Gemma3TextConfig(**config_kwargs, attn_implementation="eager")).eval()


def variant_logits(family, config_kwargs, state, weights=None):
    """The logits for TOKENS of a model of `family` built from `config_kwargs` with the weights `state`,
    each changed by weights(name, tensor) where given."""
    model = build(family, copy.deepcopy(config_kwargs))
    if weights is not None:
        state = {name: weights(name, t) for name, t in state.items()}
    model.load_state_dict(state)
    return logits_of(model, TOKENS)


def sensitivities(family, variant, config_kwargs, model, logits):
    """How far the logits move when the model is run without each Gemma feature: a graph that skipped it."""
    state = model.state_dict()
    off = {}

    def moved(name, weights=None, **changes):
        off[name] = nmse(variant_logits(family, dict(config_kwargs, **changes), state, weights), logits)

    with torch.no_grad():
        skipped = model.lm_head(model.model.norm(model.model.embed_tokens(torch.tensor(TOKENS))))
        if family == "gemma2":
            skipped = torch.tanh(skipped / config_kwargs["final_logit_softcapping"]) * config_kwargs[
                "final_logit_softcapping"]
    off["layers_nmse_vs_embeddings_only"] = nmse(skipped, logits)
    # A norm that multiplies by the stored w instead of 1 + w: the model with every norm weight w - 1.
    moved("nmse_without_norm_offset", lambda n, t: t - 1.0 if n.endswith("norm.weight") else t)
    moved("nmse_without_sliding_window", layer_types=["full_attention"] * config_kwargs["num_hidden_layers"])
    # The embeddings not scaled by sqrt(hidden_size).
    plain = copy.deepcopy(model)
    plain.model.embed_tokens.embed_scale.fill_(1.0)
    off["nmse_without_embedding_scale"] = nmse(logits_of(plain, TOKENS), logits)
    # The post-attention and post-MLP norms skipped (as a Llama-style graph would).
    plain = copy.deepcopy(model)
    for layer in plain.model.layers:
        layer.post_attention_layernorm = torch.nn.Identity()
        layer.post_feedforward_layernorm = torch.nn.Identity()
    off["nmse_without_post_norms"] = nmse(logits_of(plain, TOKENS), logits)
    # GELU with erf instead of the tanh approximation: small, recorded to show it is (not asserted).
    moved("nmse_with_erf_gelu", hidden_activation="gelu")
    # ggml's CPU GELU (and GEGLU), which llama.cpp's Gemma graphs use: the input rounded to f16, the tanh
    # form looked up in a table of f16 results (ggml-cpu/vec.h, GGML_GELU_FP16); through the sharp
    # attention it moves the logits by about 1e-3 of the largest, the bulk of the difference between
    # llama.cpp's logits and transformers' on these fixtures: recorded for the tests' tolerances.
    table = copy.deepcopy(model)
    for layer in table.model.layers:
        layer.mlp.act_fn = GgmlCpuGelu()
    with_table = logits_of(table, TOKENS)
    off["nmse_with_ggml_cpu_gelu"] = nmse(with_table, logits)
    off["max_relative_error_with_ggml_cpu_gelu"] = float((with_table - logits).abs().max() / logits.abs().max())
    head_dim_scale = config_kwargs["query_pre_attn_scalar"] == config_kwargs["head_dim"]
    if not head_dim_scale:
        # What llama.cpp computes for a Gemma that is not 46 (Gemma 2) or 62 (Gemma 3) layers deep.
        moved("nmse_with_head_dim_attention_scale", query_pre_attn_scalar=config_kwargs["head_dim"])
    if family == "gemma2":
        moved("nmse_without_attn_softcapping", attn_logit_softcapping=None)
        moved("nmse_without_final_softcapping", final_logit_softcapping=None)
    else:
        rope = config_kwargs["rope_parameters"]
        one_base = dict(rope, sliding_attention=dict(rope["sliding_attention"],
                                                     rope_theta=rope["full_attention"]["rope_theta"]))
        moved("nmse_with_one_rope_base", rope_parameters=one_base)
        if rope["full_attention"]["rope_type"] == "linear":
            moved("nmse_without_rope_scaling", rope_parameters=dict(
                rope, full_attention=dict(rope_type="default", rope_theta=rope["full_attention"]["rope_theta"])))
            # llama.cpp reads one rope scaling and applies it to global layers only (its swa scale stays 1):
            # a graph that scaled the sliding layers too would be this far off.
            moved("nmse_with_rope_scaling_on_all_layers", rope_parameters=dict(
                rope, sliding_attention=dict(rope["sliding_attention"], rope_type="linear", factor=8.0)))
        plain = copy.deepcopy(model)
        for layer in plain.model.layers:
            layer.self_attn.q_norm = torch.nn.Identity()
            layer.self_attn.k_norm = torch.nn.Identity()
        off["nmse_without_qk_norms"] = nmse(logits_of(plain, TOKENS), logits)
    return off


def make(family, variant, config_kwargs, llama_cpp):
    out = os.path.join(OUT, family, variant)
    torch.manual_seed(1234)
    model = build(family, copy.deepcopy(config_kwargs))
    reinit(model)
    with torch.no_grad():
        # Gemma's norms multiply by (1 + w), w initialised at 0: w in +-0.5, so the +1 matters. Gemma 3's
        # q/k norms set the scale of the attention scores (sharpen cannot, the norms undo it): w in [1, 2]
        # makes the attention sharp enough for the two rope bases and the rope scaling to matter.
        for name, p in model.named_parameters():
            if name.endswith(("q_norm.weight", "k_norm.weight")):
                p.uniform_(1.0, 2.0)
                p.copy_(p.to(torch.bfloat16).to(torch.float32))
            elif name.endswith("norm.weight"):
                p.uniform_(-0.5, 0.5)
                p.copy_(p.to(torch.bfloat16).to(torch.float32))
    sharpen(model, Q_K_SCALE)
    logits = logits_of(model, TOKENS)
    sens = sensitivities(family, variant, config_kwargs, model, logits)
    save_bf16(model, out)
    write_f32(logits, os.path.join(out, "logits.bin"))
    adapter_nmse, adapter_argmax, _ = make_adapter(out, model, TOKENS, logits, ADAPTER, ADAPTER_SEED)
    llama_cpp_convert(out, llama_cpp, [os.path.join(ROOT, "tests", "data", "spm", "tokenizer.model")])
    with open(os.path.join(out, "config.json")) as f:
        saved = json.load(f)
    write_reference(
        out,
        {
            "tokens": TOKENS, "shape": list(logits.shape), "config_kwargs": config_kwargs,
            "layer_types": saved["layer_types"], "q_k_scale": Q_K_SCALE, **sens,
            # Whether llama.cpp on its own conversion computes these logits: not where query_pre_attn_scalar
            # is not head_dim (llama.cpp scales by 1/sqrt(head_dim), off by nmse_with_head_dim_attention_scale).
            "llama_cpp_f32_computes_these_logits": config_kwargs["query_pre_attn_scalar"] == config_kwargs["head_dim"],
            "adapter": dict(ADAPTER, target_modules=sorted(ADAPTER["target_modules"]),
                            adapter_nmse_vs_base=adapter_nmse),
            "llama_cpp_converter": "convert_hf_to_gguf.py --outtype f32 (llama-cpp-python 0.3.36's llama.cpp), "
                                   "tokenizer.model of tests/data/spm",
            "versions": versions(),
        },
    )
    print_summary(out, logits, sens["layers_nmse_vs_embeddings_only"])
    for k, v in sens.items():
        print(f"  {k}: {v:.3e}")
    print(f"  adapter: moves the logits by nmse {adapter_nmse:.3e}, argmax {adapter_argmax}")


def make_multimodal():
    from safetensors.torch import load_file
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    text_dir = os.path.join(OUT, "gemma3", "1b")
    out = os.path.join(OUT, "gemma3", "multimodal")
    with open(os.path.join(text_dir, "config.json")) as f:
        text_config = json.load(f)
    for key in ["architectures", "dtype", "torch_dtype", "transformers_version"]:
        text_config.pop(key, None)
    vision_config = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         image_size=32, patch_size=16)
    torch.manual_seed(1234)
    config = Gemma3Config(text_config=text_config, vision_config=vision_config, mm_tokens_per_image=4,
                          image_token_index=500, boi_token_index=498, eoi_token_index=499,
                          attn_implementation="eager")
    model = Gemma3ForConditionalGeneration(config).eval()
    text = {f"model.language_model.{k[len('model.'):]}": v.to(torch.float32)
            for k, v in load_file(os.path.join(text_dir, "model.safetensors")).items()}
    missing, unexpected = model.load_state_dict(text, strict=False)
    assert not unexpected and all(not k.startswith("model.language_model.") for k in missing), (missing, unexpected)
    with torch.no_grad():
        for p in model.model.vision_tower.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    logits = logits_of(model, TOKENS)
    want = torch.frombuffer(bytearray(open(os.path.join(text_dir, "logits.bin"), "rb").read()), dtype=torch.float32)
    differs = nmse(logits, want.reshape(logits.shape))
    assert differs < 1e-10, f"the multimodal model's text logits differ from gemma3/1b's by nmse {differs}"
    save_bf16(model, out)
    write_f32(logits, os.path.join(out, "logits.bin"))
    write_reference(out, {
        "tokens": TOKENS, "shape": list(logits.shape), "text_model_of": "gemma3/1b",
        "nmse_vs_text_model": differs, "vision_config": vision_config, "versions": versions(),
    })
    print_summary(out, logits, differs)


def main():
    if len(sys.argv) == 3 and sys.argv[2] == "multimodal":
        make_multimodal()
        return
    if len(sys.argv) != 2:
        sys.exit("usage: make-gemma-fixture.py LLAMA_CPP_DIR [multimodal]")
    for (family, variant), config_kwargs in VARIANTS.items():
        make(family, variant, config_kwargs, sys.argv[1])


if __name__ == "__main__":
    main()
