"""rmt train: curriculum training (paper section 3) with per-stage best checkpoints and --resume."""

from __future__ import annotations

import argparse
import shlex
import sys

HELP = "curriculum training of an RMT checkpoint (1 segment, then one more at a time)"


def add_arguments(parser) -> None:
    parser.add_argument("--task", choices=("memorize", "detect", "reason", "qa1", "qa2"), default=None,
                        help="memorize, detect, reason (encoder; default memorize) or the generative BABILong-style "
                             "qa1, qa2 (decoder; default qa1)")
    parser.add_argument("--architecture", choices=("encoder", "decoder"), default="encoder",
                        help="encoder: the paper's RMT on a BERT-style backbone; decoder: read and write memory "
                             "around a causal LM, the answer generated (default encoder)")
    parser.add_argument("--out", required=True, help="run folder; the final checkpoint is written into it")
    parser.add_argument("--segments", default="1,2,3,4,5,6,7", help="curriculum of segment counts (default 1..7)")
    parser.add_argument("--segment-size", type=int, default=64, help="tokens per segment (paper: 499)")
    parser.add_argument("--stages", default=None, help="full curriculum as NxS pairs, e.g. 1x16,2x32,2x64,3x64")
    parser.add_argument("--backbone", default="small",
                        help="encoder: 'small' (BERT from scratch), 'minilm', or a local model folder; decoder: 'small' "
                             "or 'gpt2-small' (GPT-2 from scratch), 'llama-small' (Llama from scratch), or a local "
                             "causal-LM folder. Sizes from --hidden-size, --layers, --heads")
    parser.add_argument("--init-from", default=None,
                        help="start from this checkpoint's weights (continue or fine-tune a trained model)")
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--mem", type=int, default=10, help="memory tokens (paper: 10)")
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=32, help="global batch, split across processes")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--max-steps", type=int, default=1000, help="step budget of each stage")
    parser.add_argument("--min-steps", type=int, default=0, help="steps of each stage before it may end")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--val-samples", type=int, default=256)
    parser.add_argument("--hard-fraction", type=float, default=0.0,
                        help="reason: this share of training samples is drawn from questions that place names "
                             "alone cannot answer (validation keeps the natural mix; default 0)")
    parser.add_argument("--question-form", choices=("any", "of", "is"), default="any",
                        help="reason: train and validate on questions of one form only, 'of' (What is D of the P?) "
                             "or 'is' (What is the P D of?), a curriculum step before the full mix (default any)")
    parser.add_argument("--val-multiples", default="1",
                        help="validate at these multiples of each stage's segment count, pooled (such as 1,2: "
                             "keep the model that also holds at twice its length; default 1)")
    parser.add_argument("--target-accuracy", type=float, default=0.99, help="a stage ends after --patience evaluations at this accuracy")
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--plateau", type=int, default=8, help="... or after this many evaluations without improvement")
    parser.add_argument("--grad-clip", type=float, default=1.0)
    parser.add_argument("--bptt-depth", type=int, default=None,
                        help="backpropagate through the last k segments only (decoder: the last k memory transitions)")
    parser.add_argument("--loss-on", choices=("last", "all"), default="last",
                        help="last: the answer only (encoder: the head at the last segment; decoder: the answer "
                             "tokens); all: every segment's head (encoder) or every next token (decoder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when present)")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="bf16 autocast (default: on CUDA)")
    parser.add_argument("--babi-file", default=None)
    parser.add_argument("--babi-dir", default=None)
    parser.add_argument("--noise-file", default=None,
                        help="noise text, one passage a line; or builtin (default), builtin:pydoc, builtin:vocab "
                             "(built-in sentences plus words from the whole tokenizer vocabulary)")
    parser.add_argument("--save-dtype", choices=("float32", "float16", "bfloat16"), default="float16")
    parser.add_argument("--max-shard-mib", type=float, default=None, help="split weights into shards of this size")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--time-budget-s", type=float, default=None,
                        help="stop after the stage running when this many seconds have passed")
    parser.add_argument("--stage-eval-segments", default="", help="evaluate each stage's best at these lengths (Figure 5)")
    parser.add_argument("--stage-eval-samples", type=int, default=200)
    parser.add_argument("--stage-eval-babi-dir", default=None, help="bAbI folder whose test split the stage evaluation uses")
    parser.add_argument("--stage-eval-noise-file", default=None)
    parser.add_argument("--resume", action="store_true", help="continue a stopped run in --out where it left off")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from rmt_core.errors import TrainError
    from rmt_core.train import TrainConfig, parse_stages, train

    if args.batch_size < 1 or args.max_steps < 1 or args.eval_every < 1 or args.lr <= 0:
        raise TrainError("--batch-size, --max-steps and --eval-every must be positive and --lr above 0")
    if args.hidden_size % args.heads:
        raise TrainError(f"--hidden-size {args.hidden_size} must be a multiple of --heads {args.heads}")
    from rmt_core.babilong import GENERATIVE_TASKS

    task = args.task or ("qa1" if args.architecture == "decoder" else "memorize")
    if (task in GENERATIVE_TASKS) != (args.architecture == "decoder"):
        wanted = "decoder" if task in GENERATIVE_TASKS else "encoder"
        raise TrainError(f"task {task} is for the {wanted}; give --architecture {wanted} or another --task")
    if args.bptt_depth is not None and args.bptt_depth < 0:
        raise TrainError(f"--bptt-depth must be 0 or more, got {args.bptt_depth}")
    stages = parse_stages(args.stages, args.segments, args.segment_size)
    try:
        val_multiples = tuple(int(x) for x in args.val_multiples.split(",") if x.strip())
    except ValueError:
        val_multiples = ()
    if not val_multiples or min(val_multiples) < 1:
        raise TrainError(f"cannot read --val-multiples {args.val_multiples!r}; give whole numbers such as 1,2")
    cfg = TrainConfig(
        task=task, architecture=args.architecture, out=args.out, stages=stages, backbone=args.backbone, init_from=args.init_from, hidden_size=args.hidden_size,
        num_layers=args.layers, num_heads=args.heads, num_mem_tokens=args.mem, dropout=args.dropout,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
        max_steps=args.max_steps, min_steps=args.min_steps, eval_every=args.eval_every, val_samples=args.val_samples,
        val_multiples=val_multiples, hard_fraction=args.hard_fraction,
        question_form=None if args.question_form == "any" else args.question_form,
        target_accuracy=args.target_accuracy, patience=args.patience, plateau=args.plateau, grad_clip=args.grad_clip,
        bptt_depth=args.bptt_depth, loss_on=args.loss_on, seed=args.seed, device=args.device, bf16=args.bf16,
        babi_file=args.babi_file, babi_dir=args.babi_dir, noise_file=args.noise_file, save_dtype=args.save_dtype,
        max_shard_mib=args.max_shard_mib, threads=args.threads, time_budget_s=args.time_budget_s,
        stage_eval_segments=[int(n) for n in args.stage_eval_segments.split(",") if n.strip()],
        stage_eval_samples=args.stage_eval_samples, stage_eval_babi_dir=args.stage_eval_babi_dir,
        stage_eval_noise_file=args.stage_eval_noise_file,
        command="rmt " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    )
    out = train(cfg, resume=args.resume, progress=not args.quiet)
    print(f"trained checkpoint written to {out}")
    return 0
