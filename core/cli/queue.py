"""``patina queue``: add configs to the training queue, list, reorder and remove them, and run the queue in the
terminal (the same progress output and Ctrl+C handling as ``patina train``)."""

from __future__ import annotations

import argparse
import sys

from patina.core.errors import PatinaError


def register(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("queue", help="a queue of training runs, run one after the other (also in the window)")
    qs = q.add_subparsers(dest="queue_command", metavar="ACTION", required=True)
    a = qs.add_parser("add", help="queue a config (a snapshot: later edits to the file do not change the entry)")
    a.add_argument("config", help="Patina config JSON (a kohya_ss config is imported on the fly)")
    a.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting for this entry (repeatable)")
    a.add_argument("--name", default="", help="the entry's name (default: the config file's name)")
    a.set_defaults(handler=_add)
    qs.add_parser("list", help="the entries with status, time and output").set_defaults(handler=_list)
    r = qs.add_parser("remove", help="remove an entry")
    r.add_argument("id", type=_entry_id)
    r.set_defaults(handler=_remove)
    m = qs.add_parser("move", help="move an entry to position POS (1 = first)")
    m.add_argument("id", type=_entry_id)
    m.add_argument("pos", type=_entry_id, metavar="POS")
    m.set_defaults(handler=_move)
    qs.add_parser("clear", help="remove the finished entries (done, failed, stopped)").set_defaults(handler=_clear)
    t = qs.add_parser("retry", help="let a failed, stopped or done entry run again (a stopped one resumes)")
    t.add_argument("id", type=_entry_id)
    t.set_defaults(handler=_retry)
    n = qs.add_parser("run", help="train the waiting entries one after the other (Ctrl+C stops and saves)")
    n.add_argument("--quiet", action="store_true", help="no progress bar")
    n.set_defaults(handler=_run)


def _entry_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; `patina queue list` shows the ids") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be 1 or more")
    return value


def _queue():
    from patina.core.train.queue import TrainingQueue

    q = TrainingQueue()
    if q.notice:
        print(f"patina: {q.notice}", file=sys.stderr)
    return q


def _add(args) -> int:
    from patina.core.config.files import apply_overrides, read_config

    result = read_config(args.config)
    overridden = {item.partition("=")[0].strip() for item in args.sets}
    bad = [str(p) for p in result.errors if p.key not in overridden]
    if bad:
        raise PatinaError(f"{args.config} has {len(bad)} invalid setting(s); nothing was queued. Fix them in the "
                          "file or with --set key=value:", problems=bad)
    values = apply_overrides(result.values, args.sets)
    entry = _queue().add(values, name=args.name, source=args.config)
    print(f"Queued {entry.id}: {entry.name} (output {entry.config['output_dir']}/{entry.config['output_name']}"
          ".safetensors).")
    return 0


def _list(args) -> int:
    from patina.core.train.queue import time_text

    q = _queue()
    if not q.entries:
        print("The queue is empty. Add a config with `patina queue add CONFIG`.")
        return 0
    rows = [(str(e.id), e.name, e.status, time_text(e), e.output or str(e.config.get("output_dir", "")))
            for e in q.entries]
    head = ("ID", "NAME", "STATUS", "TIME", "OUTPUT")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    for r in [head] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[4])
    for e in q.entries:
        if e.message and e.status in ("failed", "stopped", "interrupted"):
            print(f"{e.id}: {e.message.splitlines()[0]}")
    return 0


def _remove(args) -> int:
    return _done(_queue().remove(args.id), "Removed {id}: {name}.")


def _move(args) -> int:
    q = _queue()
    q.move(args.id, args.pos)
    print(f"Moved {args.id} to position {[e.id for e in q.entries].index(args.id) + 1}.")
    return 0


def _clear(args) -> int:
    print(f"Removed {_queue().clear_finished()} finished entr(y/ies).")
    return 0


def _retry(args) -> int:
    return _done(_queue().requeue(args.id), "{id}: {name} waits again.")


def _done(entry, text: str) -> int:
    print(text.format(id=entry.id, name=entry.name))
    return 0


def _run(args) -> int:
    from patina.core.cli.train import Printer, quiet_libraries, train_until_ctrl_c
    from patina.core.train.queue import QueueLock

    q = _queue()
    if not q.pending():
        print("Nothing waits in the queue. Add a config with `patina queue add CONFIG`.")
        return 0
    quiet_libraries()
    failed = 0
    with QueueLock(q, "`patina queue run`"):
        while (entry := q.load().next_pending()) is not None:
            left = len(q.pending())
            print(f"\n=== Queue: {entry.name} (entry {entry.id}; {left} run(s) to go) ===", flush=True)
            try:
                values, resume = q.begin(entry.id)
            except PatinaError as exc:
                print(f"patina: entry {entry.id} failed: {exc}", file=sys.stderr)
                failed += 1
                continue
            if resume:
                print(f"Continuing from {resume}.")
            try:
                fin = train_until_ctrl_c(values, Printer(args.quiet), resume=resume, overwrite=False)
            except KeyboardInterrupt:  # the second Ctrl+C: nothing was saved, the run can start again
                q.mark(entry.id, "interrupted", message="Aborted with Ctrl+C; it runs again with the queue.")
                raise
            q.end(entry.id, fin)
            print(fin.message, file=sys.stderr if fin.status == "failed" else sys.stdout, flush=True)
            if fin.status == "failed":
                failed += 1
            elif fin.status == "stopped":
                print(f"The queue stopped; {len(q.pending())} run(s) still wait. `patina queue run` goes on, "
                      f"`patina queue retry {entry.id}` first lets this run continue where it stopped.")
                return 0
    print(f"The queue is done ({failed} failed)." if failed else "The queue is done.")
    return 1 if failed else 0
