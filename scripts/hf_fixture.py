"""Helpers shared by the make-*-fixture.py scripts, which build tiny random reference checkpoints with
transformers and peft (the models, their logits and a random LoRA adapter) for our Rust tests to convert
to GGUF and compare llama.cpp against. Not run by itself: the scripts import it (running them as
`python scripts/make-...-fixture.py` puts this folder on sys.path).
"""
import copy
import json
import math
import os
import shutil
import sys

import peft
import safetensors
import torch
import transformers
from peft import LoraConfig, get_peft_model
from safetensors import safe_open


def versions():
    """The library versions recorded in reference.json."""
    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "safetensors": safetensors.__version__, "peft": peft.__version__,
            "python": sys.version.split()[0]}


def reinit(model):
    """Weights with magnitudes that make the logits vary; a tied lm_head keeps the embedding's values."""
    seen = set()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Embedding):
                module.weight.uniform_(-0.5, 0.5)
                seen.add(id(module.weight))
            elif isinstance(module, torch.nn.Linear):
                if id(module.weight) not in seen:
                    bound = 1.0 / math.sqrt(module.in_features)
                    module.weight.uniform_(-bound, bound)
                    seen.add(id(module.weight))
                if module.bias is not None:
                    module.bias.uniform_(-0.1, 0.1)
            elif isinstance(module, torch.nn.LayerNorm):
                module.weight.uniform_(0.9, 1.1)
                if module.bias is not None:
                    module.bias.uniform_(-0.1, 0.1)
        for p in model.parameters():
            # Round the weights to bf16 (what is stored), and compute with exactly those values in f32.
            p.copy_(p.to(torch.bfloat16).to(torch.float32))


def logits_of(model, tokens):
    """The model's logits for one sequence of tokens, f32, [n_tokens, vocab]."""
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].to(torch.float32).contiguous()


def nmse(values, reference):
    """How far `values` are from `reference`: the squared error over the reference's squared norm."""
    return float(((values - reference) ** 2).sum() / (reference**2).sum())


def layers_nmse(model, tokens, logits):
    """How much the decoder layers of a Llama-layout model (model.embed_tokens, model.norm, lm_head) move
    its `logits` for `tokens`: their nmse against the logits with every layer skipped, to show that the
    layers matter, not only the embeddings."""
    with torch.no_grad():
        skipped = model.lm_head(model.model.norm(model.model.embed_tokens(torch.tensor(tokens))))
    return nmse(skipped, logits)


def write_f32(tensor, path):
    """Writes a tensor as raw f32 little-endian."""
    tensor.numpy().astype("<f4").tofile(path)


def save_bf16(model, out):
    """Writes out/config.json and out/model.safetensors (bf16) as save_pretrained writes them, from a bf16
    copy: casting the model itself to bf16 would also round the rotary inv_freq buffer, which casting back
    to f32 does not undo, so logits computed after a bf16 round trip would carry bf16 RoPE frequencies."""
    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, "hf-tmp")
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(tmp, safe_serialization=True)
    for keep in ["config.json", "model.safetensors"]:
        os.replace(os.path.join(tmp, keep), os.path.join(out, keep))
    shutil.rmtree(tmp)  # generation_config.json and anything else
    os.chmod(os.path.join(out, "model.safetensors"), 0o644)  # safetensors writes it 0600


def make_adapter(out, model, tokens, base_logits, adapter, seed):
    """A random PEFT LoRA adapter (LoraConfig(**adapter)) on an f32 copy of the model (get_peft_model wraps
    the model it is given in place): lora_A as PEFT initialises it (global RNG re-seeded with seed), lora_B,
    which PEFT starts at zero, uniform in +-0.05 from a generator seeded with seed + 1. Writes out/adapter/
    and out/logits-adapter.bin; returns the nmse by which the adapter moves the logits, their argmax per
    token, and the PeftModel."""
    torch.manual_seed(seed)  # lora_A's kaiming init uses the global RNG
    lora = LoraConfig(**adapter, lora_dropout=0.0, task_type="CAUSAL_LM")
    pm = get_peft_model(copy.deepcopy(model), lora).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:  # PEFT starts B at zero, which would make the adapter a no-op
                p.uniform_(-0.05, 0.05, generator=g)
    adir = os.path.join(out, "adapter")
    if os.path.isdir(adir):
        shutil.rmtree(adir)
    pm.save_pretrained(adir)
    for extra in ["README.md"]:
        path = os.path.join(adir, extra)
        if os.path.exists(path):
            os.remove(path)
    # PEFT keeps target_modules as a set, whose order follows the string hash seed: sort it, writing the
    # file as PEFT does (indent 2, sorted keys, no final newline).
    cpath = os.path.join(adir, "adapter_config.json")
    with open(cpath) as f:
        cfg = json.load(f)
    cfg["target_modules"] = sorted(cfg["target_modules"])
    with open(cpath, "w") as f:
        f.write(json.dumps(cfg, indent=2, sort_keys=True))
    os.chmod(os.path.join(adir, "adapter_model.safetensors"), 0o644)
    logits = logits_of(pm, tokens)
    with torch.no_grad(), pm.disable_adapter():
        without = pm(torch.tensor([tokens])).logits[0]
    assert torch.equal(without, base_logits), "the f32 copy no longer computes the base logits"
    write_f32(logits, os.path.join(out, "logits-adapter.bin"))
    moved = nmse(logits, base_logits)
    return moved, logits.argmax(-1).tolist(), pm


def write_reference(out, reference):
    """Writes `reference` as out/reference.json (indent 2, a final newline)."""
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(reference, f, indent=2)
        f.write("\n")


def print_summary(out, logits, moved):
    """Prints what was written: the logits' spread, how much the layers move them, and the checkpoint's
    tensors with their dtypes and shapes."""
    print(f"wrote {out}: logits {tuple(logits.shape)}, std {logits.std().item():.3f}, "
          f"layers move them by nmse {moved:.3f}, argmax {logits.argmax(-1).tolist()}")
    with safe_open(os.path.join(out, "model.safetensors"), "pt") as st:
        for name in sorted(st.keys()):
            t = st.get_slice(name)
            print(f"  {name} {t.get_dtype()} {t.get_shape()}")



def sharpen(model, scale):
    """Scales every q_proj and k_proj weight by `scale` (rounded to bf16 again, as stored): at transformers'
    initialisation attention is nearly uniform, and a wrong rope or mask moves the logits by under 1%."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.copy_((p * scale).to(torch.bfloat16).to(torch.float32))


def llama_cpp_convert(out, llama_cpp, tokenizer_files):
    """Runs llama.cpp's own converter (LLAMA_CPP/convert_hf_to_gguf.py, with its gguf-py) on a copy of the
    checkpoint in out/ (config.json, model.safetensors) with `tokenizer_files` beside it, writing
    out/llama-cpp-f32.gguf."""
    import subprocess
    work = os.path.join(out, "converter-input")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    for name in ["config.json", "model.safetensors"]:
        shutil.copy(os.path.join(out, name), work)
    for path in tokenizer_files:
        shutil.copy(path, work)
    env = dict(os.environ, PYTHONPATH=os.path.join(llama_cpp, "gguf-py"))
    subprocess.run([sys.executable, os.path.join(llama_cpp, "convert_hf_to_gguf.py"), work, "--outfile",
                    os.path.join(out, "llama-cpp-f32.gguf"), "--outtype", "f32"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    shutil.rmtree(work)
