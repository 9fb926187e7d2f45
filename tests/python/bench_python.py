"""python-banyan 3.17's own benchmark, measured beside banyan-bench's `bus`.

Run by scripts/bench-python inside a private network namespace (tests/python/netns.sh),
where python-banyan's backplane binds 127.0.0.1.

Modes:
  pub N   python-banyan's banyan_pub.py: BanyanBase, sleep 0.3 s, then N publish_payload
          calls of {'msg': x} on topic 'test'; prints {"start": t} (time before the loop).
  sub N   python-banyan's banyan_sub.py: BanyanBase, sleep 0.3 s, subscribe 'test', count in
          incoming_message_processing. Unlike the original it does not wait forever for
          message N-1 (which may be lost): after 2 s without a message it prints
          {"received", "first", "last", "out_of_order"} and exits.
  compare RUNS N BENCH   runs the python pair RUNS times through python's backplane, then
          `BENCH run bus -n N --runs RUNS --json`, and prints both figures, loss and ratio.
"""

import json
import os
import statistics
import subprocess
import sys
import threading
import time

IDLE = 2.0


def pub(n):
    from python_banyan.banyan_base import BanyanBase

    class Pub(BanyanBase):
        def __init__(self):
            super().__init__(process_name='Banyan publisher')
            time.sleep(.3)
            start = time.time()
            for x in range(0, n):
                self.publish_payload({'msg': x}, 'test')
            print(json.dumps({"start": start}), flush=True)
            self.clean_up()

    Pub()


def sub(n):
    from python_banyan.banyan_base import BanyanBase

    class Sub(BanyanBase):
        def __init__(self):
            super().__init__(process_name='Banyan Subscriber')
            time.sleep(.3)
            self.count = 0
            self.first = None
            self.last = None
            self.next = 0
            self.out_of_order = 0
            self.set_subscriber_topic('test')
            print(json.dumps({"ready": True}), flush=True)
            threading.Thread(target=self.watchdog, daemon=True).start()
            self.receive_loop()

        def watchdog(self):
            while True:
                time.sleep(0.1)
                if self.last is not None and (time.time() - self.last > IDLE or self.count >= n):
                    print(json.dumps({"received": self.count, "first": self.first,
                                      "last": self.last, "out_of_order": self.out_of_order}),
                          flush=True)
                    os._exit(0)

        def incoming_message_processing(self, topic, payload):
            now = time.time()
            if self.first is None:
                self.first = now
            self.last = now
            self.count += 1
            seq = payload['msg']
            if seq < self.next:
                self.out_of_order += 1
            else:
                self.next = seq + 1

    Sub()


def last_json(text):
    for line in reversed(text.splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    raise RuntimeError("no JSON result in:\n" + text)


def python_run(n):
    me = os.path.abspath(__file__)
    subscriber = subprocess.Popen([sys.executable, me, "sub", str(n)], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
    for line in subscriber.stdout:  # its banner comes first
        if '"ready"' in line:
            break
    else:
        raise RuntimeError("python subscriber did not start")
    publisher = subprocess.run([sys.executable, me, "pub", str(n)], capture_output=True,
                               text=True, timeout=300)
    out, _ = subscriber.communicate(timeout=300)
    start = last_json(publisher.stdout)["start"]
    result = last_json(out)
    received = result["received"]
    return {
        "rate": received / (result["last"] - start),
        "own_rate": received / (result["last"] - result["first"]),
        "lost": n - received,
        "out_of_order": result["out_of_order"],
    }


def compare(runs, n, bench, json_out):
    backplane = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "backplane")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # python's backplane prints nothing when it is ready
        python_runs = [python_run(n) for _ in range(runs)]
    finally:
        backplane.terminate()
        backplane.wait()
    ours = subprocess.run([bench, "run", "bus", "-n", str(n), "--runs", str(runs), "--json"],
                          capture_output=True, text=True, check=True)
    record = last_json(ours.stdout)
    py_rate = statistics.median(r["rate"] for r in python_runs)
    py_own = statistics.median(r["own_rate"] for r in python_runs)
    py_lost = max(r["lost"] for r in python_runs)
    python_record = {
        "scenario": "bus", "case": "1 pub -> 1 sub", "system": "python-banyan",
        "messages": n, "payload": 0, "runs": runs, "msgs_per_s": py_rate,
        "samples": [r["rate"] for r in python_runs], "lost": py_lost,
        "out_of_order": max(r["out_of_order"] for r in python_runs), "memory": [],
    }
    print(f"{n} messages {{'msg': i}}, 1 publisher -> 1 subscriber, medians of {runs} runs, same namespace")
    print(f"python-banyan 3.17: {py_rate:12.0f} msg/s  (its own first-to-last figure: {py_own:.0f})"
          f"  lost up to {py_lost} ({100.0 * py_lost / n:.1f}%)")
    print(f"banyan (Rust):      {record['msgs_per_s']:12.0f} msg/s  lost up to {record['lost']}")
    print(f"ratio: {record['msgs_per_s'] / py_rate:.1f}x")
    if json_out:
        with open(json_out, "w") as f:
            f.write(json.dumps(python_record) + "\n")
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "pub":
        pub(int(sys.argv[2]))
    elif mode == "sub":
        sub(int(sys.argv[2]))
    elif mode == "compare":
        compare(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4],
                sys.argv[5] if len(sys.argv) > 5 else None)
    else:
        sys.exit("usage: bench_python.py pub N | sub N | compare RUNS N BENCH [JSON_OUT]")
