#!/usr/bin/env python3
"""A builtin.Exec handler in Python.

The task writes JSON lines to stdin: first {"state": {...}} (what this
program last saved), then one line per message. For each message this
handler counts it in its state, emits it back with the count (and the
line in capitals, if it has one), and acknowledges it, all in one line:
the daemon takes a message off its queue only after the ack.
"""
import json
import sys


def main():
    state = {}
    print("handler.py started", file=sys.stderr, flush=True)  # to the log
    for raw in sys.stdin:
        msg = json.loads(raw)
        if list(msg) == ["state"]:
            state = msg["state"]
            continue
        state["n"] = state.get("n", 0) + 1
        out = dict(msg, seq=state["n"], handled_by="python")
        if isinstance(msg.get("line"), str):
            out["upper"] = msg["line"].upper()
        print(json.dumps({"state": state, "emit": out, "ack": True}), flush=True)


if __name__ == "__main__":
    main()
