#!/usr/bin/env python3
"""The peer of `gguftune finetune` in scripts/bench-peers.sh: Hugging Face PEFT LoRA training, fp32
on the CPU, with the settings gguftune uses there.

    peft_train.py MODEL_DIR DATA_JSONL --steps N --batch B --ctx C --threads T

- model: transformers' AutoModelForCausalLM from MODEL_DIR in float32 (the checkpoint is bf16);
- LoRA: r 16, alpha 32, dropout 0, on q,k,v,o,gate,up,down (PEFT's LoraConfig);
- data: `{"text"}` rows, each tokenized with the model's tokenizer with BOS before and EOS after
  (as gguftune adds them), cut to C tokens; rows of a batch must have the same length (the
  benchmark's rows are all exactly C tokens, so no padding is needed on either side);
- loss: transformers' causal-LM loss over every next token, the mean over the batch;
- optimizer: torch AdamW, lr 2e-4, betas (0.9, 0.999), weight decay 0, gradient clipping at 1.0,
  one optimizer step per batch, as `gguftune finetune --grad-accum 1` does.

Prints one JSON line: steps, tokens (all steps), tokens_per_second over the steps after the first
(the first is warm-up, excluded as it is on gguftune's side), per-step seconds and losses.
"""
import argparse
import json
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--ctx", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(42)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    rows = []
    with open(args.data) as f:
        for line in f:
            ids = tokenizer(json.loads(line)["text"], add_special_tokens=False)["input_ids"]
            rows.append(([tokenizer.bos_token_id] + ids + [tokenizer.eos_token_id])[: args.ctx])
    need = args.steps * args.batch
    if len(rows) < need:
        raise SystemExit(f"{args.data}: {len(rows)} rows, {need} needed for {args.steps} steps of {args.batch}")

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=2e-4, betas=(0.9, 0.999), weight_decay=0.0)

    seconds, losses, tokens = [], [], []
    for step in range(args.steps):
        batch = rows[step * args.batch:(step + 1) * args.batch]
        if len({len(r) for r in batch}) != 1:
            raise SystemExit(f"{args.data}: rows of step {step + 1} differ in length; the benchmark needs equal rows")
        input_ids = torch.tensor(batch, dtype=torch.long)
        start = time.perf_counter()
        loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - start)
        losses.append(loss.item())
        tokens.append(input_ids.numel())
    timed_tokens, timed_seconds = sum(tokens[1:]), sum(seconds[1:])
    print(json.dumps({
        "steps": args.steps, "tokens": sum(tokens), "tokens_per_second": timed_tokens / timed_seconds,
        "step_seconds": seconds, "losses": losses,
        "trainable_parameters": sum(p.numel() for p in trainable),
    }))


if __name__ == "__main__":
    main()
