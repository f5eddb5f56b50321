"""Can the decoder's backbone learn qa1's binding at all, with no memory and no noise? A bare causal LM (the small
GPT-2 or Llama of `rmt train --architecture decoder`, the MiniLM vocabulary) trained on qa1 stories laid end to
end, the question and answer after them; prints the exact-match accuracy of held-out stories every 100 steps.

    .venv/bin/python scripts/binding_diagnostic.py --backbone gpt2 --stories two --steps 1000

--stories: `any` the generator's qa1 stories (2 to 10 facts, people move again), `unique` 2 to 4 people placed
once each (binding without "latest"), `two` two people placed once each (the smallest binding task: a model
that only learned "one of the places" scores 50%). --every-person adds every placed person's question and answer
to training samples (held-out samples keep one). --induction-steps N first trains N steps on repeated random
token sequences (the loss on the repeat), the task that forms copying heads in small transformers.
--backbone minilm starts from the pretrained all-MiniLM-L6-v2 weights run as a causal LM (sizes ignored);
--lm-loss adds the next-token loss on every token of the stories.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import torch
from torch.nn import functional as F

from rmt_core import babi
from rmt_core.babilong import World, generate_story

MAX_TOKENS = 160


def story(rng: random.Random, kind: str) -> babi.BabiItem:
    """One qa1 item: the generator's (any), or people placed once each (unique: 2 to 4, two: 2)."""
    if kind == "any":
        return generate_story("qa1", rng)
    people = rng.sample(list(babi.PEOPLE), 2 if kind == "two" else rng.randint(2, 4))
    facts = [f"{p} {rng.choice(babi.MOVE_VERBS)} to the {rng.choice(babi.PLACES)}." for p in people]
    question = f"Where is {rng.choice(people)}?"
    world = World()
    for fact in facts:
        world.read(fact)
    return babi.BabiItem(facts, question, world.answer(question))


class Samples:
    def __init__(self, tokenizer, kind: str):
        self.tokenizer, self.kind, self.cache = tokenizer, kind, {}

    def ids(self, text: str) -> list[int]:
        if text not in self.cache:
            self.cache[text] = self.tokenizer(" " + text, add_special_tokens=False)["input_ids"]
        return self.cache[text]

    def sample(self, rng: random.Random, every_person: bool) -> tuple[list[int], list[int]]:
        """(ids padded to MAX_TOKENS, the positions of the answers' first tokens)."""
        item = story(rng, self.kind)
        ids = [t for fact in item.facts for t in self.ids(fact)]
        pairs = [(item.question, item.answer)]
        if every_person:
            world = World()
            for fact in item.facts:
                world.read(fact)
            pairs += [(f"Where is {p}?", place) for p, place in world.person.items() if f"Where is {p}?" != item.question]
        targets = []
        for question, answer in pairs:
            ids += self.ids(question)
            targets.append(len(ids))
            ids += self.ids(answer)
        return ids[:MAX_TOKENS] + [0] * (MAX_TOKENS - len(ids)), [t for t in targets if t < MAX_TOKENS]

    def batch(self, rng: random.Random, size: int, every_person: bool):
        rows = [self.sample(rng, every_person) for _ in range(size)]
        return torch.tensor([r[0] for r in rows]), [r[1] for r in rows]


def answer_loss(head, body, ids: torch.Tensor, targets: list[list[int]], lm_loss: bool = False) -> torch.Tensor:
    """Cross-entropy of each answer's first token, read from the hidden state before it (no full-vocab logits);
    with lm_loss, plus the mean next-token loss over every other token of the text (padding left out)."""
    hidden = body(ids).last_hidden_state
    rows = torch.tensor([b for b, ts in enumerate(targets) for _ in ts])
    cols = torch.tensor([t for ts in targets for t in ts])
    loss = F.cross_entropy(head(hidden[rows, cols - 1]), ids[rows, cols])
    if lm_loss:
        keep = ids[:, 1:] != 0
        loss = loss + F.cross_entropy(head(hidden[:, :-1][keep]), ids[:, 1:][keep])
    return loss


def backbone(name: str, vocab_size: int, hidden_size: int, layers: int, heads: int):
    """(model, body, head): a small GPT-2 or Llama from scratch, or `minilm`: the pretrained all-MiniLM-L6-v2
    weights run as a causal LM (BERT's decoder mode; its prediction head is new)."""
    from transformers import GPT2LMHeadModel, LlamaForCausalLM

    from rmt_core.decoder import minilm_causal, small_gpt2_config, small_llama_config

    if name == "minilm":
        model = minilm_causal()
        return model, model.bert, model.cls
    make = small_llama_config if name == "llama" else small_gpt2_config
    model = (LlamaForCausalLM if name == "llama" else GPT2LMHeadModel)(make(vocab_size, hidden_size, layers, heads))
    return model, (model.model if name == "llama" else model.transformer), model.lm_head


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", choices=("gpt2", "llama", "minilm"), default="gpt2")
    parser.add_argument("--stories", choices=("any", "unique", "two"), default="two")
    parser.add_argument("--every-person", action="store_true")
    parser.add_argument("--lm-loss", action="store_true", help="also train next-token prediction on the stories")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--induction-steps", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--val-samples", type=int, default=256)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if min(args.steps, args.batch_size, args.val_samples, args.eval_every) < 1 or args.induction_steps < 0:
        print("binding_diagnostic: error: give positive --steps, --batch-size, --val-samples and --eval-every",
              file=sys.stderr)
        return 1
    from transformers import AutoTokenizer

    from rmt_core.model import minilm_dir

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)
    model, body, head = backbone(args.backbone, len(tokenizer), args.hidden_size, args.layers, args.heads)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 100))
    data = Samples(tokenizer, args.stories)
    val_ids, val_targets = data.batch(random.Random(10**6 + args.seed), args.val_samples, every_person=False)
    started = time.time()

    def step(loss: torch.Tensor) -> None:
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        warmup.step()

    generator = torch.Generator().manual_seed(args.seed)
    for n in range(1, args.induction_steps + 1):
        half = torch.randint(2000, len(tokenizer), (args.batch_size, 40), generator=generator)
        ids = torch.cat([half, half], dim=1)
        hidden = body(ids).last_hidden_state
        loss = F.cross_entropy(head(hidden[:, 40:-1]).flatten(0, 1), ids[:, 41:].flatten())
        step(loss)
        if n % args.eval_every == 0:
            print(f"induction step {n}: loss {loss.item():.3f} ({time.time() - started:.0f} s)", flush=True)
    rng = random.Random(args.seed)
    for n in range(1, args.steps + 1):
        ids, targets = data.batch(rng, args.batch_size, args.every_person)
        loss = answer_loss(head, body, ids, targets, args.lm_loss)
        step(loss)
        if n % args.eval_every == 0:
            with torch.no_grad():
                hidden = body(val_ids).last_hidden_state
                cols = torch.tensor([ts[0] for ts in val_targets])
                rows = torch.arange(len(cols))
                right = (head(hidden[rows, cols - 1]).argmax(-1) == val_ids[rows, cols]).float().mean()
            print(f"step {n}: training loss {loss.item():.3f}, held-out exact match {right.item():.3f} "
                  f"({time.time() - started:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
