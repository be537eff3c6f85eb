#!/usr/bin/env python3
"""The orchestrator of Benchmarks/peers/run.sh: runs every measurement,
interleaved round by round, and writes results.json, results.md, results.png.
run.sh sets everything up (server, model, venv) and passes it in the
environment; see run.sh for the knobs. Exits non-zero if any tool fails or
delivers the wrong bytes; speed targets are reported, never asserted.
"""
import atexit
import datetime
import hashlib
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time

E = os.environ
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = E["PEERS_REPO"]
WORK = E["PEERS_WORK"]
BIN = E["PEERS_BIN"]
PY = sys.executable
MODEL = E["PEERS_MODEL"]  # NAME@REV
ORIGINAL = E["PEERS_MODEL_DIR"]  # the generated model, kept for byte checks
BUCKET = E["PEERS_BUCKET"]
PREFIX = E["PEERS_PREFIX"]  # key prefix of the model's objects, no trailing slash
SERVER_DATA = E["PEERS_SERVER_DATA"]
RUNS = int(E.get("RUNS", "3"))
SMOKE = E.get("SMOKE", "0") == "1"
TOOLS = E["PEERS"].split()
SECTIONS = E.get("SECTIONS", "cold warm ttft").split()
RESULTS = E["PEERS_RESULTS_DIR"]
DROP = E.get("PEERS_DROP_CACHES", "1") == "1"
PART = 8 << 20
ENDPOINT = E["AWS_ENDPOINT_URL"]
# Set by run.sh's FAR=1: every tool reaches the server through scripts/faultproxy.py, which puts it as far away as
# a cloud store is from a GPU node (a round trip before each response, a pace per connection).
FAR = E.get("PEERS_FAR", "")
# weightcache's transfer.concurrency here: 8 by default, the peers' setting (see wc_env).
WC_CONCURRENCY = int(E.get("PEERS_WC_CONCURRENCY", "8"))
TRANSFER_BUDGET_MIB = 8 * WC_CONCURRENCY  # partSize (8 MiB) x concurrency
# The curl ceiling's widths: one row per width, the ceiling is the fastest.
CURL_WIDTHS = [int(n) for n in E.get("PEERS_CURL_PARALLEL", "8 16").split()]
REGION = E["AWS_REGION"]
KEY, SECRET = E["AWS_ACCESS_KEY_ID"], E["AWS_SECRET_ACCESS_KEY"]
MIB = 1 << 20
T_START = time.time()

FILES = sorted(os.listdir(ORIGINAL))
SIZES = {f: os.path.getsize(os.path.join(ORIGINAL, f)) for f in FILES}
SHARDS = [f for f in FILES if f.endswith(".safetensors")]
MODEL_BYTES = sum(SIZES.values())
SHARD_BYTES = sum(SIZES[f] for f in SHARDS)
sys.path.insert(0, HERE)
import workloads  # noqa: E402

TENSOR_BYTES = sum(workloads.tensor_bytes(os.path.join(ORIGINAL, f)) for f in SHARDS)


def log(msg):
    print(f"[peers] {msg}", file=sys.stderr, flush=True)


def fail(msg):
    log("FAILED: " + msg)
    sys.exit(1)


# ---------------------------------------------------------------- processes

GNU_TIME = "/usr/bin/time"  # Debian's `time` package; run.sh installs it if missing


def timed(argv, env=None, log_to=None):
    """Runs argv; returns (wall seconds, peak RSS KiB, CPU s, stdout). Fails the benchmark on a non-zero exit."""
    out_path, rss_path = os.path.join(WORK, "cmd.out"), os.path.join(WORK, "cmd.rss")
    # The peak RSS comes from GNU time, the tool's parent, not from wait4 here: a child forked from this process
    # starts with its memory (100 MiB and more, with numpy and matplotlib in), and Linux keeps that high-water
    # mark across the exec, so every small tool would have read as large as this script. CPU and wall time from
    # wait4 (time's own are negligible, and its child's CPU is counted when it waits).
    with open(out_path, "wb") as out, open(log_to or os.path.join(WORK, "cmd.err"), "wb") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen([GNU_TIME, "-f", "%M", "-o", rss_path, *argv], env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(p.pid, 0)
        seconds = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
    stdout = open(out_path, encoding="utf-8", errors="replace").read()
    if p.returncode != 0:
        errtext = open(log_to or os.path.join(WORK, "cmd.err"), errors="replace").read()[-3000:]
        fail(f"{shlex.join(argv)} exited {p.returncode}\n{errtext}\n{stdout[-2000:]}")
    kib = int(open(rss_path).read().split()[-1])
    return seconds, kib, usage.ru_utime + usage.ru_stime, stdout


def server_cpu():
    """CPU seconds (user + system) the S3 server's processes have used so far:
    the `weed` processes whose command line names this run's data directory
    (the server shares the machine's cores with the tool being timed)."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            if not argv or os.path.basename(argv[0]) != b"weed" or SERVER_DATA.encode() not in b" ".join(argv):
                continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        except (OSError, IndexError, ValueError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def quiet(argv, env=None):
    r = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        fail(f"{shlex.join(argv)} exited {r.returncode}: {r.stderr[-2000:]}")
    return r.stdout


def daemon_setting(section, key):
    """A setting as the daemons here get it (their environment, run from WORK, so no ./config.json): what
    `weightcache config` renders, rather than this script restating the defaults."""
    r = subprocess.run([BIN, "config"], env=wc_env(STAGING), cwd=WORK, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        fail(f"weightcache config exited {r.returncode}: {r.stderr[-2000:]}")
    rendered = json.loads("\n".join(line for line in r.stdout.splitlines() if not line.startswith("#")))
    return rendered[section][key]


def drop_caches():
    subprocess.run(["sync"], check=True)
    if DROP:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")


def warm_server():
    """Reads the server's own files (its volumes, its metadata) into the page cache, untimed."""
    for root, _, files in os.walk(SERVER_DATA):
        for name in files:
            try:
                with open(os.path.join(root, name), "rb", buffering=0) as f:
                    while f.read(16 * MIB):
                        pass
            except OSError:
                pass


# A write of 512 MiB into the page cache takes about 0.2 s on this VM, and several seconds when the memory it lands
# in has been taken back by the host (a first touch then costs about 7 s per GiB), which slows every tool that
# writes. Each cold run waits (at most SETTLE_SECONDS; not in SMOKE) for a probe under PROBE_LIMIT_S; the probes are
# kept with the runs. It does not see every slow minute: tools can be slow after a fast probe (docs/performance.md,
# "What limits each figure on this VM"; results/vm-memory-20261203.txt). Keep it in step with lib.sh's write_probe.
PROBE_LIMIT_S = 1.0
SETTLE_SECONDS = float(E.get("SETTLE_SECONDS", "0" if SMOKE else "180"))


def write_probe():
    """Seconds to write 512 MiB of zeros into a new file in the page cache (no fsync); the file is removed."""
    path = os.path.join(WORK, "probe")
    block = bytes(MIB)
    t0 = time.perf_counter()
    with open(path, "wb", buffering=0) as f:
        for _ in range(512):
            f.write(block)
    seconds = time.perf_counter() - t0
    os.unlink(path)
    return seconds


def settled_probe():
    """Probes every 5 s until one is under PROBE_LIMIT_S or SETTLE_SECONDS have passed: (seconds, settled)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        seconds = write_probe()
        if seconds < PROBE_LIMIT_S:
            return seconds, True
        if time.monotonic() >= deadline:
            return seconds, False
        log(f"write probe {seconds:.2f} s for 512 MiB: the VM is in a slow phase; waiting")
        time.sleep(5)


def cold_start():
    """Before every cold run, identical for every tool: sync, drop the page cache, re-warm the server's files,
    wait for a settled machine. Returns the last write probe as a dict for the run's record."""
    drop_caches()
    warm_server()
    seconds, settled = settled_probe()
    return dict(write_probe_s=seconds, settled=settled)


def rmtree(path):
    shutil.rmtree(path, ignore_errors=True)


def wc_env(staging, **extra):
    # 8 requests in flight, as every peer here is given (rclone's streams, boto3's threads, Run:ai's concurrency), and
    # the transfer budget of the memory target (8 x 8 MiB). weightcache's default is 32, for far stores: next to this
    # server the CPU is the limit and 32 measured the same as 8 (Benchmarks/far-store.sh, docs/performance.md).
    env = dict(E, WEIGHTCACHE_STAGING_DIRECTORY=staging, WEIGHTCACHE_MODELS=f"s3://{BUCKET}/{E['PEERS_MODELS_PREFIX']}",
               WEIGHTCACHE_TRANSFER_CONCURRENCY=str(WC_CONCURRENCY),
               WEIGHTCACHE_SOCKET_PATH=os.path.join(WORK, "wc.sock"), WEIGHTCACHE_SOCKET=os.path.join(WORK, "wc.sock"),
               WEIGHTCACHE_RAM_CACHE_BUDGET_BYTES="4GiB", PYTHONPATH=os.path.join(REPO, "clients", "python"))
    env.update(extra)
    return env


def peer_env(**extra):
    """For the peers: no machine-wide CA bundle (some tools choke on it), no stray AWS profile."""
    env = {k: v for k, v in E.items() if k != "AWS_CA_BUNDLE"}
    env.update(AWS_CONFIG_FILE=os.path.join(WORK, "no-aws-config"),
               AWS_SHARED_CREDENTIALS_FILE=os.path.join(WORK, "no-aws-credentials"),
               AWS_DEFAULT_REGION=REGION, AWS_EC2_METADATA_DISABLED="true")
    env.pop("AWS_PROFILE", None)
    env.update(extra)
    return env


PROBLEMS = []
# Daemons not yet stopped: killed at exit, so a failing run leaves none behind.
LIVE_DAEMONS = set()


def _kill_live_daemons():
    for p in list(LIVE_DAEMONS):
        if p.poll() is None:
            p.kill()
            p.wait()


atexit.register(_kill_live_daemons)


class Daemon:
    count = 0

    def __init__(self, staging):
        self.env = wc_env(staging)
        self.sock = self.env["WEIGHTCACHE_SOCKET_PATH"]
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        Daemon.count += 1
        self.log = open(os.path.join(WORK, f"serve-{Daemon.count}.log"), "wb")
        self.p = subprocess.Popen([BIN, "serve"], env=self.env, stdout=self.log, stderr=self.log, cwd=WORK)
        LIVE_DAEMONS.add(self.p)
        for _ in range(300):
            if os.path.exists(self.sock):
                return
            if self.p.poll() is not None:
                fail(f"weightcache serve exited {self.p.returncode}: {open(self.log.name, errors='replace').read()[-2000:]}")
            time.sleep(0.05)
        fail("weightcache serve: no socket after 15 s")

    def status(self):
        fields = {}
        with open(f"/proc/{self.p.pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmHWM", "VmRSS"):
                    fields[k] = int(v.split()[0])  # KiB
        with open(f"/proc/{self.p.pid}/stat") as f:
            stat = f.read().rsplit(")", 1)[1].split()
        fields["cpu_s"] = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")  # since the daemon started
        return fields

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            code = self.p.wait(30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            fail("weightcache serve did not stop on SIGTERM within 30 s")
        LIVE_DAEMONS.discard(self.p)
        self.log.close()
        if code != 0:
            # Not what is measured, but a break all the same: kept, reported, and the run exits non-zero at the end.
            os.makedirs(RESULTS, exist_ok=True)
            kept = os.path.join(RESULTS, f"serve-exit{code}-{len(PROBLEMS) + 1}.log")
            shutil.copy(self.log.name, kept)
            PROBLEMS.append(f"weightcache serve exited {code} on SIGTERM (log: {kept})")
            log("PROBLEM: " + PROBLEMS[-1])


# ---------------------------------------------------------------- checks

HASHES = {}


def xxh(paths):
    out = quiet([BIN, "hash", *paths])
    return [line.split()[0] for line in out.splitlines()]


def check_dir(tool, folder, verify):
    """Every file of the model is in folder with its size; with verify, its xxh3-128 too. Returns the bytes."""
    total = 0
    for f in FILES:
        path = os.path.join(folder, f)
        if not os.path.exists(path):
            fail(f"{tool}: {f} missing from {folder}")
        size = os.stat(path).st_size
        if size != SIZES[f]:
            fail(f"{tool}: {f} is {size} bytes, expected {SIZES[f]}")
        total += size
    if verify:
        if not HASHES:
            HASHES.update(zip(FILES, xxh([os.path.join(ORIGINAL, f) for f in FILES])))
        got = dict(zip(FILES, xxh([os.path.join(folder, f) for f in FILES])))
        bad = [f for f in FILES if got[f] != HASHES[f]]
        if bad:
            fail(f"{tool}: content differs from the original: {bad}")
    return total


# ---------------------------------------------------------------- cold pull

def curl_config(path):
    lines = []
    for f in FILES:
        url = f"{ENDPOINT}/{BUCKET}/{PREFIX}/{f}"
        for start in range(0, SIZES[f], PART):
            end = min(SIZES[f], start + PART) - 1
            lines += [f'url = "{url}"', f'range = "{start}-{end}"', 'output = "/dev/null"',
                      f'user = "{KEY}:{SECRET}"', f'aws-sigv4 = "aws:amz:{REGION}:s3"',
                      'header = "x-amz-content-sha256: UNSIGNED-PAYLOAD"',
                      'write-out = "%{size_download}\\n"', "fail", "silent", "show-error", "next"]
    with open(path, "w") as out:
        out.write("\n".join(lines[:-1]) + "\n")
    os.chmod(path, 0o600)
    return sum(-(-SIZES[f] // PART) for f in FILES)


CURL_CFG = os.path.join(WORK, "curl-ranges.cfg")
CURL_TRANSFERS = curl_config(CURL_CFG)
OUT = os.path.join(WORK, "out")
STAGING = os.path.join(WORK, "staging")
S3_PREFIX_URI = f"s3://{BUCKET}/{PREFIX}/"
RUNAI_URIS = [f"s3://{BUCKET}/{PREFIX}/{f}" for f in SHARDS]
RCLONE_REMOTE = f"peers:{BUCKET}/{PREFIX}"
RCLONE_ENV = dict(RCLONE_CONFIG=os.path.join(WORK, "no-rclone.conf"), RCLONE_CONFIG_PEERS_TYPE="s3",
                  RCLONE_CONFIG_PEERS_PROVIDER="Other", RCLONE_CONFIG_PEERS_ENDPOINT=ENDPOINT,
                  RCLONE_CONFIG_PEERS_ACCESS_KEY_ID=KEY, RCLONE_CONFIG_PEERS_SECRET_ACCESS_KEY=SECRET,
                  RCLONE_CONFIG_PEERS_REGION=REGION, RCLONE_CONFIG_PEERS_FORCE_PATH_STYLE="true")
# rclone 1.60 gives a file min(--multi-thread-streams, size / --multi-thread-cutoff) streams: at its default
# cutoff (250 MiB) a 504-545 MiB shard gets 2 streams, not 8. 32 MiB lets every shard above 256 MiB use all 8.
RCLONE_FLAGS = ["--multi-thread-streams", "8", "--multi-thread-cutoff", E.get("PEERS_RCLONE_CUTOFF", "32M"),
                "--transfers", "4"]
RUNAI_ENV = dict(RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING="0", RUNAI_STREAMER_CONCURRENCY="8",
                 RUNAI_STREAMER_CHUNK_BYTESIZE=str(PART), AWS_ENDPOINT_URL=ENDPOINT,
                 RUNAI_STREAMER_LOG_LEVEL="WARNING")

COLD_TOOLS = {  # label, what lands where, the command as documented
    "weightcache-pull": ("weightcache pull", "disk (staging)", f"weightcache pull {MODEL}"),
    # The same pull through the page cache (staging.writes=buffered), as the other disk tools write.
    "weightcache-pull-buffered": ("weightcache pull, buffered writes", "disk (staging)",
                                  f"WEIGHTCACHE_STAGING_WRITES=buffered weightcache pull {MODEL}"),
    "weightcache-preload": ("weightcache preload (daemon)", "disk (staging)",
                            f"weightcache serve & ; weightcache preload --json {MODEL}"),
    "aws": ("aws s3 cp --recursive", "disk",
            f"env -u AWS_CA_BUNDLE aws s3 cp --recursive --only-show-errors --endpoint-url $AWS_ENDPOINT_URL {S3_PREFIX_URI} OUT/"),
    "boto3": ("boto3 TransferManager", "disk",
              "TransferConfig(multipart_threshold=8MiB, multipart_chunksize=8MiB, max_concurrency=8); "
              "create_transfer_manager(client, config).download(...) for every object, one manager"),
    "rclone": ("rclone copy", "disk", f"env -u AWS_CA_BUNDLE rclone copy {RCLONE_REMOTE} OUT/ {' '.join(RCLONE_FLAGS)}"
               " (remote from RCLONE_CONFIG_PEERS_{TYPE=s3,PROVIDER=Other,ENDPOINT,ACCESS_KEY_ID,SECRET_ACCESS_KEY,REGION})"),
    "runai": ("Run:ai model streamer", "memory (torch CPU tensors)",
              "SafetensorsStreamer().stream_files([every shard's s3:// URI]); get_tensors(), one byte per 4 KiB page touched; "
              "RUNAI_STREAMER_CONCURRENCY=8 RUNAI_STREAMER_CHUNK_BYTESIZE=8388608 RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING=0 "
              "AWS_ENDPOINT_URL AWS_EC2_METADATA_DISABLED=true"),
}
COLD_TOOLS.update({
    f"curl{n}": (f"curl ceiling, {n} parallel", "/dev/null",
                 f"curl --parallel --parallel-immediate --parallel-max {n} -K ranges.cfg "
                 f"({CURL_TRANSFERS} 8 MiB ranged GETs, --aws-sigv4, one process)")
    for n in CURL_WIDTHS})
if WC_CONCURRENCY != 8:
    for t in ("weightcache-pull", "weightcache-pull-buffered", "weightcache-preload"):
        label, lands, cmd = COLD_TOOLS[t]
        COLD_TOOLS[t] = (f"{label}, {WC_CONCURRENCY} requests", lands,
                         f"WEIGHTCACHE_TRANSFER_CONCURRENCY={WC_CONCURRENCY} {cmd}")


# The cold-pull rows whose output is files on disk (the page cache), as opposed to memory or /dev/null.
DISK_WRITERS = {"weightcache-pull", "weightcache-pull-buffered", "weightcache-preload", "aws", "boto3", "rclone"}


# The rows whose client CPU covers exactly their seconds (commands timed whole). boto3's and Run:ai's seconds leave
# out their imports (torch), their CPU does not: no CPU bound for them.
CPU_TIMED_WHOLE = {"weightcache-pull", "weightcache-pull-buffered", "weightcache-preload", "aws", "rclone",
                   *(f"curl{n}" for n in CURL_WIDTHS)}


def cpu_bound(runs):
    """What the machine's CPU allows a tool: client and server share the cores, so a run that cost C client and S
    server CPU-seconds cannot take less than (C + S) / cores seconds however well it overlaps its work. Per run:
    that rate (MiB/s with every core busy for the whole run) and the share of the cores the run kept busy."""
    cores = os.cpu_count()
    cpu = [r["cpu_s"] + r["server_cpu_s"] for r in runs]  # every cold run records both (preload: daemon + CLI)
    return dict(cpu_s=spread(cpu), mib_s=spread([r["bytes"] / MIB * cores / max(c, 1e-9) for r, c in zip(runs, cpu)]),
                cores_busy=spread([c / cores / r["seconds"] for r, c in zip(runs, cpu)]))


def cold_run(tool, verify):
    """One cold run of tool; returns a dict with seconds (the figure), bytes, and what else was seen."""
    rmtree(OUT)
    rmtree(STAGING)
    daemon = None
    if tool == "weightcache-preload":
        daemon = Daemon(STAGING)
    r = cold_start()
    server_before = server_cpu()
    if tool in ("weightcache-pull", "weightcache-pull-buffered"):
        env = wc_env(STAGING)
        if tool == "weightcache-pull-buffered":
            env["WEIGHTCACHE_STAGING_WRITES"] = "buffered"
        s, kib, cpu, _ = timed([BIN, "pull", MODEL], env=env)
        r.update(seconds=s, rss_mib=kib / 1024, cpu_s=cpu)
        r["bytes"] = check_dir(tool, quiet([BIN, "path", MODEL], env=env).strip(), False)
    elif tool == "weightcache-preload":
        daemon_cpu = daemon.status()["cpu_s"]
        s, _, cpu, out = timed([BIN, "preload", "--json", MODEL], env=daemon.env)
        st = daemon.status()
        done = [j for j in map(json.loads, filter(str.strip, out.splitlines())) if j.get("event") == "done"]
        if not done:
            fail(f"weightcache preload: no done event in {out[-500:]}")
        snapshot = done[-1]["snapshot"]
        r.update(seconds=s, cpu_s_cli=cpu, cpu_s=st["cpu_s"] - daemon_cpu + cpu,
                 daemon_vmhwm_mib=st["VmHWM"] / 1024, daemon_vmrss_mib=st["VmRSS"] / 1024)
        r["bytes"] = check_dir(tool, snapshot, False)
        daemon.stop()
    elif tool == "aws":
        s, kib, cpu, _ = timed(["aws", "s3", "cp", "--recursive", "--only-show-errors", "--endpoint-url", ENDPOINT,
                                S3_PREFIX_URI, OUT + "/"], env=peer_env())
        r.update(seconds=s, rss_mib=kib / 1024, cpu_s=cpu, bytes=check_dir(tool, OUT, verify))
    elif tool == "boto3":
        s, kib, cpu, out = timed([PY, os.path.join(HERE, "workloads.py"), "boto3", BUCKET, PREFIX, OUT], env=peer_env())
        j = json.loads(out.strip().splitlines()[-1])
        r.update(seconds=j["seconds"], process_seconds=s, rss_mib=kib / 1024, cpu_s=cpu, manager=j["manager"],
                 bytes=check_dir(tool, OUT, verify))
    elif tool == "rclone":
        s, kib, cpu, _ = timed(["rclone", "copy", RCLONE_REMOTE, OUT, *RCLONE_FLAGS, *(["-vv"] if verify else [])],
                               env=peer_env(**RCLONE_ENV), log_to=os.path.join(WORK, "rclone.log"))
        r.update(seconds=s, rss_mib=kib / 1024, cpu_s=cpu, bytes=check_dir(tool, OUT, verify))
        if verify:
            text = open(os.path.join(WORK, "rclone.log"), errors="replace").read()
            r["multi_thread_lines"] = [line.split(": ", 1)[-1] for line in text.splitlines()
                                       if "Starting multi-thread copy" in line]
    elif tool == "runai":
        s, kib, cpu, out = timed([PY, os.path.join(HERE, "workloads.py"), "runai", *RUNAI_URIS,
                                  *(["--verify", ORIGINAL] if verify else [])], env=peer_env(**RUNAI_ENV))
        j = json.loads(out.strip().splitlines()[-1])
        if j["bytes"] != TENSOR_BYTES:
            fail(f"runai: streamed {j['bytes']} tensor bytes, the model has {TENSOR_BYTES}")
        r.update(seconds=j["seconds"], process_seconds=s, rss_mib=kib / 1024, cpu_s=cpu, bytes=j["bytes"],
                 tensors=j["tensors"])
    elif tool.startswith("curl"):
        # --parallel-immediate: without it curl opens its connections one at a time, waiting for each to be
        # set up (a round trip, far away) before the next.
        n = tool[4:]
        s, kib, cpu, out = timed(["curl", "--parallel", "--parallel-immediate", "--parallel-max", n, "-K", CURL_CFG],
                                 env=peer_env())
        sizes = [int(x) for x in out.split()]
        if len(sizes) != CURL_TRANSFERS or sum(sizes) != MODEL_BYTES:
            fail(f"{tool}: {len(sizes)} transfers, {sum(sizes)} bytes; expected {CURL_TRANSFERS}, {MODEL_BYTES}")
        r.update(seconds=s, rss_mib=kib / 1024, cpu_s=cpu, bytes=sum(sizes))
    r["server_cpu_s"] = server_cpu() - server_before
    r["mib_s"] = r["bytes"] / MIB / r["seconds"]
    return r


# ---------------------------------------------------------------- warm load, TTFT

WARM_STAGING = os.path.join(WORK, "staging-warm")
TTFT_STAGING = os.path.join(WORK, "staging-ttft")
WARM_PATHS = ["direct", "open", "read"]


def load_argv(via, snapshot):
    files = [os.path.join(snapshot, f) for f in SHARDS] if via == "direct" else SHARDS
    return [PY, os.path.join(HERE, "workloads.py"), "load", via, MODEL, *files]


def load_run(via, snapshot, env):
    _, kib, cpu, out = timed(load_argv(via, snapshot), env=env)
    j = json.loads(out.strip().splitlines()[-1])
    if j["bytes"] != TENSOR_BYTES:
        fail(f"load via {via}: {j['bytes']} tensor bytes, the shards hold {TENSOR_BYTES}")
    return dict(seconds=j["seconds"], bytes=j["bytes"], tensors=j["tensors"], rss_mib=kib / 1024, cpu_s=cpu,
                mib_s=j["bytes"] / MIB / j["seconds"])


TTFT_MODES = ["read-through", "pull-then-read", "read-through, 1 in flight"]


def ttft_run(mode):
    rmtree(TTFT_STAGING)
    env = wc_env(TTFT_STAGING)
    daemon = Daemon(TTFT_STAGING) if mode.startswith("read-through") else None
    probe = cold_start()
    shard = SHARDS[0]
    if mode == "pull-then-read":
        argv = [PY, os.path.join(HERE, "workloads.py"), "ttft-pull", MODEL, shard, ORIGINAL, BIN]
    else:
        argv = [PY, os.path.join(HERE, "workloads.py"), "ttft-read", MODEL, shard, ORIGINAL,
                *(["--in-flight", "1"] if mode.endswith("1 in flight") else [])]
    _, _, _, out = timed(argv, env=env)
    if daemon:
        # A read-through starts staging the whole model in the background. Let it finish (untimed) before the
        # SIGTERM: stopping the daemon mid-pull is not what this measures (and has crashed it, see the docs).
        quiet([BIN, "preload", MODEL], env=env)
        daemon.stop()
    j = json.loads(out.strip().splitlines()[-1])
    return dict(seconds=j["seconds"], bytes=j["bytes"], tensor=j["tensor"], **probe)


# ---------------------------------------------------------------- statistics

def spread(xs):
    return dict(median=statistics.median(xs), min=min(xs), max=max(xs))


def summarize(runs, key="seconds"):
    return spread([r[key] for r in runs])


def versions():
    def out(argv, env=None):
        try:
            r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=60)
            return r.stdout.strip().splitlines()[0] if r.stdout.strip() else None
        except (OSError, subprocess.TimeoutExpired):
            return None

    from importlib import metadata
    v = {}
    for pkg in ("awscli", "boto3", "botocore", "s3transfer", "runai-model-streamer", "runai-model-streamer-s3",
                "torch", "numpy", "safetensors", "matplotlib"):
        try:
            v[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            v[pkg] = None
    v["python"] = platform.python_version()
    v["aws --version"] = out(["aws", "--version"], env=peer_env())
    v["rclone"] = out(["rclone", "version"])
    v["curl"] = out(["curl", "--version"])
    v["seaweedfs"] = out(["weed", "version"])
    v["swift"] = out(["swift", "--version"])
    with open(BIN, "rb") as f:
        v["weightcache binary sha256"] = hashlib.sha256(f.read()).hexdigest()
    # Shipped binaries carry the Swift runtime (--static-swift-stdlib); a dynamic one loads ~50 libraries at start.
    libs = subprocess.run(["ldd", BIN], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    v["weightcache binary linking"] = ("Swift runtime dynamic (not as shipped)" if "libswiftCore" in libs
                                       else "Swift runtime static (--static-swift-stdlib, as shipped)")
    return v


def binary_source():
    """The commit the binary was built from: the git worktree it sits in, and whether its Sources/ had edits."""
    g = lambda *a: subprocess.run(["git", "-C", os.path.dirname(BIN), *a], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
    top = g("rev-parse", "--show-toplevel")
    if top.returncode != 0:
        return dict(binary_commit=None, binary_sources_modified=None)
    return dict(binary_commit=g("rev-parse", "HEAD").stdout.strip(),
                binary_sources_modified=bool(g("status", "--porcelain", "--", "Sources").stdout.strip()))


def machine():
    def grab(path, key):
        try:
            for line in open(path):
                if line.startswith(key):
                    return line[len(key):].lstrip(" \t:").strip().strip('"')
        except OSError:
            return None

    return dict(cores=os.cpu_count(), cpu=grab("/proc/cpuinfo", "model name"),
                memory=grab("/proc/meminfo", "MemTotal"), kernel=platform.release(),
                os=grab("/etc/os-release", "PRETTY_NAME="), loadavg_start=LOAD0)


LOAD0 = open("/proc/loadavg").read().split()[:3]


# ---------------------------------------------------------------- main

def cache_policy():
    """What cold_start does, in words, for the results."""
    if DROP:
        return ("before every cold run: remove the previous output, sync, echo 3 > /proc/sys/vm/drop_caches, then "
                "read every file of the S3 server's data directory (untimed) so the server serves from RAM; "
                "identical for every tool")
    why = "FAR: no drop_caches, see docs/performance.md section 6" if FAR else "drop_caches not writable"
    return f"before every cold run: remove the previous output and sync ({why}); the server's files stay in the page cache"


def probe_summary(res):
    """The write probes before the cold runs, in words, for the results."""
    runs = [r for c in res.get("cold_pull", {}).values() for r in c["runs"]]
    runs += [r for k, c in res.get("ttft", {}).items() if isinstance(c, dict) for r in c["runs"]]
    probes = [r["write_probe_s"] for r in runs if "write_probe_s" in r]
    if not probes:
        return None
    unsettled = sum(not r["settled"] for r in runs if "settled" in r)
    return (f"Write probe before each cold run (512 MiB into the page cache; each run waited up to {SETTLE_SECONDS:.0f} s "
            f"for one under {PROBE_LIMIT_S:.1f} s): median {statistics.median(probes):.2f} s, "
            f"{min(probes):.2f}–{max(probes):.2f}; {unsettled} of {len(probes)} runs started without a settled machine.")


def main():
    git = lambda *a: subprocess.run(["git", "-C", REPO, *a], stdout=subprocess.PIPE, text=True).stdout.strip()
    res = dict(
        benchmark="peers", smoke=SMOKE, runs=RUNS,
        started_utc=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        commit=git("rev-parse", "HEAD"), weightcache_bin=BIN, **binary_source(),
        machine=machine(), versions=versions(),
        model=dict(name=MODEL, files=SIZES, bytes=MODEL_BYTES, shard_bytes=SHARD_BYTES, tensor_bytes=TENSOR_BYTES,
                   objects=f"s3://{BUCKET}/{PREFIX}/", generator=E.get("PEERS_MAKE_MODEL", "")),
        cache_policy=cache_policy(),
        transfer_budget_mib=TRANSFER_BUDGET_MIB, weightcache_transfer_concurrency=WC_CONCURRENCY,
        weightcache_ram_cache_pages=daemon_setting("ramCache", "pages"),
        store=("far: " + FAR) if FAR else "near: the server on 127.0.0.1, straight",
    )
    cold_tools = [t for t in COLD_TOOLS if t in TOOLS or (t.startswith("curl") and "curl" in TOOLS)]
    if "cold" not in SECTIONS:
        cold_tools = []
    res["commands"] = {t: COLD_TOOLS[t][2] for t in cold_tools}
    res["commands"].update({
        "warm direct": "{k: safetensors.safe_open(snapshot/shard, framework='numpy').get_tensor(k) for every key}, per shard",
        "warm open": "weightcache.tensors.load_tensors(Client(), MODEL, shard, via='open')",
        "warm read": "weightcache.tensors.load_tensors(Client(), MODEL, shard, via='read')",
        "ttft read-through": "fresh daemon, empty staging: weightcache.tensors.read_tensor(Client(), MODEL, shard, first tensor's name) (stat, 8 bytes, header, then the tensor into a numpy array)",
        "ttft pull-then-read": "weightcache pull (empty staging), then safe_open(first shard).get_tensor(first tensor)",
    })

    # 1. cold pull -----------------------------------------------------------
    cold = {t: [] for t in cold_tools}
    log(f"cold pull: {len(cold_tools)} tools, 1 warm-up round (verifies content) + {RUNS} rounds, "
        f"{MODEL_BYTES / MIB:.1f} MiB")
    for rnd in range(RUNS + 1):
        # This VM hands memory that has been free for a few seconds back to its host, and the first touch of
        # such a page costs a host fault. The tool that writes first after tools that write nothing (Run:ai and
        # curl keep nothing on disk) writes into memory freed half a minute earlier, which can slow it down
        # (docs/performance.md, section 6; not the whole story of the far runs). So the tools that write
        # nothing go first, and each round a different writer is the first: with RUNS=3, three tools take that
        # place once each, and a median of three leaves that run out.
        writers = [t for t in cold_tools if t in DISK_WRITERS]
        k = (rnd - 1) % len(writers) if writers and rnd else 0
        for t in [t for t in cold_tools if t not in DISK_WRITERS] + writers[k:] + writers[:k]:
            r = cold_run(t, verify=(rnd == 0))
            if rnd == 0:
                if t == "rclone":
                    res["rclone_multi_thread_log"] = r.get("multi_thread_lines")
                log(f"warm-up {t:20s} {r['seconds']:7.2f} s  {r['mib_s']:7.1f} MiB/s (content checked)")
                continue
            cold[t].append(r)
            log(f"round {rnd}/{RUNS} {t:20s} {r['seconds']:7.2f} s  {r['mib_s']:7.1f} MiB/s")
    res["cold_pull"] = {}
    base = statistics.median(r["mib_s"] for r in cold["weightcache-pull"]) if cold.get("weightcache-pull") else None
    for t, runs in cold.items():
        s = summarize(runs, "mib_s")
        res["cold_pull"][t] = dict(label=COLD_TOOLS[t][0], lands=COLD_TOOLS[t][1], runs=runs,
                                   seconds=summarize(runs), mib_s=s,
                                   ratio_to_weightcache_pull=(s["median"] / base if base else None))
        if t in CPU_TIMED_WHOLE:
            res["cold_pull"][t]["cpu_bound"] = cpu_bound(runs)

    # 4. memory (from the preload runs) --------------------------------------
    if cold.get("weightcache-preload"):
        hwm = [r["daemon_vmhwm_mib"] for r in cold["weightcache-preload"]]
        res["memory"] = dict(daemon_vmhwm_mib=spread(hwm),
                             model_mib=MODEL_BYTES / MIB, transfer_budget_mib=TRANSFER_BUDGET_MIB,
                             target_mib=TRANSFER_BUDGET_MIB + 64,
                             runs=hwm)

    # 2. warm load -----------------------------------------------------------
    if "warm" in SECTIONS:
        log("warm load: staging the model once (untimed)")
        rmtree(WARM_STAGING)
        env = wc_env(WARM_STAGING)
        quiet([BIN, "pull", MODEL], env=env)
        snapshot = quiet([BIN, "path", MODEL], env=env).strip()
        daemon = Daemon(WARM_STAGING)
        warm = {c: {p: [] for p in WARM_PATHS} for c in ("cold", "warm")}
        for rnd in range(RUNS + 1):
            for cond in ("cold", "warm"):
                for via in WARM_PATHS:
                    if cond == "cold":
                        daemon.stop()
                        # An empty RAM tier, as the condition says: the daemon saves the blocks it holds on drain
                        # (the warm set) and a fresh one loads them back from disk in the background, which ran
                        # during the timed loads until 2026-12-04 (every row, the direct one too).
                        if os.path.exists(os.path.join(WARM_STAGING, "warm-set.json")):
                            os.unlink(os.path.join(WARM_STAGING, "warm-set.json"))
                        drop_caches()
                        daemon = Daemon(WARM_STAGING)
                    else:
                        load_run(via, snapshot, env)  # the warming pass
                    r = load_run(via, snapshot, daemon.env)
                    if rnd == 0:
                        continue
                    warm[cond][via].append(r)
                    log(f"round {rnd}/{RUNS} {cond:4s} via {via:6s} {r['seconds']:6.2f} s  {r['mib_s']:7.1f} MiB/s")
        daemon.stop()
        res["warm_load"] = {}
        for cond, paths in warm.items():
            base_w = statistics.median(r["mib_s"] for r in paths["direct"])
            res["warm_load"][cond] = {
                via: dict(runs=runs, seconds=summarize(runs), mib_s=summarize(runs, "mib_s"),
                          ratio_to_direct=statistics.median(r["mib_s"] for r in runs) / base_w)
                for via, runs in paths.items()}

    # 3. time to first tensor ------------------------------------------------
    if "ttft" in SECTIONS:
        tt = {m: [] for m in TTFT_MODES}
        for rnd in range(RUNS + 1):
            for mode in tt:
                r = ttft_run(mode)
                if rnd:
                    tt[mode].append(r)
                    log(f"round {rnd}/{RUNS} ttft {mode:15s} {r['seconds'] * 1000:8.1f} ms  ({r['tensor']}, {r['bytes']} bytes, checked)")
        rt, pr = (statistics.median(r["seconds"] for r in tt[m]) for m in TTFT_MODES[:2])
        res["ttft"] = {m: dict(runs=runs, seconds=summarize(runs)) for m, runs in tt.items()}
        res["ttft"]["ratio_read_through_to_pull_then_read"] = rt / pr

    # targets ------------------------------------------------------------------
    targets = []
    cp = res["cold_pull"]
    med = lambda t: cp[t]["mib_s"]["median"]
    peers = [t for t in ("aws", "boto3", "rclone", "runai") if t in cp]

    def at_cpu(reference):
        """The ratio weightcache pull could reach against `reference` at the CPU it spent (see cpu_bound)."""
        b = cp.get("weightcache-pull", {}).get("cpu_bound")
        return f"; at most {b['mib_s']['median'] / reference:.2f} at its CPU cost" if b else ""
    if "weightcache-pull" in cp and peers:
        fastest = max(peers, key=med)
        v = med("weightcache-pull") / med(fastest)
        targets.append(dict(name="cold pull: weightcache pull >= 1.2x the fastest peer", value=round(v, 3),
                            detail=f"fastest peer {fastest} {med(fastest):.1f} MiB/s{at_cpu(med(fastest))}",
                            target=">= 1.2", met=v >= 1.2))
    curls = [t for t in cp if t.startswith("curl")]
    if "weightcache-pull" in cp and curls:
        ceil_t = max(curls, key=med)
        v = med("weightcache-pull") / med(ceil_t)
        targets.append(dict(name="cold pull: weightcache pull >= 85% of the curl ceiling", value=round(v, 3),
                            detail=f"ceiling {ceil_t} {med(ceil_t):.1f} MiB/s{at_cpu(med(ceil_t))}",
                            target=">= 0.85", met=v >= 0.85))
    for cond in res.get("warm_load", {}):
        for via, goal in (("open", 0.95), ("read", 0.60)):
            v = res["warm_load"][cond][via]["ratio_to_direct"]
            targets.append(dict(name=f"load ({cond} page cache): via {via} >= {goal:.0%} of direct safe_open",
                                value=round(v, 3), target=f">= {goal}", met=v >= goal))
    if "ttft" in res:
        v = res["ttft"]["ratio_read_through_to_pull_then_read"]
        targets.append(dict(name="time to first tensor: read-through <= 10% of pull-then-read", value=round(v, 3),
                            target="<= 0.10", met=v <= 0.10))
    if "memory" in res:
        v = res["memory"]["daemon_vmhwm_mib"]["max"]
        goal = res["memory"]["target_mib"]
        targets.append(dict(name=f"daemon peak RSS during a cold preload < {TRANSFER_BUDGET_MIB} MiB budget + 64 MiB",
                            value=round(v, 1), target=f"< {goal} MiB", met=v < goal))
    res["targets"] = targets
    res["machine"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    res["duration_s"] = round(time.time() - T_START, 1)
    res["problems"] = PROBLEMS

    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "results.json"), "w") as f:
        json.dump(res, f, indent=2)
    md = markdown(res)
    with open(os.path.join(RESULTS, "results.md"), "w") as f:
        f.write(md)
    plot(res, os.path.join(RESULTS, "results.png"))
    print(md)
    log(f"written to {RESULTS}/results.{{json,md,png}} in {res['duration_s']} s")
    if PROBLEMS:
        fail("; ".join(PROBLEMS))


def markdown(res):
    L = []
    m, v = res["machine"], res["versions"]
    L.append(f"# weightcache vs peers{' (SMOKE: tiny model, not a measurement)' if res['smoke'] else ''}")
    L.append("")
    src = (f"built from `{res['binary_commit'][:10]}`{' with Sources/ modified' if res['binary_sources_modified'] else ''}"
           if res["binary_commit"] else "source unknown")
    L.append(f"{res['started_utc']}, repository at `{res['commit'][:10]}`; weightcache binary {src}, "
             f"sha256 `{v['weightcache binary sha256'][:12]}`; {m['cores']} cores {m['cpu']}, {m['memory']} RAM, "
             f"{m['os']}, kernel {m['kernel']}; loadavg {' '.join(m['loadavg_start'])} at start, "
             f"{' '.join(m['loadavg_end'])} at end; {res['runs']} runs per figure after a warm-up round, interleaved; "
             f"took {res['duration_s']:.0f} s.")
    L.append("")
    mod = res["model"]
    L.append(f"Model `{mod['name']}`: {len(mod['files'])} files, {mod['bytes'] / MIB:.1f} MiB "
             f"({mod['tensor_bytes'] / MIB:.1f} MiB of tensors in {sum(f.endswith('.safetensors') for f in mod['files'])} shards) "
             f"at `{mod['objects']}` on SeaweedFS (`{v['seaweedfs']}`), localhost.")
    L.append("")
    L.append(f"Store: {res.get('store', 'near')}. weightcache's transfer.concurrency: "
             f"{res.get('weightcache_transfer_concurrency', 8)}; ramCache.pages: "
             f"{res.get('weightcache_ram_cache_pages', 'not recorded (before 2026-12-04 16:00 UTC: /dev/shm or huge)')}.")
    L.append("")
    L.append(f"Cache policy: {res['cache_policy']}.")
    L.append("")
    probes = probe_summary(res)
    if probes:
        L.append(probes)
        L.append("")
    if res.get("cold_pull"):
        L.append("## Cold pull, S3 -> local (median of the runs; MiB/s = model bytes / seconds)")
        L.append("")
        L.append("| tool | lands in | median s | min s | max s | median MiB/s | vs weightcache pull | client CPU s | server CPU s | client peak RSS MiB |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for t, c in res["cold_pull"].items():
            cpu = statistics.median(r.get("cpu_s", r.get("cpu_s_cli", 0)) for r in c["runs"])
            server = statistics.median(r.get("server_cpu_s", 0) for r in c["runs"])
            rss = max(r.get("rss_mib", r.get("daemon_vmhwm_mib", 0)) for r in c["runs"])
            rss_note = " (daemon VmHWM)" if t == "weightcache-preload" else ""
            ratio = "n/a" if c["ratio_to_weightcache_pull"] is None else f"{c['ratio_to_weightcache_pull']:.2f}x"
            L.append(f"| {c['label']} | {c['lands']} | {c['seconds']['median']:.2f} | {c['seconds']['min']:.2f} | "
                     f"{c['seconds']['max']:.2f} | {c['mib_s']['median']:.0f} | "
                     f"{ratio} | {cpu:.1f} | {server:.1f} | {rss:.0f}{rss_note} |")
        L.append("")
        L.append("Seconds are the whole command (process start to exit) for the CLIs, and the in-process time from "
                 "creating the client to the last byte for the libraries (boto3, Run:ai), whose imports (torch) "
                 "are not counted. Ratio > 1: faster than `weightcache pull`. Server CPU: the SeaweedFS processes' "
                 "user + system seconds during the run; the server shares the machine's cores with the tool, so "
                 "CPU a tool spends is CPU the server cannot (curl to /dev/null spends almost none).")
        bound = [(c, c["cpu_bound"]) for c in res["cold_pull"].values() if c.get("cpu_bound")]
        if bound:
            L.append("")
            L.append(f"What the CPU allows: the tool and the server share {res['machine']['cores']} cores, so a run "
                     "that costs C client and S server CPU-seconds takes at least (C + S) / cores seconds, however "
                     "well it overlaps its work. The last column is the rate of that floor: the most the row could "
                     "reach here at the CPU it spent (the model's bytes over the floor). Medians over the runs; "
                     "boto3 and Run:ai are left out because their CPU counts imports that their seconds do not.")
            L.append("")
            L.append("| tool | client + server CPU s | cores kept busy | MiB/s at that CPU with every core busy |")
            L.append("|---|---:|---:|---:|")
            for c, b in bound:
                L.append(f"| {c['label']} | {b['cpu_s']['median']:.1f} | {b['cores_busy']['median']:.0%} | "
                         f"{b['mib_s']['median']:.0f} |")
        if res.get("rclone_multi_thread_log"):
            L.append("")
            L.append("rclone's log (warm-up run): " + "; ".join(f"`{x}`" for x in res["rclone_multi_thread_log"]))
        L.append("")
    if res.get("warm_load"):
        L.append("## Load every tensor, local -> process (numpy arrays)")
        L.append("")
        L.append("| page cache | path | median s | min s | max s | median MiB/s | vs direct safe_open |")
        L.append("|---|---|---:|---:|---:|---:|---:|")
        names = {"direct": "safe_open on the snapshot (direct)", "open": "client, via=\"open\" (fd passed)",
                 "read": "client, via=\"read\" (bytes over the socket)"}
        for cond, paths in res["warm_load"].items():
            label = "dropped, fresh daemon" if cond == "cold" else "warm (after a warming pass)"
            for via, c in paths.items():
                L.append(f"| {label} | {names[via]} | {c['seconds']['median']:.3f} | {c['seconds']['min']:.3f} | "
                         f"{c['seconds']['max']:.3f} | {c['mib_s']['median']:.0f} | {c['ratio_to_direct']:.2f}x |")
        L.append("")
        L.append(f"Every run loads {mod['tensor_bytes']} tensor bytes, checked against the shards' headers.")
        L.append("")
    if res.get("ttft"):
        t = res["ttft"]
        L.append("## Time to first tensor, cold model (fresh daemon, empty staging)")
        L.append("")
        L.append("| path | median ms | min ms | max ms |")
        L.append("|---|---:|---:|---:|")
        for mode in TTFT_MODES:
            s = t[mode]["seconds"]
            L.append(f"| {mode} | {s['median'] * 1000:.1f} | {s['min'] * 1000:.1f} | {s['max'] * 1000:.1f} |")
        L.append("")
        L.append(f"read-through / pull-then-read = {t['ratio_read_through_to_pull_then_read']:.3f}; first tensor "
                 f"`{t['read-through']['runs'][0]['tensor']}` ({t['read-through']['runs'][0]['bytes']} bytes), "
                 f"compared with the original every run. The read-through reads it with `weightcache.tensors.read_tensor` "
                 f"(stat, header, then the tensor into a numpy array with one `read_into`, which the client pipelines "
                 f"as 8 MiB requests up to the daemon's maxInFlight); both sides import numpy before the clock starts; "
                 f"the last row (a diagnostic, not a target) caps the client at one request in flight.")
        L.append("")
    if res.get("memory"):
        mm = res["memory"]
        L.append("## Daemon memory during a cold preload")
        L.append("")
        h = mm["daemon_vmhwm_mib"]
        L.append(f"Peak RSS (VmHWM, fresh daemon per run): median {h['median']:.1f} MiB, min {h['min']:.1f}, max {h['max']:.1f}; "
                 f"model {mm['model_mib']:.0f} MiB; transfer budget (partSize x concurrency) {mm['transfer_budget_mib']} MiB; "
                 f"target < {mm['target_mib']} MiB.")
        L.append("")
    if res["problems"]:
        L.append("## Problems seen during the run")
        L.append("")
        L += [f"- {p}" for p in res["problems"]]
        L.append("")
    L.append("## Targets (reported, not asserted)")
    L.append("")
    L.append("| target | value | goal | |")
    L.append("|---|---:|---:|---|")
    for t in res["targets"]:
        L.append(f"| {t['name']}{' (' + t['detail'] + ')' if t.get('detail') else ''} | {t['value']} | {t['target']} | "
                 f"{'met' if t['met'] else 'MISSED'} |")
    L.append("")
    L.append("## Versions")
    L.append("")
    for k, val in v.items():
        if val:
            L.append(f"- {k}: `{val}`")
    L.append("")
    L.append("## Commands")
    L.append("")
    for k, val in res["commands"].items():
        L.append(f"- {k}: `{val}`")
    L.append("")
    return "\n".join(L)


def plot(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    title = f"weightcache vs peers, {res['model']['bytes'] / MIB:.0f} MiB model, {res['machine']['cores']} cores, median of {res['runs']}"
    if res.get("store", "").startswith("far"):
        title += ", store far away (faultproxy)"
    fig.suptitle(title + (" (SMOKE)" if res["smoke"] else ""))

    def bars(ax, labels, meds, los, his, colors, ylabel, title):
        y = range(len(labels))
        err = [[m - lo for m, lo in zip(meds, los)], [hi - m for m, hi in zip(meds, his)]]
        ax.barh(list(y), meds, xerr=err, color=colors, capsize=3)
        ax.set_yticks(list(y))
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(ylabel)
        ax.set_title(title, fontsize=10)
        for i, (m, hi) in enumerate(zip(meds, his)):
            ax.text(max(m, hi), i, f"  {m:.0f}" if m >= 10 else f"  {m:.2f}", va="center", fontsize=8)
        ax.set_xlim(0, max(his) * 1.15)

    ax = axes[0][0]
    cp = res.get("cold_pull", {})
    if cp:
        ts = list(cp)
        bars(ax, [cp[t]["label"] for t in ts], [cp[t]["mib_s"]["median"] for t in ts],
             [cp[t]["mib_s"]["min"] for t in ts], [cp[t]["mib_s"]["max"] for t in ts],
             ["tab:blue" if t.startswith("weightcache") else "tab:gray" if t.startswith("curl") else "tab:orange" for t in ts],
             "MiB/s (higher is better)", "Cold pull, S3 -> local")
    else:
        ax.axis("off")
    ax = axes[0][1]
    wl = res.get("warm_load")
    if wl:
        labels, meds, los, his, colors = [], [], [], [], []
        for cond in wl:
            for via in WARM_PATHS:
                c = wl[cond][via]
                labels.append(f"{'cache dropped' if cond == 'cold' else 'warm'}: {via}")
                meds.append(c["mib_s"]["median"]); los.append(c["mib_s"]["min"]); his.append(c["mib_s"]["max"])
                colors.append("tab:orange" if via == "direct" else "tab:blue")
        bars(ax, labels, meds, los, his, colors, "MiB/s (higher is better)", "Load every tensor (direct = safe_open)")
    else:
        ax.axis("off")
    ax = axes[1][0]
    tt = res.get("ttft")
    if tt:
        modes = TTFT_MODES
        bars(ax, modes, [tt[m]["seconds"]["median"] * 1000 for m in modes], [tt[m]["seconds"]["min"] * 1000 for m in modes],
             [tt[m]["seconds"]["max"] * 1000 for m in modes], ["tab:blue", "tab:orange", "tab:cyan"], "ms (lower is better)",
             "Time to first tensor, cold model")
    else:
        ax.axis("off")
    ax = axes[1][1]
    mm = res.get("memory")
    if mm:
        h = mm["daemon_vmhwm_mib"]
        bars(ax, ["daemon peak RSS", "transfer budget", "target (budget + 64 MiB)"],
             [h["median"], mm["transfer_budget_mib"], mm["target_mib"]], [h["min"], mm["transfer_budget_mib"], mm["target_mib"]],
             [h["max"], mm["transfer_budget_mib"], mm["target_mib"]],
             ["tab:blue", "tab:gray", "tab:green"], "MiB", f"Daemon memory, cold preload of a {mm['model_mib']:.0f} MiB model")
    else:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
