#!/bin/sh
# A builtin.Exec handler in shell and jq: jq itself is the co-process. It
# reads the task's JSON lines (first {"state": ...}, then the messages),
# keeps a count in the task's state, and answers each message with its
# new state, the message emitted back with the count, and the ack.
exec jq -n -c --unbuffered '
  foreach inputs as $m ({n: 0, out: null};
    if ($m | keys) == ["state"] then {n: ($m.state.n // 0), out: null}
    else {n: (.n + 1), out: $m}
    end;
    if .out == null then empty
    else {state: {n: .n}, emit: (.out + {seq: .n, handled_by: "jq"}), ack: true}
    end)'
