#!/usr/bin/python3
"""Replays the Redis commands of a Loom run against a fresh redis-server: Redis's time per script.

A benchmark's Redis work depends on the whole fabric's timing (batch sizes follow how fast each
process is), and the host's speed drifts, so two builds' runs differ by more than a small change
to a script. Replaying one recorded run's commands, in order, on one connection, gives every
script version the same work: its time inside Redis is then comparable run to run.

    # record the top-level commands of a throughput run (MONITOR), then replay them
    bench/redis_replay.py capture build/bin/loom-bench capture.txt [--tasks 30000]
    bench/redis_replay.py replay capture.txt
    # the same commands with one script replaced (the script whose source contains MARKER)
    bench/redis_replay.py replay capture.txt --script 'while #out < max do=lease.lua'

`replay` prints Redis's CPU over the replay, the time spent in EVALSHA (scripts and the commands
they run) and, per script, its calls and its time inside Redis (INFO commandstats read around
each call). Needs redis-server, redis-cli and Debian's python3-redis.
"""
import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

try:
    import redis
except ImportError:
    sys.exit("redis_replay.py needs Debian's python3-redis (apt-get install python3-redis)")

LINE = re.compile(r'^[0-9.]+ \[\d+ ([^\]]*)\] ')
ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')
ESCAPES = {'n': b'\n', 'r': b'\r', 't': b'\t', 'a': b'\a', 'b': b'\b', '"': b'"', '\\': b'\\'}


def unquote(s):
    """One MONITOR argument (Redis's sdscatrepr quoting) back to its bytes."""
    out = bytearray()
    i = 0
    while i < len(s):
        if s[i] == '\\':
            if s[i + 1] == 'x':
                out.append(int(s[i + 2:i + 4], 16))
                i += 4
            else:
                out += ESCAPES.get(s[i + 1], s[i + 1].encode('latin1'))
                i += 2
        else:
            out += s[i].encode('latin1')
            i += 1
    return bytes(out)


def parse(path):
    """The commands clients sent (not those run by scripts), in order."""
    cmds = []
    with open(path, encoding='latin1') as f:
        for line in f:
            m = LINE.match(line)
            if not m or m.group(1) == 'lua':
                continue
            args = [unquote(a) for a in ARG.findall(line[m.end():])]
            if args:
                cmds.append(args)
    return cmds


def capture(args):
    bench = subprocess.Popen([args.bench, '--tasks', str(args.tasks), '--latency-samples', '5'],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port = None
    deadline = time.time() + 30
    while port is None and time.time() < deadline and bench.poll() is None:
        # The bench's redis-server listens on 127.0.0.1:<port> (and its Unix socket).
        out = subprocess.run(['pgrep', '-a', '-P', str(bench.pid), 'redis-server'], capture_output=True,
                             text=True).stdout
        m = re.search(r'127\.0\.0\.1:(\d+)', out)
        if m and subprocess.run(['redis-cli', '-p', m.group(1), 'ping'], capture_output=True).returncode == 0:
            port = m.group(1)
        else:
            time.sleep(0.01)
    if port is None:
        bench.kill()
        sys.exit('the bench did not start a redis-server in time')
    with open(args.out, 'wb') as f:
        mon = subprocess.Popen(['redis-cli', '-p', port, 'monitor'], stdout=f, stderr=subprocess.DEVNULL)
        bench.wait()
        mon.wait(timeout=30)
    print(f'{len(parse(args.out))} commands recorded in {args.out}')


def replay(args):
    cmds = parse(args.capture)
    sources = {hashlib.sha1(c[1]).hexdigest(): c[1] for c in cmds if c[0].upper() == b'EVAL'}
    replace = {}
    for spec in args.script:
        marker, _, path = spec.rpartition('=')
        hits = [sha for sha, src in sources.items() if marker.encode() in src]
        if len(hits) != 1:
            sys.exit(f'{marker!r} is in {len(hits)} of the recorded scripts; it must name exactly one')
        replace[hits[0]] = open(path, 'rb').read()
    work = tempfile.mkdtemp(prefix='loom-replay-')
    sock = os.path.join(work, 'redis.sock')
    server = subprocess.Popen(['redis-server', '--port', '0', '--unixsocket', sock, '--dir', work, '--save', '',
                               '--appendonly', 'yes', '--appendfsync', 'everysec'], stdout=subprocess.DEVNULL)
    try:
        for _ in range(250):
            if os.path.exists(sock):
                break
            time.sleep(0.02)
        r = redis.Redis(unix_socket_path=sock)
        loaded = {sha: r.script_load(replace.get(sha, src)) for sha, src in sources.items()}

        def evalsha_usec():
            return r.info('commandstats').get('cmdstat_evalsha', {}).get('usec', 0)

        def cpu():
            i = r.info('cpu')
            return i['used_cpu_user'] + i['used_cpu_sys']

        r.config_resetstat()
        cpu0 = cpu()
        seen = set()  # an EVALSHA before its script's first EVAL failed in the recorded run (NOSCRIPT)
        per, calls, errors = {}, {}, 0
        for c in cmds:
            name = c[0].upper()
            if name in (b'MONITOR', b'INFO', b'CONFIG', b'SHUTDOWN', b'BGREWRITEAOF', b'SCRIPT'):
                continue
            if name == b'EVAL':
                sha = hashlib.sha1(c[1]).hexdigest()
                seen.add(sha)
            elif name == b'EVALSHA':
                sha = c[1].decode()
                if sha not in seen:
                    continue
            else:
                sha = None
            if sha is not None:
                c = [b'EVALSHA', loaded[sha].encode()] + c[2:]
                before = evalsha_usec()
            try:
                r.execute_command(*c)
            except redis.ResponseError:
                errors += 1
            if sha is not None:
                per[sha] = per.get(sha, 0) + evalsha_usec() - before
                calls[sha] = calls.get(sha, 0) + 1
        spent = cpu() - cpu0
        total = sum(per.values())
        print(f'{len(cmds)} commands replayed, {errors} error replies; Redis CPU {spent:.3f} s '
              f'(with the INFO calls that time the scripts), in scripts {total / 1e6:.3f} s')
        for sha, usec in sorted(per.items(), key=lambda kv: -kv[1]):
            first = sources[sha].strip().split(b'\n')[0][:60].decode('latin1')
            mark = ' (replaced)' if sha in replace else ''
            print(f'  {usec / 1e6:8.3f} s  {calls[sha]:6d} calls  {first}{mark}')
        try:
            r.execute_command('SHUTDOWN', 'NOSAVE')
        except redis.ConnectionError:
            pass
    finally:
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='cmd', required=True)
    c = sub.add_parser('capture', help='record the Redis commands of a loom-bench throughput run')
    c.add_argument('bench', help='path of loom-bench')
    c.add_argument('out', help='file for the MONITOR output')
    c.add_argument('--tasks', type=int, default=30000)
    r = sub.add_parser('replay', help='replay a capture on a fresh redis-server')
    r.add_argument('capture')
    r.add_argument('--script', action='append', default=[], metavar='MARKER=FILE',
                   help='replace the recorded script whose source contains MARKER by FILE')
    args = p.parse_args()
    capture(args) if args.cmd == 'capture' else replay(args)


if __name__ == '__main__':
    main()
