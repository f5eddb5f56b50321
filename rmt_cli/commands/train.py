"""rmt train: curriculum training (paper section 3) with per-stage best checkpoints and --resume."""

from __future__ import annotations

import argparse
import sys

from rmt_cli.commands import SEED, check_output_folder, real, whole, whole_list

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
    parser.add_argument("--segment-size", type=whole(4, 2**20), default=64, help="tokens per segment (paper: 499)")
    parser.add_argument("--stages", default=None, help="full curriculum as NxS pairs, e.g. 1x16,2x32,2x64,3x64; L-HxS draws a number "
                        "of segments from L to H for each training batch (validated at H), e.g. 7x64,1-64x64")
    parser.add_argument("--backbone", default="small",
                        help="encoder: 'small' (BERT from scratch), 'minilm', or a local model folder; decoder: 'small' "
                             "or 'gpt2-small' (GPT-2 from scratch), 'llama-small' (Llama from scratch), 'minilm' (the "
                             "pretrained all-MiniLM-L6-v2 as a causal LM), or a local causal-LM folder. Sizes of the "
                             "from-scratch ones from --hidden-size, --layers, --heads")
    parser.add_argument("--init-from", default=None,
                        help="start from this checkpoint's weights (continue or fine-tune a trained model)")
    parser.add_argument("--hidden-size", type=whole(2, 8192), default=128, help="(small backbone; default 128)")
    parser.add_argument("--layers", type=whole(1, 64), default=4, help="(small backbone; default 4)")
    parser.add_argument("--heads", type=whole(1, 256), default=4, help="(small backbone; default 4)")
    parser.add_argument("--mem", type=whole(1, 4096), default=10, help="memory tokens (paper: 10)")
    parser.add_argument("--dropout", type=real(0.0, below=1.0), default=0.0,
                        help="dropout of the answer head and of a backbone built here: 'small', and the decoder's "
                             "(default 0); an encoder's pretrained backbone ('minilm', a folder) keeps its own "
                             "(MiniLM: 0.1)")
    parser.add_argument("--batch-size", type=whole(1, 65536), default=32, help="global batch, split across processes")
    parser.add_argument("--accumulate", type=whole(1, 65536), default=1,
                        help="run each process's share of the batch in this many parts, one after another, and sum "
                             "their gradients: the same update in less activation memory, for long "
                             "inputs that do not fit (default 1)")
    parser.add_argument("--lr", type=real(above=0.0, maximum=10.0), default=1e-3)
    parser.add_argument("--weight-decay", type=real(0.0, 10.0), default=0.01)
    parser.add_argument("--warmup-steps", type=whole(0, 10**9), default=50)
    parser.add_argument("--max-steps", type=whole(1, 10**9), default=1000, help="step budget of each stage")
    parser.add_argument("--min-steps", type=whole(0, 10**9), default=0, help="steps of each stage before it may end")
    parser.add_argument("--eval-every", type=whole(1, 10**9), default=50)
    parser.add_argument("--val-samples", type=whole(1, 1_000_000), default=256)
    parser.add_argument("--hard-fraction", type=real(0.0, 1.0), default=0.0,
                        help="reason: this share of training samples is drawn from questions that place names "
                             "alone cannot answer; qa1/qa2: from stories whose last fact does not give the answer "
                             "(validation keeps the natural mix; default 0)")
    parser.add_argument("--chain-fraction", type=real(0.0, 1.0), default=0.0,
                        help="reason: this share of training samples is drawn from questions that one fact answers "
                             "directly (only one fact names the asked place; the other fact's far place is the "
                             "answer to tell apart), disjoint from --hard-fraction's (validation keeps the natural "
                             "mix; default 0)")
    parser.add_argument("--every-person", action="store_true",
                        help="qa1: training samples close with a question and answer for every person the story "
                             "places, not only the asked one (more answers to learn from; validation and eval keep "
                             "one question)")
    parser.add_argument("--late-facts", type=real(0.0, 1.0), default=0.0,
                        help="detect, reason: this share of training samples puts its facts in the last 8 segments, "
                             "after a long stretch of noise (with random-length stages: a fact written late in a "
                             "long input; validation keeps facts anywhere; default 0)")
    parser.add_argument("--prior-facts", type=real(0.0, 1.0), default=0.0,
                        help="detect: this share of training samples whose fact is not in the first segment also gets "
                             "the fact of another story in an earlier segment, so that a fact still writes into a "
                             "memory that already holds one (validation keeps one fact; default 0)")
    parser.add_argument("--prior-decoys", type=real(0.0, 1.0), default=0.0,
                        help="detect: this share of training samples whose fact is not in the first segment also gets "
                             "one decoy in an earlier segment, a fact-like sentence about someone who is not a bAbI "
                             "person (\"Why couldn't the baker use his own bathroom?\"), as noise: memory should "
                             "leave it alone and still take the fact (validation has none; default 0)")
    parser.add_argument("--prior-asked", type=real(0.0, 1.0), default=0.0,
                        help="detect, with --prior-facts: this share of the samples whose earlier fact is about "
                             "someone else asks about that person, so both facts are kept, each with its person "
                             "(default 0)")
    parser.add_argument("--facts-behind", type=real(0.0, 1.0), default=0.0,
                        help="reason: this share of training samples of 2 or more segments puts both facts before "
                             "the question's segment, so memory alone carries them (validation keeps facts "
                             "anywhere; default 0)")
    parser.add_argument("--keep", choices=("best", "last"), default="best",
                        help="the model each stage keeps: its best on validation (default), or the weights of its "
                             "last evaluation, for runs whose validation data does not track what they train for")
    parser.add_argument("--noise-stillness", type=real(0.0, 1e6), default=0.0,
                        help="encoder: add this weight times the memory's mean relative squared change over the "
                             "training segments that hold no fact (noise; the question's segment aside), so noise "
                             "learns to leave memory as it is and only facts write (default 0)")
    parser.add_argument("--noise-anchor", type=real(0.0, 1e6), default=0.0,
                        help="encoder: add this weight times the memory's mean relative squared distance, after "
                             "each of those segments that follows a fact, from the memory the last segment with a "
                             "fact left: --noise-stillness weighs each step, this where the steps have taken memory "
                             "(default 0)")
    parser.add_argument("--answer-hold", type=real(0.0, 1e6), default=0.0,
                        help="encoder: add this weight times how far the question's answer, read from the memory "
                             "left by noise after a fact, moves from the answer read from the memory that fact's "
                             "segment left (KL divergence; read after --hold-reads noise segments a batch): "
                             "--noise-anchor holds all of memory, this only what it tells the question (default 0)")
    parser.add_argument("--hold-reads", type=whole(1, 1024), default=None,
                        help="with --answer-hold: after how many noise segments of each batch the question is read, "
                             "spread evenly over those the gradient reaches (default 8)")
    parser.add_argument("--answer-step", type=real(0.0, 1e6), default=0.0,
                        help="encoder: add this weight times how far one noise segment after a fact moves the "
                             "question's answer (KL divergence of the answer read from the memory it leaves from the "
                             "answer read from the memory it read; after --step-reads noise segments a batch): "
                             "--answer-hold weighs the whole way from the fact, where the gradient reaches; this "
                             "each step, on every segment of the input (default 0)")
    parser.add_argument("--step-reads", type=whole(1, 1024), default=None,
                        help="with --answer-step: after how many noise segments of each batch the question is read, "
                             "spread evenly over all of them (default 8)")
    parser.add_argument("--answer-restore", type=real(0.0, 1e6), default=0.0,
                        help="encoder: add this weight times how far the question's answer, after one noise "
                             "segment run on memory pushed further along its drift since the last fact (see "
                             "--restore-scale), stays from the answer read right after that fact (KL divergence; "
                             "after --restore-reads noise segments a batch): --answer-step asks a segment not to "
                             "move the answer, this asks it to bring a drifted answer back (default 0)")
    parser.add_argument("--restore-reads", type=whole(1, 1024), default=None,
                        help="with --answer-restore: how many noise segments of each batch run again, spread evenly "
                             "over all of them (default 8)")
    parser.add_argument("--restore-scale", type=real(0.0, 1e3), default=None,
                        help="with --answer-restore: the memory m a segment read is pushed to m + SCALE (m - the "
                             "memory the last fact's segment left) (default 1)")
    parser.add_argument("--fact-write", type=real(0.0, 1e6), default=0.0,
                        help="encoder: add this weight times how far a fact's segment falls short of moving memory "
                             "by --fact-write-margin (mean over the training segments that hold a fact), so that "
                             "with --noise-stillness the model tells facts from noise instead of writing nothing "
                             "(default 0)")
    parser.add_argument("--fact-write-margin", type=real(maximum=1e3, above=0.0), default=1.0,
                        help="the relative squared change of memory a fact's segment should at least make "
                             "(a fact writes about 2 in the shipped detect; default 1)")
    parser.add_argument("--fact-recall", type=real(0.0, 1e6), default=0.0,
                        help="reason, encoder: add this weight times the loss of a linear read-out of the memory "
                             "that the question's segment reads, trained beside the model, that names the places and "
                             "direction of each fact memory carries there; the read-out is not saved, so the "
                             "checkpoint is the same RMT (default 0)")
    parser.add_argument("--fact-recall-target", choices=("facts", "table"), default="facts",
                        help="what --fact-recall's read-out names: facts, the subject, direction and reference of "
                             "the fact written first and of the one written second; table, the answer (or none) to "
                             "each of the 24 questions 'What is D of the P?' (default facts)")
    parser.add_argument("--fact-recall-at", choices=("question", "every"), default="question",
                        help="which memory --fact-recall's read-out reads: question, the memory the question's "
                             "segment reads; every, the memory each segment reads, asked for the facts written "
                             "before it, so each fact is asked for right after it is written (default question)")
    parser.add_argument("--write-attention", type=real(0.0, 100.0), default=0.0,
                        help="reason (encoder): add W times -log of the most attention any memory slot's head of "
                             "the last layer pays each fact's direction word as the fact's segment is read, the "
                             "one token that binds the fact's places and direction (default 0)")
    parser.add_argument("--question-read", type=real(0.0, 100.0), default=0.0,
                        help="reason (encoder): add W times -log of the most attention any head of the last layer "
                             "pays, from the question's [CLS], to the memory slot that took the direction word of "
                             "the fact that answers the question, in samples where memory alone carries that fact "
                             "(default 0)")
    parser.add_argument("--slot-recall", type=real(0.0, 100.0), default=0.0,
                        help="reason (encoder): add W times the loss of one linear read-out, trained beside the "
                             "model and not saved, that must name from the memory slot that took a fact (as "
                             "--question-read finds it) the fact's subject and direction at every later segment, so "
                             "that a slot keeps its fact in one code from the write to the question (default 0)")
    parser.add_argument("--deep-memory", type=real(0.0, 1.0), default=0.0,
                        help="encoder: this share of training samples starts from the memory that up to "
                             "--deep-segments segments of training noise leave (a pool of noise streams run by "
                             "the model as it trains), so facts are written and held in the states long inputs "
                             "reach; validation starts from the initial memory (default 0)")
    parser.add_argument("--deep-segments", type=whole(1, 2**20), default=1024,
                        help="the deepest noise a --deep-memory state has read (default 1024)")
    parser.add_argument("--far-facts", type=real(0.0, 1.0), default=0.0,
                        help="encoder: this share of training samples asks about facts written up to "
                             "--far-segments segments before the sample (a pool of fact-then-noise streams run by "
                             "the model as it trains), so memory learns to carry facts further than the stage's "
                             "length; with --noise-anchor or --answer-hold such a sample is held to the memory its "
                             "facts wrote; validation keeps the stage's own samples (default 0)")
    parser.add_argument("--far-segments", type=whole(1, 2**20), default=1024,
                        help="the most noise a --far-facts stream reads after its facts (default 1024)")
    parser.add_argument("--quiz", action="store_true",
                        help="qa1: after every fact of a training story, a question and answer about another person "
                             "placed so far (their place at that point), so binding people to places pays from the "
                             "first steps (validation and eval keep one question at the end)")
    parser.add_argument("--question-form", choices=("any", "of", "is"), default="any",
                        help="reason: train and validate on questions of one form only, 'of' (What is D of the P?) "
                             "or 'is' (What is the P D of?), a curriculum step before the full mix (default any)")
    parser.add_argument("--val-multiples", type=whole_list(1, 64), default=[1],
                        help="validate at these multiples of each stage's segment count, pooled (such as 1,2: "
                             "keep the model that also holds at twice its length; default 1)")
    parser.add_argument("--target-accuracy", type=real(above=0.0, maximum=1.0), default=0.99,
                        help="a stage ends after --patience evaluations at this accuracy")
    parser.add_argument("--patience", type=whole(1, 10**6), default=2)
    parser.add_argument("--plateau", type=whole(1, 10**6), default=8,
                        help="... or after this many evaluations without improvement")
    parser.add_argument("--grad-clip", type=real(above=0.0, maximum=1e6), default=1.0)
    parser.add_argument("--skip-grad-norm", type=real(above=0.0, maximum=1e12), default=None,
                        help="skip the update of a batch whose gradient norm before clipping is above this (or not "
                             "finite); the learning-rate schedule still advances. Off by default")
    parser.add_argument("--length-draw", choices=("uniform", "log"), default="uniform",
                        help="how a random-length stage (L-HxS) draws each batch's number of segments: uniform over "
                             "L..H, or log (every scale equally often: as many batches of 1-2 segments as of "
                             "512-1,024, at a fraction of uniform's cost)")
    parser.add_argument("--bptt-depth", type=whole(1, 2**24), default=None,
                        help="backpropagate through the last k segments only (decoder: the last k memory transitions)")
    parser.add_argument("--recompute", action="store_true",
                        help="recompute activations in the backward pass instead of keeping them, with the same "
                             "gradients: encoder, the segments before the --bptt-depth cut that a local term "
                             "(--noise-stillness, --answer-step, ...) reaches (those no term reaches run without a "
                             "graph either way); decoder, every segment. Training memory nearly flat in the input's "
                             "length, 1.1-1.3x the time")
    parser.add_argument("--loss-on", choices=("last", "all"), default="last",
                        help="last: the answer only (encoder: the head at the last segment; decoder: the answer "
                             "tokens); all: every segment's head (encoder) or every next token (decoder)")
    parser.add_argument("--seed", type=SEED, default=0)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when present)")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="bf16 autocast (default: on CUDA)")
    parser.add_argument("--babi-file", default=None)
    parser.add_argument("--babi-dir", default=None)
    parser.add_argument("--noise-file", default=None,
                        help="noise text, one passage a line; or builtin (default), builtin:pydoc, builtin:vocab "
                             "(built-in sentences plus words from the whole tokenizer vocabulary), builtin:decoys "
                             "(builtin:vocab plus sentences that look like facts and are not: other people going "
                             "to rooms, someone's office; about one sentence in five), builtin:decoys:P (a decoy with "
                             "probability P, such as 0.01); NOISE+decoys:P or NOISE+questions:P mix those decoys, or "
                             "questions about other people and rooms, into any noise file or built-in name")
    parser.add_argument("--save-dtype", choices=("float32", "float16", "bfloat16"), default="float16")
    parser.add_argument("--max-shard-mib", type=real(above=0.0, maximum=2**20), default=None,
                        help="split weights into shards of this size")
    parser.add_argument("--threads", type=whole(1, 4096), default=None, help="CPU threads for torch")
    parser.add_argument("--time-budget-s", type=real(above=0.0), default=None,
                        help="stop after the stage running when this many seconds have passed")
    parser.add_argument("--stop-at-step", type=whole(1, 10**9), default=None,
                        help="end the run after the evaluation at this step, its learning rate still scheduled for "
                             "--max-steps: the model a longer run had at that step (a multiple of --eval-every)")
    parser.add_argument("--stage-eval-segments", type=whole_list(1, 2**24, allow_empty=True), default=[],
                        help="evaluate each stage's best at these lengths (Figure 5)")
    parser.add_argument("--stage-eval-samples", type=whole(1, 1_000_000), default=200)
    parser.add_argument("--stage-eval-babi-dir", default=None, help="bAbI folder whose test split the stage evaluation uses")
    parser.add_argument("--stage-eval-noise-file", default=None)
    parser.add_argument("--resume", action="store_true", help="continue a stopped run in --out where it left off")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from rmt_core.checkpoint import portable_command
    from rmt_core.errors import TrainError
    from rmt_core.train import TrainConfig, check_backbone, parse_stages, train

    if args.backbone == "small" and args.hidden_size % args.heads:
        raise TrainError(f"--hidden-size {args.hidden_size} must be a multiple of --heads {args.heads}")
    check_output_folder(args.out, "--out", TrainError)
    check_backbone(args.backbone, args.architecture)
    from rmt_core.babilong import GENERATIVE_TASKS

    task = args.task or ("qa1" if args.architecture == "decoder" else "memorize")
    if (task in GENERATIVE_TASKS) != (args.architecture == "decoder"):
        wanted = "decoder" if task in GENERATIVE_TASKS else "encoder"
        raise TrainError(f"task {task} is for the {wanted}; give --architecture {wanted} or another --task")
    if args.late_facts and task not in ("detect", "reason"):
        raise TrainError(f"--late-facts is for detect and reason, whose facts land anywhere, not {task}; drop it")
    if args.prior_asked and not args.prior_facts:
        raise TrainError("--prior-asked asks about the earlier of two facts; give --prior-facts too")
    if args.prior_facts and task != "detect":
        raise TrainError(f"--prior-facts is for detect, whose question needs one fact, not {task}; drop it")
    if args.prior_decoys and task != "detect":
        raise TrainError(f"--prior-decoys is for detect, whose one fact a decoy could displace, not {task}; drop it")
    if args.chain_fraction and task != "reason":
        raise TrainError(f"--chain-fraction is for reason, whose questions two facts can chain, not {task}; drop it")
    if args.chain_fraction + args.hard_fraction > 1 + 1e-9:
        raise TrainError("--chain-fraction and --hard-fraction draw from disjoint questions; give two shares that "
                         "sum to 1 or less")
    if args.facts_behind and task != "reason":
        raise TrainError(f"--facts-behind is for reason, whose question needs two facts, not {task}; drop it")
    if args.fact_recall_target != "facts" and not args.fact_recall:
        raise TrainError("--fact-recall-target chooses what --fact-recall's read-out names; give --fact-recall too")
    if args.fact_recall_at != "question" and not args.fact_recall:
        raise TrainError("--fact-recall-at chooses where --fact-recall's read-out reads; give --fact-recall too")
    if args.hold_reads is not None and not args.answer_hold:
        raise TrainError("--hold-reads sets where --answer-hold reads the question; give --answer-hold too")
    if args.step_reads is not None and not args.answer_step:
        raise TrainError("--step-reads sets where --answer-step reads the question; give --answer-step too")
    for flag, value in (("--restore-reads", args.restore_reads), ("--restore-scale", args.restore_scale)):
        if value is not None and not args.answer_restore:
            raise TrainError(f"{flag} shapes --answer-restore's term; give --answer-restore too")
    if args.deep_memory and args.architecture != "encoder":
        raise TrainError("--deep-memory is for the encoder (the paper's RMT); drop it for a decoder")
    for flag, value in (("--noise-stillness", args.noise_stillness), ("--noise-anchor", args.noise_anchor),
                        ("--answer-hold", args.answer_hold), ("--answer-step", args.answer_step),
                        ("--answer-restore", args.answer_restore),
                        ("--fact-write", args.fact_write)):
        if value and args.architecture != "encoder":
            raise TrainError(f"{flag} is for the encoder (the paper's RMT); drop it for a decoder")
    stages = parse_stages(args.stages, args.segments, args.segment_size)
    cfg = TrainConfig(
        task=task, architecture=args.architecture, out=args.out, stages=stages, backbone=args.backbone, init_from=args.init_from, hidden_size=args.hidden_size,
        num_layers=args.layers, num_heads=args.heads, num_mem_tokens=args.mem, dropout=args.dropout,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
        max_steps=args.max_steps, min_steps=args.min_steps, eval_every=args.eval_every, val_samples=args.val_samples,
        val_multiples=tuple(args.val_multiples), hard_fraction=args.hard_fraction, chain_fraction=args.chain_fraction, every_person=args.every_person, quiz=args.quiz, late_facts=args.late_facts,
        prior_facts=args.prior_facts, prior_asked=args.prior_asked, prior_decoys=args.prior_decoys, facts_behind=args.facts_behind,
        deep_memory=args.deep_memory, deep_segments=args.deep_segments, far_facts=args.far_facts, far_segments=args.far_segments,
        noise_stillness=args.noise_stillness, noise_anchor=args.noise_anchor, answer_hold=args.answer_hold,
        hold_reads=args.hold_reads or TrainConfig.hold_reads, answer_step=args.answer_step,
        step_reads=args.step_reads or TrainConfig.step_reads, answer_restore=args.answer_restore,
        restore_reads=args.restore_reads or TrainConfig.restore_reads,
        restore_scale=TrainConfig.restore_scale if args.restore_scale is None else args.restore_scale,
        fact_write=args.fact_write, fact_write_margin=args.fact_write_margin, fact_recall=args.fact_recall,
        fact_recall_target=args.fact_recall_target, fact_recall_at=args.fact_recall_at,
        write_attention=args.write_attention,
        question_read=args.question_read, slot_recall=args.slot_recall,
        question_form=None if args.question_form == "any" else args.question_form,
        target_accuracy=args.target_accuracy, keep=args.keep, patience=args.patience, plateau=args.plateau, grad_clip=args.grad_clip, skip_grad_norm=args.skip_grad_norm,
        length_draw=args.length_draw, accumulate=args.accumulate,
        bptt_depth=args.bptt_depth, recompute=args.recompute, loss_on=args.loss_on, seed=args.seed, device=args.device, bf16=args.bf16,
        babi_file=args.babi_file, babi_dir=args.babi_dir, noise_file=args.noise_file, save_dtype=args.save_dtype,
        max_shard_mib=args.max_shard_mib, threads=args.threads, time_budget_s=args.time_budget_s, stop_at_step=args.stop_at_step,
        stage_eval_segments=list(args.stage_eval_segments),
        stage_eval_samples=args.stage_eval_samples, stage_eval_babi_dir=args.stage_eval_babi_dir,
        stage_eval_noise_file=args.stage_eval_noise_file,
        command=portable_command(getattr(args, "_argv", sys.argv[1:])),
    )
    out = train(cfg, resume=args.resume, progress=not args.quiet)
    print(f"trained checkpoint written to {out}")
    return 0
