#!/usr/bin/env python3
"""Run one interoperability scenario around python-banyan's own backplane.

Usage (always inside the private namespace made by netns.sh, with the venv python):
    tests/python/netns.sh target/pyenv/bin/python tests/python/netns_scenario.py \\
        [-p PUB_PORT] [-s SUB_PORT] [--peer 'MODE ARGS'] [--bg-peer 'MODE ARGS'] \\
        [--input FILE|-] [--cmd-ready TEXT] [--ready-timeout S] [--timeout S] \\
        [--peer-timeout S] [--backplane PATH] -- CMD [ARGS...]

Python backplane + python publisher + a Rust process receiving:
    netns.sh .../python netns_scenario.py --peer 'pub --topic t' --input values.hex \\
        --cmd-ready READY -- target/debug/receiver -b 127.0.0.1 -p {PUB} -s {SUB}
Python backplane + a Rust process publishing + python subscriber:
    netns.sh .../python netns_scenario.py --peer 'sub --topic t --count 3' \\
        -- target/debug/sender -b 127.0.0.1 -p {PUB} -s {SUB}

Steps, each wait with a deadline:
 1. Check that the only network interface is lo (that is, we run under netns.sh).
 2. Start python-banyan's `backplane -p PUB -s SUB` (default: the `backplane` script
    beside this python), wait for its banner, check that it says 127.0.0.1, and wait
    until both ports accept TCP connections (--ready-timeout, default 20 s).
 3. Start every peer, `banyan_peer.py MODE ARGS -b 127.0.0.1 -p PUB -s SUB`, in the
    order given, and wait for each one's READY line (--ready-timeout).
 4. Start CMD; `{PUB}` and `{SUB}` anywhere in CMD and ARGS are replaced by the ports.
    With --cmd-ready TEXT, wait for a stdout line of CMD containing TEXT
    (--ready-timeout).
 5. Write the --input lines (hex MessagePack values, for `pub` peers; `-` = this
    script's stdin, read at start-up) to every `pub` peer, and close every peer's
    stdin (`pub-numpy` publishes then).
 6. Wait for CMD to exit (--timeout, default 60 s).
 7. Wait for every --peer to exit by itself (--peer-timeout, default 10 s): `pub`
    and `pub-numpy` exit after publishing, `sub` and `echo` need --count. --bg-peer
    peers are stopped instead.
 8. Stop every remaining child (SIGTERM, then SIGKILL after 5 s), by its handle.

Output: CMD's stdout and stderr are relayed unchanged to this script's stdout and
stderr. Each peer's stdout line L is relayed to stdout as `peer<i>\\tL`, i counting
--peer and --bg-peer together from 0 in the order given. Peers' stderr lines and
all of the backplane's output go to stderr prefixed `[peer<i>] ` and `[backplane] `.
A command's stdout lines are relayed without trailing CR. This script's own
messages go to stderr prefixed `netns_scenario: `.

Exit status: CMD's exit status (128+N if killed by signal N) when every step worked;
3 when a deadline passed; 4 when CMD exited 0 but a --peer failed; 2 for a setup
error (bad arguments, not in a namespace, a child that cannot start or exits early).
"""

import argparse
import ctypes
import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PEER_SCRIPT = os.path.join(HERE, "banyan_peer.py")
ADDRESS = "127.0.0.1"
STOP_GRACE_S = 5.0

out_lock = threading.Lock()


class ScenarioError(Exception):
    """Setup failure: exit 2."""

    status = 2


class DeadlineError(ScenarioError):
    """A wait ran out of time: exit 3."""

    status = 3


def say(message):
    with out_lock:
        sys.stderr.write("netns_scenario: %s\n" % message)
        sys.stderr.flush()


def die_with_parent():
    """In a new child: be sent SIGTERM when this script ends, however it ends
    (even by SIGKILL, when it cannot stop its children itself)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    """A child process whose output lines are relayed and queued."""

    def __init__(self, name, argv, out_prefix, err_prefix, stdin=subprocess.DEVNULL,
                 env=None, out_sink=None):
        self.name = name
        self.argv = argv
        self.lines = queue.Queue()  # stdout lines; None once stdout is closed
        self.out_lines = []
        try:
            self.proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, env=env,
                                         preexec_fn=die_with_parent)
        except OSError as error:
            raise ScenarioError("cannot start %s (%s): %s"
                                % (name, shlex.join(argv), error))
        self.threads = [
            threading.Thread(target=self._relay, args=(self.proc.stdout, out_sink or sys.stdout,
                                                       out_prefix, True), daemon=True),
            threading.Thread(target=self._relay, args=(self.proc.stderr, sys.stderr,
                                                       err_prefix, False), daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _relay(self, stream, sink, prefix, queued):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with out_lock:
                sink.write(prefix + line + "\n")
                sink.flush()
            if queued:
                self.out_lines.append(line)
                self.lines.put(line)
        stream.close()
        if queued:
            self.lines.put(None)

    def wait_line(self, accept, what, timeout):
        """Wait for a stdout line for which accept(line) is true."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineError("%s: no %s within %g s" % (self.name, what, timeout))
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                status = self.proc.wait()
                raise ScenarioError("%s exited with status %s before printing %s"
                                    % (self.name, status, what))
            if accept(line):
                return line

    def wait_exit(self, timeout):
        try:
            status = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        for thread in self.threads:
            thread.join(timeout=2)
        return status

    def stop(self):
        """Terminate, then kill, this child only (by its handle)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                say("%s ignored SIGTERM for %g s; killing it" % (self.name, STOP_GRACE_S))
                self.proc.kill()
                self.proc.wait()
        for thread in self.threads:
            thread.join(timeout=2)


def exit_code(status):
    return 128 - status if status < 0 else status


def check_namespace():
    names = sorted(name for _, name in socket.if_nameindex())
    if names != ["lo"]:
        raise ScenarioError("network interfaces %s besides lo: run this under "
                            "tests/python/netns.sh" % ", ".join(n for n in names if n != "lo"))


def wait_ports(ports, timeout):
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            try:
                with socket.create_connection((ADDRESS, int(port)), timeout=1):
                    break
            except OSError as error:
                if time.monotonic() >= deadline:
                    raise DeadlineError("backplane port %s:%s not accepting connections "
                                        "within %g s: %s" % (ADDRESS, port, timeout, error))
                time.sleep(0.02)


def start_backplane(args):
    argv = [args.backplane, "-p", args.pub_port, "-s", args.sub_port]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # Its stdout (the banner) is relayed to stderr: not part of the scenario's stdout.
    backplane = Child("backplane", argv, "[backplane] ", "[backplane] ", env=env,
                      out_sink=sys.stderr)
    line = backplane.wait_line(lambda l: "Backplane IP address:" in l,
                               "'Backplane IP address:' banner line", args.ready_timeout)
    address = line.rsplit(":", 1)[1].strip()
    if address != ADDRESS:
        raise ScenarioError("python's backplane bound %s, not %s" % (address, ADDRESS))
    wait_ports([args.pub_port, args.sub_port], args.ready_timeout)
    return backplane


def parse_args(argv):
    if "--" in argv:
        split = argv.index("--")
        own, command = argv[:split], argv[split + 1:]
    else:
        own, command = argv, []
    parser = argparse.ArgumentParser(
        prog="netns_scenario.py", description=__doc__.split("\n", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("-p", dest="pub_port", default="43124",
                        help="backplane publisher port (default 43124)")
    parser.add_argument("-s", dest="sub_port", default="43125",
                        help="backplane subscriber port (default 43125)")
    parser.add_argument("--peer", action="append", default=[], dest="peers",
                        type=lambda spec: ("peer", spec),
                        help="banyan_peer.py MODE and options; must exit by itself")
    parser.add_argument("--bg-peer", action="append", dest="peers",
                        type=lambda spec: ("bg", spec),
                        help="banyan_peer.py MODE and options; stopped at the end")
    parser.add_argument("--input", help="hex lines fed to `pub` peers ('-' = stdin)")
    parser.add_argument("--cmd-ready", help="wait for a stdout line of CMD containing this")
    parser.add_argument("--ready-timeout", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="deadline for CMD to exit (seconds)")
    parser.add_argument("--peer-timeout", type=float, default=10.0,
                        help="deadline for --peer peers to exit after CMD (seconds)")
    parser.add_argument("--backplane",
                        default=os.path.join(os.path.dirname(sys.executable), "backplane"),
                        help="python-banyan backplane executable")
    args = parser.parse_args(own)
    if not command:
        parser.error("missing `-- CMD [ARGS...]`")
    for port in (args.pub_port, args.sub_port):
        if not port.isdigit():
            parser.error("ports must be numbers, got %r" % port)
    args.command = [word.replace("{PUB}", args.pub_port).replace("{SUB}", args.sub_port)
                    for word in command]
    args.peers = [(kind, shlex.split(spec)) for kind, spec in args.peers or []]
    for _, words in args.peers:
        if not words:
            parser.error("empty peer specification")
    return args


def run(args, children):
    input_data = b""
    if args.input == "-":
        input_data = sys.stdin.buffer.read()
    elif args.input is not None:
        with open(args.input, "rb") as handle:
            input_data = handle.read()

    check_namespace()
    children.append(start_backplane(args))

    peers = []
    for index, (kind, words) in enumerate(args.peers):
        words = [w.replace("{PUB}", args.pub_port).replace("{SUB}", args.sub_port)
                 for w in words]
        argv = [sys.executable, PEER_SCRIPT] + words + [
            "-b", ADDRESS, "-p", args.pub_port, "-s", args.sub_port]
        name = "peer%d (%s)" % (index, " ".join(words))
        peer = Child(name, argv, "peer%d\t" % index, "[peer%d] " % index,
                     stdin=subprocess.PIPE)
        peer.kind, peer.mode = kind, words[0]
        children.append(peer)
        peers.append(peer)
        peer.wait_line(lambda l: l == "READY", "READY line", args.ready_timeout)

    command = Child("command", args.command, "", "")
    children.append(command)
    if args.cmd_ready is not None:
        command.wait_line(lambda l: args.cmd_ready in l, "line containing %r"
                          % args.cmd_ready, args.ready_timeout)

    for peer in peers:
        try:
            if peer.mode == "pub":
                peer.proc.stdin.write(input_data)
            peer.proc.stdin.close()
        except BrokenPipeError:
            pass  # the peer exited; reported below

    status = command.wait_exit(args.timeout)
    if status is None:
        raise DeadlineError("command did not exit within %g s: %s"
                            % (args.timeout, shlex.join(args.command)))
    say("command exited with status %d" % status)
    if status != 0:
        return exit_code(status)

    failed = []
    deadline = time.monotonic() + args.peer_timeout
    for peer in peers:
        if peer.kind != "peer":
            continue
        peer_status = peer.wait_exit(max(0.0, deadline - time.monotonic()))
        if peer_status is None:
            raise DeadlineError("%s did not exit within %g s after the command "
                                "(%d stdout lines)" % (peer.name, args.peer_timeout,
                                                       len(peer.out_lines)))
        if peer_status != 0:
            failed.append("%s exited with status %d" % (peer.name, peer_status))
    for line in failed:
        say(line)
    return 4 if failed else 0


def main(argv):
    children = []

    def on_signal(signum, frame):
        raise ScenarioError("stopped by signal %d" % signum)

    signal.signal(signal.SIGTERM, on_signal)
    try:
        args = parse_args(argv)
        return run(args, children)
    except ScenarioError as error:
        if str(error):
            say(str(error))
        return error.status
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for child in reversed(children):
            child.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
