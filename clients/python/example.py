"""ASM from Python: a run with an approval, a resumed event stream, an interrupt and typed errors.

    python3 clients/python/example.py http://127.0.0.1:8080      (ASM_API_KEY from the environment, if set)

It uses the claude provider; test/python-client.test.ts runs it against a live server whose `claude` is
the fake CLI of test/fixtures/bin, where the `[fixture:...]` markers pick the recorded transcript.
Each line it prints is one fact the test asserts on.
"""

import os
import sys

from asm_client import AsmClient, BadRequest, Conflict, NotFound


def main(base_url):
    asm = AsmClient(base_url, api_key=os.environ.get("ASM_API_KEY"))
    print("health", asm.health()["status"])
    session = asm.create_session("claude")
    print("session", session["id"], session["provider"])

    # A run that asks to use a tool: answer the approval as it arrives on the SSE stream.
    run = asm.submit_run(session["id"], "create a file [fixture:c2-approve]")
    seqs = []
    for event in asm.events(run["id"]):
        seqs.append(event["seq"])
        if event["kind"] == "approval_requested":
            approval = asm.decide_approval(event["payload"]["approval_id"], "allow", reason="example")
            print("approval", approval["state"], approval["decision"])
        elif event["kind"] == "approval_resolved":
            print("approval_resolved", event["payload"]["decision"])
    done = asm.get_run(run["id"])
    print("run", done["state"], "events", len(seqs), "gap-free", seqs == list(range(seqs[0], seqs[0] + len(seqs))))

    # Resume: the stream again from after the second event, as a client that lost its link would.
    resumed = [event["seq"] for event in asm.events(run["id"], last_event_id=seqs[1])]
    print("resumed", resumed == seqs[2:])

    # An interrupt while the agent runs a slow tool.
    slow = asm.submit_run(session["id"], "Run the slow job [fixture:c3-interrupt]")
    interrupted = asm.wait(slow["id"], on_event=lambda event: event["kind"] == "tool_use" and asm.interrupt(slow["id"]))
    print("interrupted", interrupted["state"], interrupted["result"]["error"]["kind"])

    # Errors are exceptions chosen by the error body's kind.
    try:
        asm.get_run("run_does_not_exist")
    except NotFound as error:
        print("error", type(error).__name__, error.kind, error.status)
    try:
        asm.interrupt(slow["id"])
    except Conflict as error:
        print("error", type(error).__name__, error.kind, error.status)
    try:
        asm.create_session("claude", max_concurrent_runs=0)
    except BadRequest as error:
        print("error", type(error).__name__, error.kind, error.field)
    asm.close_session(session["id"])
    print("closed", asm.get_session(session["id"])["state"])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080")
