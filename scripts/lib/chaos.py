"""The chaos run's driver (scripts/chaos runs it with $CAIRN_TEST_PYTHON after starting the stack).

    chaos.py run --run-dir D --bin-dir B [--short]

The stack (five services from scripts/up, a private PostgreSQL cluster and a private nats-server,
an SMTP sink) is already running; every address and secret comes from the environment that
scripts/chaos exported (CAIRN_* as for scripts/up, CHAOS_* for the private servers). This driver:

1. starts two more projector replicas (three in all);
2. drives load in threads: gRPC (AddHumanUser with a caller-chosen id, SetEmail with a code to a
   unique address, AddMembers to one of four groups; every call carries an `idempotency-key` and is
   retried with the same key until it is answered) and SCIM (POST /Users, then PATCH; a POST is
   never retried, since SCIM has no idempotency key, and a 409 after a lost answer is not counted
   as acknowledged). Only answered writes are recorded, with the phase they were answered in;
3. injects the faults one after another (Chaos.run: kill -9 of each service, NATS stopped, PostgreSQL
   restarted, a projector replica frozen inside a write transaction) and restarts what it killed, as a supervisor
   would; "recover s" runs from the end of the fault's injection (the kill, NATS started again,
   `pg_ctl restart` issued, SIGSTOP sent) until the faulted service answers /readyz and a fresh
   gRPC write and a fresh SCIM write each round-trip (read-your-writes);
4. stops the load and checks: every acknowledged write is in eventstore.events (aggregate id and
   sequence, and for gRPC the returned position); no logical write took effect twice; the stream
   holds every event once (Nats-Msg-Id unique, the set of ids equal to the store's); every read
   model table's checksum equals its checksum after `cairn projections reset <name> --wait`; every
   acknowledged SetEmail-with-code has a message in the sink (per notifier kill at most one more
   copy of a message, same Message-ID, at most CAIRN_NOTIFIER_CONCURRENCY in all:
   docs/ARCHITECTURE.md, "The ambiguous moment"); every service still
   runs and is ready, and none was restarted except after its own kill -9.

It prints the table and exits 1 if any must-be-zero figure is not zero.
"""

import argparse
import asyncio
import csv
import glob
import io
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from smoke import free_ports, generate_stubs, read_secret, scim_request, tail  # noqa: E402  (shared helpers)

POLL_SECS = 0.1  # poll_interval of every wait
RECOVER_DEADLINE_SECS = 120.0
CALL_TIMEOUT_SECS = 10.0
RETRYABLE = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "UNKNOWN", "INTERNAL", "CANCELLED", "RESOURCE_EXHAUSTED", "ABORTED"}


def log(line):
    print(f"chaos: {time.strftime('%H:%M:%S')} {line}", flush=True)


def http_ok(url, timeout=2.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (OSError, urllib.error.HTTPError):
        return False


def dial(addr):
    host, port = addr.rsplit(":", 1)
    return f"127.0.0.1:{port}" if host in ("0.0.0.0", "") else addr


# -- processes --------------------------------------------------------------------------------


class Service:
    """One service process: started by scripts/up (pid file only) or by this driver."""

    def __init__(self, name, binary, ready_url, pidfile, env=None):
        self.name, self.binary, self.ready_url, self.pidfile = name, binary, ready_url, pidfile
        self.env = env or {}
        self.popen = None
        self.restarts = 0
        self.pid = self.read_pid()

    def read_pid(self):
        try:
            with open(self.pidfile, encoding="utf-8") as file:
                return int(file.read().strip())
        except (OSError, ValueError):
            return None

    def alive(self):
        if self.pid is None:
            return False
        if self.popen is not None:
            return self.popen.poll() is None
        try:
            with open(f"/proc/{self.pid}/stat", encoding="utf-8") as file:
                return file.read().split(") ", 1)[1][0] != "Z"
        except OSError:
            return False

    def start(self, run_dir, bin_dir):
        logfile = open(os.path.join(run_dir, "logs", self.name + ".log"), "ab")
        self.popen = subprocess.Popen(
            [os.path.join(bin_dir, self.binary)],
            stdin=subprocess.DEVNULL,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        logfile.close()
        self.pid = self.popen.pid
        with open(self.pidfile, "w", encoding="utf-8") as file:
            file.write(f"{self.pid}\n")

    def signal(self, sig):
        os.kill(self.pid, sig)

    def kill9_and_reap(self):
        os.kill(self.pid, signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait()
        else:
            deadline = time.monotonic() + 10
            while self.alive() and time.monotonic() < deadline:
                time.sleep(POLL_SECS)

    def ready(self):
        return http_ok(self.ready_url)


# -- the ledger of acknowledged writes --------------------------------------------------------


class Ledger:
    def __init__(self):
        self.lock = threading.Lock()
        self.acks = []  # dicts: phase, kind, aggregate_id, sequence, position, extra
        self.phase = "baseline"
        self.errors = {}  # phase -> count of failed attempts (expected during faults)

    def ack(self, kind, aggregate_id, sequence, position="", extra=""):
        with self.lock:
            self.acks.append(
                dict(phase=self.phase, kind=kind, aggregate_id=aggregate_id, sequence=int(sequence),
                     position=position, extra=extra)
            )

    def error(self):
        with self.lock:
            self.errors[self.phase] = self.errors.get(self.phase, 0) + 1


# -- the driver -------------------------------------------------------------------------------


class Chaos:
    def __init__(self, args):
        self.args = args
        self.short = args.short
        self.run_dir = args.run_dir
        self.bin_dir = args.bin_dir
        env = os.environ
        self.tag = env["CHAOS_TAG"]
        self.db_url = env["CAIRN_DATABASE_URL"]
        self.nats_url = env["CAIRN_NATS_URL"]
        self.stream = env["CAIRN_STREAM_NAME"]
        self.subjects = env["CAIRN_STREAM_SUBJECT_PREFIX"] + ".>"
        self.scim_url = f"http://{dial(env['CAIRN_SCIM_HTTP_ADDR'])}/scim/v2"
        self.api_addr = dial(env["CAIRN_API_GRPC_ADDR"])
        secrets_dir = os.path.join(self.run_dir, "secrets")
        self.admin_token = read_secret(os.path.join(secrets_dir, "admin.token"))
        self.scim_token = read_secret(os.path.join(secrets_dir, "scim.token"))
        self.sink_dir = env["CHAOS_SINK_DIR"]
        self.actions_addr = dial(env["CAIRN_ACTIONS_GRPC_ADDR"])
        self.hook_dir = env["CHAOS_HOOK_DIR"]
        self.hook_url = env["CHAOS_HOOK_URL"]
        self.ledger = Ledger()
        self.stop_load = threading.Event()
        self.counter = itertools.count(1)
        self.failures = []  # must-be-zero findings outside the table
        self.rows = []
        self.unexpected_exits = []
        rd = self.run_dir

        def ops(var):
            return f"http://{dial(env[var])}/readyz"

        self.services = {
            "eventstore": Service("eventstore", "eventstore", ops("CAIRN_EVENTSTORE_HTTP_ADDR"), f"{rd}/eventstore.pid"),
            "command-api": Service("command-api", "command-api", ops("CAIRN_API_HTTP_ADDR"), f"{rd}/command-api.pid"),
            "scim-gateway": Service("scim-gateway", "scim-gateway", ops("CAIRN_SCIM_HTTP_ADDR"), f"{rd}/scim-gateway.pid"),
            "notifier": Service("notifier", "notifier", ops("CAIRN_NOTIFIER_HTTP_ADDR"), f"{rd}/notifier.pid"),
            "actions": Service("actions", "actions", ops("CAIRN_ACTIONS_HTTP_ADDR"), f"{rd}/actions.pid"),
            "projector": Service("projector", "projector", ops("CAIRN_PROJECTOR_HTTP_ADDR"), f"{rd}/projector.pid"),
        }
        os.makedirs(f"{rd}/replicas", exist_ok=True)
        for n, port in zip((2, 3), free_ports(2)):
            name = f"projector-{n}"
            self.services[name] = Service(
                name, "projector", f"http://127.0.0.1:{port}/readyz", f"{rd}/replicas/{name}.pid",
                {"CAIRN_PROJECTOR_HTTP_ADDR": f"127.0.0.1:{port}"},
            )

    # -- clients ------------------------------------------------------------------------------

    def load_stubs(self):
        import grpc

        generate_stubs(self.run_dir, [
            "cairn/common/v1/common.proto", "cairn/user/v1/user.proto", "cairn/group/v1/group.proto",
            "cairn/action/v1/action.proto",
        ])
        from cairn.action.v1 import action_pb2, action_pb2_grpc
        from cairn.group.v1 import group_pb2, group_pb2_grpc
        from cairn.user.v1 import user_pb2, user_pb2_grpc

        self.grpc, self.upb, self.gpb = grpc, user_pb2, group_pb2
        channel = grpc.insecure_channel(self.api_addr)
        self.users = user_pb2_grpc.UserServiceStub(channel)
        self.groups = group_pb2_grpc.GroupServiceStub(channel)
        self.apb = action_pb2
        self.actions = action_pb2_grpc.ActionServiceStub(grpc.insecure_channel(self.actions_addr))

    def call(self, method, request, key, deadline):
        """A unary call with the admin token and an idempotency key, retried with the same key on
        transport and server errors until `deadline`: the response, or None."""
        metadata = [("authorization", "Bearer " + self.admin_token), ("idempotency-key", key)]
        while True:
            try:
                return method(request, metadata=metadata, timeout=CALL_TIMEOUT_SECS)
            except self.grpc.RpcError as error:
                self.ledger.error()
                if error.code().name not in RETRYABLE or time.monotonic() > deadline:
                    return None
            time.sleep(0.2)  # poll_interval between retries of one call

    def scim(self, method, path, body=None, timeout=CALL_TIMEOUT_SECS):
        """(status, resource) for an answer, (status, None) for an error answer, (0, None) for none."""
        try:
            status, answer = scim_request(self.scim_url, self.scim_token, method, path, body, timeout)
        except OSError:
            return 0, None
        return status, answer if isinstance(answer, dict) else None

    @staticmethod
    def version(resource):
        return int(re.sub(r"\D", "", resource["meta"]["version"]))

    # -- writes -------------------------------------------------------------------------------

    def grpc_user(self, n, deadline, with_email=True):
        """AddHumanUser, then SetEmail with a code, then AddMembers: returns (user id, position)."""
        uid = str(uuid.uuid4())
        upb = self.upb
        added = self.call(self.users.AddHumanUser, upb.AddHumanUserRequest(
            user_id=uid, user_name=f"g-{self.tag}-{n}",
            profile=upb.HumanProfile(name=upb.Name(given_name="Chaos", family_name=f"G{n}")),
        ), f"add-{uid}", deadline)
        if added is None:
            return None, None
        self.ledger.ack("grpc.AddHumanUser", uid, added.details.sequence, added.details.position)
        position = added.details.position
        if with_email:
            email = f"g-{self.tag}-{n}@chaos.test"
            set_email = self.call(self.users.SetEmail, upb.SetEmailRequest(
                user_id=uid, email=email, verification=upb.EMAIL_VERIFICATION_SEND_CODE,
            ), f"email-{uid}", deadline)
            if set_email is None:
                return uid, position
            self.ledger.ack("grpc.SetEmail", uid, set_email.details.sequence, set_email.details.position, email)
            group = self.group_ids[n % len(self.group_ids)]
            member = self.call(self.groups.AddMembers, self.gpb.MembersRequest(group_id=group, user_ids=[uid]),
                               f"member-{uid}", deadline)
            if member is None:
                return uid, position
            self.ledger.ack("grpc.AddMembers", group, member.details.sequence, member.details.position, uid)
            position = member.details.position
        return uid, position

    def scim_user(self, n):
        """POST /Users then PATCH it: the id, or None."""
        status, created = self.scim("POST", "/Users", {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": f"s-{self.tag}-{n}",
            "name": {"givenName": "Chaos", "familyName": f"S{n}"},
            "emails": [{"value": f"s-{self.tag}-{n}@scim.chaos.test", "primary": True}],
        })
        if status != 201:
            self.ledger.error()
            return None
        uid = created["id"]
        self.ledger.ack("scim.POST", uid, self.version(created))
        status, patched = self.scim("PATCH", f"/Users/{uid}", {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "title", "value": f"title-{n}"}],
        })
        if status == 200:
            self.ledger.ack("scim.PATCH", uid, self.version(patched))
        else:
            self.ledger.error()
        return uid

    def grpc_worker(self):
        while not self.stop_load.is_set():
            self.grpc_user(next(self.counter), time.monotonic() + 60)
            time.sleep(self.pace)  # the load's pace, not a wait for a condition

    def scim_worker(self):
        while not self.stop_load.is_set():
            if self.scim_user(next(self.counter)) is None:
                time.sleep(0.2)  # poll_interval while the gateway is down
            time.sleep(self.pace)  # the load's pace, not a wait for a condition

    # -- recovery -----------------------------------------------------------------------------

    def probe(self, deadline):
        """A fresh gRPC write read back with its consistency token and a fresh SCIM write read back."""
        while time.monotonic() < deadline:
            uid, position = self.grpc_user(next(self.counter), deadline, with_email=False)
            if uid is None:
                continue
            try:
                got = self.users.GetUser(self.upb.GetUserRequest(user_id=uid, min_position=position),
                                         metadata=[("authorization", "Bearer " + self.admin_token)], timeout=5)
                if got.user.id == uid:
                    break
            except self.grpc.RpcError:
                time.sleep(POLL_SECS)
        else:
            return False
        while time.monotonic() < deadline:
            uid = self.scim_user(next(self.counter))
            if uid is not None:
                status, _ = self.scim("GET", f"/Users/{uid}", timeout=5)
                if status == 200:
                    return True
            time.sleep(POLL_SECS)
        return False

    def recover(self, started, services, deadline_secs=RECOVER_DEADLINE_SECS):
        deadline = started + deadline_secs
        for service in services:
            while not service.ready():
                if time.monotonic() > deadline:
                    return None
                time.sleep(POLL_SECS)
        ready = time.monotonic() - started
        if not self.probe(deadline):
            return None
        log(f"       /readyz after {ready:.1f} s, write round trips after {time.monotonic() - started:.1f} s")
        return time.monotonic() - started

    # -- faults -------------------------------------------------------------------------------

    def lease_holder(self, projection="users"):
        """The projector replica holding `projection`'s lease (from the owner id each logs at start)."""
        owner = self.psql(f"select owner_id from projection_locks where projection_name = '{projection}' "
                          "and expires_at > now() limit 1").strip()
        for name in ("projector", "projector-2", "projector-3"):
            path = os.path.join(self.run_dir, "logs", name + ".log")
            if owner and owner in "".join(tail(path, 400)):
                return self.services[name]
        return self.services["projector-2"]

    def fault_kill(self, name):
        service = self.lease_holder() if name == "projector" else self.services[name]
        label = f"kill -9 {service.name}" + (" (users lease)" if name == "projector" else "")
        self.begin(label)
        service.kill9_and_reap()
        started = time.monotonic()
        service.start(self.run_dir, self.bin_dir)  # the supervisor restarts it at once
        service.restarts += 1
        return label, started, [service]

    def fault_target_down(self):
        """The webhook receiver stopped (SIGTERM: connections refused) and started again."""
        secs = 5 if self.short else 15
        label = f"webhook target down {secs} s"
        self.begin(label)
        pid = int(open(os.environ["CHAOS_HOOK_PIDFILE"]).read())
        os.kill(pid, signal.SIGTERM)
        time.sleep(secs)  # the fault's length: the target stays down this long
        self.start_receiver()
        return label, time.monotonic(), [self.services["actions"]]

    def start_receiver(self):
        hook = subprocess.Popen(os.environ["CHAOS_HOOK_CMD"].split(), stdin=subprocess.DEVNULL,
                                stdout=open(os.path.join(self.run_dir, "logs", "receiver.log"), "ab"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        with open(os.environ["CHAOS_HOOK_PIDFILE"], "w") as file:
            file.write(f"{hook.pid}\n")

    def fault_nats(self):
        secs = 5 if self.short else 20
        label = f"NATS stopped {secs} s"
        self.begin(label)
        pid = int(open(os.environ["CHAOS_NATS_PIDFILE"]).read())
        os.kill(pid, signal.SIGTERM)
        while os.path.exists(f"/proc/{pid}"):
            try:
                if open(f"/proc/{pid}/stat").read().split(") ", 1)[1][0] == "Z":
                    break
            except OSError:
                break
            time.sleep(POLL_SECS)
        time.sleep(secs)  # the fault's length: NATS stays down this long
        nats = subprocess.Popen(os.environ["CHAOS_NATS_CMD"].split(), stdin=subprocess.DEVNULL,
                                stdout=open(os.path.join(self.run_dir, "logs", "nats.log"), "ab"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        with open(os.environ["CHAOS_NATS_PIDFILE"], "w") as file:
            file.write(f"{nats.pid}\n")
        return label, time.monotonic(), [self.services["eventstore"]]

    def fault_postgres(self):
        label = "PostgreSQL restarted (-m fast)"
        self.begin(label)
        started = time.monotonic()
        subprocess.run(os.environ["CHAOS_PG_RESTART"], shell=True, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return label, started, list(self.services.values())

    def fault_freeze(self):
        service = self.lease_holder()
        ttl = int(os.environ.get("CAIRN_PROJECTOR_LEASE_TTL_SECS", "5"))
        frozen_for = 2 * ttl + 2
        label = f"SIGSTOP {service.name} {frozen_for} s (TTL {ttl} s)"
        self.begin(label)
        tries = self.stop_inside_transaction(service)
        started = time.monotonic()
        log(f"       frozen inside a write transaction (after {tries} tries)" if tries else
            "       frozen, but not caught inside a write transaction (the milder case)")
        # While it is frozen: the other replicas should take its leases and reads should go on.
        # The probe gets the freeze plus a margin; past it, the replica is resumed anyway.
        others = [self.services[n] for n in ("projector", "projector-2", "projector-3") if self.services[n] is not service]
        diagnostics = threading.Timer(ttl + 3, self.freeze_diagnostics, args=(service,))
        diagnostics.start()
        recovered = self.recover(started, others, deadline_secs=frozen_for + (20 if self.short else 40))
        diagnostics.join()
        remaining = started + frozen_for - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)  # the fault's length: the replica stays frozen past its lease
        service.signal(signal.SIGCONT)
        if recovered is None:
            log(f"       no read-your-writes round trip while {service.name} was frozen; resumed it")
            resumed = time.monotonic()
            after = self.recover(resumed, others + [service])
            log("       after SIGCONT: " + (f"recovered in {after:.1f} s" if after is not None else "DID NOT RECOVER"))
        return label, started, [service], recovered

    def stop_inside_transaction(self, service, attempts=60):
        """SIGSTOPs the replica at a moment when one of its PostgreSQL sessions is inside a write
        transaction (the worst case for a pause: it holds row locks and the visibility horizon).
        SIGSTOP, look (pg_stat_activity: idle in transaction with an xid; `ss -tnp`: whose socket),
        SIGCONT and retry a little later if not; after `attempts` it stays frozen anyway. Returns the
        try that caught it, or 0."""
        import random

        for attempt in range(1, attempts + 1):
            service.signal(signal.SIGSTOP)
            try:
                ports = set(self.psql(
                    "select client_port from pg_stat_activity where datname = current_database() "
                    "and backend_xid is not null and state like 'idle in transaction%'").split())
            except RuntimeError:
                ports = set()
            if ports:
                sockets = subprocess.run(["ss", "-tnpH"], capture_output=True, text=True).stdout
                for line in sockets.splitlines():
                    fields = line.split()
                    if len(fields) >= 6 and f"pid={service.pid}," in line and fields[3].rsplit(":", 1)[-1] in ports:
                        return attempt
            if attempt == attempts:
                return 0
            service.signal(signal.SIGCONT)
            time.sleep(random.uniform(0.02, 0.2))  # a random moment for the next try
        return 0

    def freeze_diagnostics(self, service):
        """What holds the read path while a replica is frozen: sessions idle in a transaction (they
        hold the event store's visibility horizon and row locks), sessions waiting on a lock, and
        the leases. Written to logs/freeze-diagnostics.txt; a summary line is printed."""
        try:
            report = self.psql(
                "select 'session', pid, application_name, state, backend_xid, backend_xmin, "
                "round(extract(epoch from now() - xact_start)::numeric, 1) as xact_secs, wait_event_type, "
                "left(regexp_replace(query, '\\s+', ' ', 'g'), 100) from pg_stat_activity "
                "where datname = current_database() and pid <> pg_backend_pid() "
                "and (state like 'idle in transaction%' or wait_event_type = 'Lock' or xact_start < now() - interval '3 seconds')"
            ) + self.psql(
                "select 'lease', projection_name, owner_id, round(extract(epoch from expires_at - now())::numeric, 1) "
                "from projection_locks order by 2"
            ) + self.psql(
                "select 'horizon', eventstore.visible_below(), "
                "(select max(position) from eventstore.events), "
                "(select count(*) from eventstore.events where position >= eventstore.visible_below())"
            )
        except RuntimeError as error:
            report = f"diagnostics failed: {error}\n"
        with open(os.path.join(self.run_dir, "logs", "freeze-diagnostics.txt"), "a", encoding="utf-8") as file:
            file.write(report)
        lines = report.splitlines()
        idle = sum(1 for l in lines if l.startswith("session|") and "|idle in transaction" in l)
        waiting = sum(1 for l in lines if l.startswith("session|") and "|Lock|" in l)
        horizon = next((l for l in lines if l.startswith("horizon|")), "")
        log(f"       {service.name} frozen: {idle} session(s) idle in transaction, {waiting} waiting on a lock; "
            f"horizon|xmin|max position|events at or past xmin: {horizon}")

    def begin(self, label):
        log(f"fault: {label}")
        with self.ledger.lock:
            self.ledger.phase = label

    def run_fault(self, fault):
        pids = {name: s.pid for name, s in self.services.items()}
        out = fault()
        label, started, services = out[:3]
        recovered = out[3] if len(out) > 3 else self.recover(started, services)
        # the frozen replica must be ready again too
        if len(out) > 3 and recovered is not None:
            back = self.recover(time.monotonic(), services)
            recovered = recovered if back is not None else None
        self.rows.append({"fault": label, "recover": recovered})
        log(f"       recovered in {recovered:.1f} s" if recovered is not None else "       DID NOT RECOVER")
        time.sleep(self.settle)  # load goes on under the recovered stack for a while
        for name, service in self.services.items():
            if service.pid == pids[name] and not service.alive():
                self.unexpected_exits.append(f"{name} exited by itself during '{label}'")
                service.start(self.run_dir, self.bin_dir)

    # -- checks -------------------------------------------------------------------------------

    def psql(self, sql, stdin=None):
        result = subprocess.run(["psql", self.db_url, "-v", "ON_ERROR_STOP=1", "-Atq", "-c", sql] if stdin is None
                                else ["psql", self.db_url, "-v", "ON_ERROR_STOP=1", "-Atq"],
                                input=stdin, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"psql: {result.stderr.strip()}")
        return result.stdout

    def check_store(self):
        """Per phase: acknowledged writes missing from the store, and logical writes applied twice."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        for a in self.ledger.acks:
            writer.writerow([a["phase"], a["kind"], a["aggregate_id"], a["sequence"], a["position"], a["extra"]])
        script = (
            "create temp table acks (phase text, kind text, aggregate_id uuid, sequence bigint, position text, extra text);\n"
            "copy acks from stdin (format csv);\n" + buffer.getvalue() + "\\.\n"
            "select a.phase, count(*),\n"
            "  count(*) filter (where e.aggregate_id is null),\n"
            "  count(*) filter (where case a.kind\n"
            "    when 'grpc.AddHumanUser' then (select count(*) from eventstore.events x where x.aggregate_id = a.aggregate_id and x.event_type = 'user.human.added')\n"
            "    when 'scim.POST' then (select count(*) from eventstore.events x where x.aggregate_id = a.aggregate_id and x.event_type = 'user.human.added')\n"
            "    when 'grpc.SetEmail' then (select count(*) from eventstore.events x where x.aggregate_id = a.aggregate_id and x.event_type = 'user.human.email.code.added')\n"
            "    when 'grpc.AddMembers' then (select count(*) from eventstore.events x where x.aggregate_id = a.aggregate_id and x.event_type = 'group.member.added' and x.payload::text like '%' || a.extra || '%')\n"
            "    else 1 end > 1)\n"
            "from acks a left join eventstore.events e on e.aggregate_id = a.aggregate_id and e.sequence = a.sequence\n"
            "  and (coalesce(a.position, '') = '' or a.position = e.position || '.' || e.in_tx_order)\n"
            "group by a.phase;\n"
        )
        out = {}
        for line in self.psql(None, stdin=script).splitlines():
            phase, acked, lost, dups = line.split("|")
            out[phase] = (int(acked), int(lost), int(dups))
        return out

    def wait_for(self, what, condition, deadline_secs):
        deadline = time.monotonic() + deadline_secs
        while not condition():
            if time.monotonic() > deadline:
                self.failures.append(f"timed out waiting for {what}")
                return False
            time.sleep(0.5)  # poll_interval of the final checks
        return True

    def check_stream(self):
        async def read():
            import nats
            from nats.errors import TimeoutError as NatsTimeout

            nc = await nats.connect(self.nats_url)
            js = nc.jetstream()
            info = await js.stream_info(self.stream)
            total = info.state.messages
            ids, positions = [], []
            sub = await js.pull_subscribe(self.subjects, stream=self.stream)
            while len(ids) < total:
                try:
                    batch = await sub.fetch(1000, timeout=5)
                except NatsTimeout:
                    break
                for message in batch:
                    ids.append(message.headers.get("Nats-Msg-Id"))
                    positions.append((int(message.headers.get("Cairn-Position", 0)),
                                      int(message.headers.get("Cairn-Offset", 0))))
                    await message.ack()
            await nc.close()
            return total, ids, positions

        store_count = lambda: int(self.psql("select count(*) from eventstore.events"))  # noqa: E731

        def caught_up():
            total, _, _ = asyncio.run(stream_count())
            return total >= store_count()

        async def stream_count():
            import nats

            nc = await nats.connect(self.nats_url)
            info = await nc.jetstream().stream_info(self.stream)
            await nc.close()
            return info.state.messages, None, None

        self.wait_for("the stream to catch up with the store", caught_up, 60)
        total, ids, positions = asyncio.run(read())
        store_ids = set(self.psql("select id from eventstore.events").split())
        dup = len(ids) - len(set(ids))
        missing = len(store_ids - set(ids))
        extra = len(set(ids) - store_ids)
        in_order = all(a < b for a, b in zip(positions, positions[1:]))
        return dict(messages=total, read=len(ids), events=len(store_ids), duplicates=dup,
                    missing=missing, extra=extra, in_order=in_order)

    def checksums(self):
        tables = ["instances", "orgs", "org_domains", "users", "groups", "group_members", "milestones"]
        return {t: self.psql(f"select coalesce(md5(string_agg(x::text, ',' order by x::text)), 'empty') "
                             f"from projections.{t} x").strip() for t in tables}

    def projections_caught_up(self):
        return self.psql(
            "select count(*) from projections.projection_states s where s.rebuild_requested or s.status <> 'active' "
            "or (s.position, s.position_offset) < (select e.position, e.in_tx_order from eventstore.events e "
            "where e.instance_id = s.instance_id order by 1 desc, 2 desc limit 1)"
        ).strip() == "0"

    def check_read_models(self):
        self.wait_for("the projections to reach the head", self.projections_caught_up, 60)
        before = self.checksums()
        for name in ("instances", "orgs", "users", "groups", "milestones"):
            result = subprocess.run([os.path.join(self.bin_dir, "cairn"), "projections", "reset", name, "--wait"],
                                    capture_output=True, text=True, timeout=180)
            if result.returncode != 0:
                self.failures.append(f"cairn projections reset {name} failed: {result.stderr.strip()[-300:]}")
        after = self.checksums()
        return {t: (before[t], after[t]) for t in before}

    def check_emails(self):
        requested = {a["extra"]: a["phase"] for a in self.ledger.acks if a["kind"] == "grpc.SetEmail"}

        message_ids = {}

        def counts():
            found = {}
            for name in glob.glob(os.path.join(self.sink_dir, "msg-*.json")):
                try:
                    with open(name, encoding="utf-8") as file:
                        message = json.load(file)
                except (OSError, ValueError):
                    continue
                for rcpt in message["rcpt_tos"]:
                    found[rcpt.lower()] = found.get(rcpt.lower(), 0) + 1
                    message_ids.setdefault(rcpt.lower(), set()).add(message.get("message_id"))
            return found

        def all_delivered():
            found = counts()
            return all(found.get(e, 0) >= 1 for e in requested)

        self.wait_for("every requested email in the sink", all_delivered, 150)
        message_ids.clear()
        found = counts()
        # A copy is a resend of the same message (same Message-ID) or it is a second email.
        self.mixed_message_ids = sorted(e for e in requested if len(message_ids.get(e, ())) > 1)
        self.most_copies = max((found.get(e, 0) - 1 for e in requested), default=0)
        per_phase = {}
        for email, phase in requested.items():
            missing, copies = per_phase.get(phase, (0, 0))
            n = found.get(email, 0)
            per_phase[phase] = (missing + (n == 0), copies + max(0, n - 1))
        return len(requested), per_phase

    # -- webhooks -----------------------------------------------------------------------------

    def configure_webhooks(self):
        """One target at the receiver for every event of the instance (`event:*`); the receiver
        verifies each signature with the secret shown once here."""
        metadata = [("authorization", "Bearer " + self.admin_token)]
        apb = self.apb
        created = self.actions.CreateTarget(apb.CreateTargetRequest(settings=apb.TargetSettings(
            name=f"chaos-{self.tag}", endpoint=self.hook_url + "/chaos", kind=apb.TARGET_KIND_WEBHOOK,
            timeout_ms=3000)), metadata=metadata, timeout=CALL_TIMEOUT_SECS)
        with open(os.path.join(self.hook_dir, "secrets.json"), "w", encoding="utf-8") as file:
            json.dump({"/chaos": [created.signing_secret]}, file)
        execution = self.actions.SetExecution(apb.SetExecutionRequest(
            condition="event:*", target_ids=[created.id]), metadata=metadata, timeout=CALL_TIMEOUT_SECS)
        self.webhooks_from = execution.position
        log(f"webhook target {created.id} for every event after {self.webhooks_from}")

    def check_webhooks(self):
        """Every event from the execution's own on (it matches `event:*` too) reached the receiver with a 2xx answer, signed, under
        its own id as webhook-id, each aggregate in sequence order (by first acceptance)."""
        position, offset = (int(x) for x in self.webhooks_from.split("."))
        rows = self.psql(
            "select id, aggregate_id, sequence from eventstore.events "
            f"where (position, in_tx_order) >= ({position}, {offset})").split()
        expected = {}
        for row in rows:
            event_id, aggregate, sequence = row.split("|")
            expected[event_id] = (aggregate, int(sequence))

        def requests():
            found = []
            try:
                with open(os.path.join(self.hook_dir, "requests.jsonl"), encoding="utf-8") as file:
                    for line in file:
                        try:
                            found.append(json.loads(line))
                        except ValueError:
                            pass
            except OSError:
                pass
            return found

        def all_delivered():
            accepted = {r["id"] for r in requests() if 200 <= r["status"] < 300}
            return all(e in accepted for e in expected)

        self.wait_for("every event delivered to the webhook target", all_delivered, 240)
        got = requests()
        accepted = [r for r in got if 200 <= r["status"] < 300]
        counts = {}
        first = {}
        for r in accepted:
            counts[r["id"]] = counts.get(r["id"], 0) + 1
            first.setdefault(r["id"], r["at"])
        by_aggregate = {}
        for event_id, (aggregate, sequence) in expected.items():
            if event_id in first:
                by_aggregate.setdefault(aggregate, []).append((sequence, first[event_id]))
        out_of_order = sum(
            1 for deliveries in by_aggregate.values()
            if [s for s, _ in sorted(deliveries, key=lambda d: d[1])] != sorted(s for s, _ in deliveries))
        return dict(
            expected=len(expected),
            delivered=sum(1 for e in expected if e in counts),
            missing=sum(1 for e in expected if e not in counts),
            copies=sum(c - 1 for c in counts.values()),
            unknown=sum(1 for i in counts if i not in expected),
            unverified=sum(1 for r in got if r["verified"] != [True]),
            out_of_order=out_of_order,
            refused=len(got) - len(accepted),
        )

    # -- the run ------------------------------------------------------------------------------

    def run(self):
        self.pace = 0.05 if self.short else 0.02
        self.settle = 3 if self.short else 8
        self.load_stubs()
        for name in ("projector-2", "projector-3"):
            self.services[name].start(self.run_dir, self.bin_dir)
        deadline = time.monotonic() + 60
        for service in self.services.values():
            while not service.ready():
                if time.monotonic() > deadline:
                    raise SystemExit(f"chaos: FAIL {service.name} not ready at {service.ready_url}")
                time.sleep(POLL_SECS)
        log(f"3 projector replicas and {len(self.services) - 3} other services ready")
        self.configure_webhooks()
        self.group_ids = []
        for i in range(4):
            created = self.call(self.groups.AddGroup, self.gpb.AddGroupRequest(display_name=f"chaos-{self.tag}-{i}"),
                                f"group-{self.tag}-{i}", time.monotonic() + 30)
            if created is None:
                raise SystemExit("chaos: FAIL could not create the groups")
            self.group_ids.append(created.group.id)

        workers = [threading.Thread(target=self.grpc_worker, daemon=True) for _ in range(2 if self.short else 3)]
        workers += [threading.Thread(target=self.scim_worker, daemon=True) for _ in range(1 if self.short else 2)]
        for worker in workers:
            worker.start()
        log("load running (gRPC and SCIM threads)")
        time.sleep(self.settle)  # baseline load before the first fault
        faults = [lambda n=n: self.fault_kill(n)
                  for n in ("eventstore", "command-api", "scim-gateway", "projector", "notifier", "actions")]
        faults += [self.fault_target_down, self.fault_nats, self.fault_postgres, self.fault_freeze]
        for fault in faults:
            self.run_fault(fault)
        with self.ledger.lock:
            self.ledger.phase = "after the faults"
        self.stop_load.set()
        for worker in workers:
            worker.join(timeout=90)
        log(f"load stopped: {len(self.ledger.acks)} writes acknowledged")

        store = self.check_store()
        requested, emails = self.check_emails()
        stream = self.check_stream()
        webhooks = self.check_webhooks()
        models = self.check_read_models()
        alive = {name: s.alive() and s.ready() for name, s in self.services.items()}
        return self.report(store, requested, emails, stream, models, alive, webhooks)

    def report(self, store, requested, emails, stream, models, alive, webhooks):
        bad = False
        phases = ["baseline"] + [row["fault"] for row in self.rows] + ["after the faults"]
        recover = {row["fault"]: row["recover"] for row in self.rows}
        print()
        print(f"{'fault':<36} {'acked':>6} {'lost':>5} {'dups':>5} {'emails':>7} {'mail copies':>11} {'errors':>7} {'recover s':>10}")
        print("(acked: writes answered in the phase; lost: of those, not in the store or, for SetEmail, no email; dups: "
              "writes applied twice; emails: SetEmails with a code; mail copies: second copies in the sink; "
              "errors: failed attempts, retried)")
        totals = [0, 0, 0]
        for phase in phases:
            acked, lost, dups = store.get(phase, (0, 0, 0))
            missing, copies = emails.get(phase, (0, 0))
            rec = recover.get(phase, "")
            rec_text = "-" if phase not in recover else ("FAILED" if rec is None else f"{rec:.1f}")
            if phase in recover and rec is None:
                bad = True
            lost_all, dups_all = lost + missing, dups
            bad |= lost_all > 0 or dups_all > 0
            totals = [totals[0] + acked, totals[1] + lost_all, totals[2] + dups_all]
            n_emails = sum(1 for a in self.ledger.acks if a["kind"] == "grpc.SetEmail" and a["phase"] == phase)
            print(f"{phase:<36} {acked:>6} {lost_all:>5} {dups_all:>5} {n_emails:>7} {copies:>11} "
                  f"{self.ledger.errors.get(phase, 0):>7} {rec_text:>10}")
        print(f"{'total':<36} {totals[0]:>6} {totals[1]:>5} {totals[2]:>5} {requested:>7}")
        print()
        s = stream
        stream_ok = s["duplicates"] == 0 and s["missing"] == 0 and s["extra"] == 0 and s["in_order"] \
            and s["read"] == s["events"]
        print(f"stream {self.stream}: {s['messages']} messages, {s['read']} read, {s['events']} events in the store; "
              f"duplicate ids {s['duplicates']}, missing {s['missing']}, unknown {s['extra']}, "
              f"in position order: {'yes' if s['in_order'] else 'NO'} -> {'ok' if stream_ok else 'FAIL'}")
        bad |= not stream_ok
        differ = [t for t, (a, b) in models.items() if a != b]
        print(f"read models: {len(models)} tables checksummed before and after a rebuild from zero; "
              f"differ: {', '.join(differ) or 'none'} -> {'ok' if not differ else 'FAIL'}")
        bad |= bool(differ)
        kills = sum(s.restarts for s in self.services.values())
        down = [n for n, ok in alive.items() if not ok]
        print(f"services: {len(alive)} running and ready at the end: {'yes' if not down else 'NO: ' + ', '.join(down)}; "
              f"restarts {kills} (one per kill -9); exits nobody caused: {len(self.unexpected_exits)}")
        bad |= bool(down) or bool(self.unexpected_exits)
        for line in self.unexpected_exits + self.failures:
            print(f"FAIL {line}")
        bad |= bool(self.failures)
        copies = sum(c for _, c in emails.values())
        missing = sum(m for m, _ in emails.values())
        # The documented bound (guarantee 10, "The ambiguous moment"): a crash between the SMTP
        # server's acceptance and the record gives that message one more copy with the same
        # Message-ID. A crash can catch every sender in flight, so per kill at most one copy per
        # message and at most CAIRN_NOTIFIER_CONCURRENCY copies in all.
        kills = self.services["notifier"].restarts
        concurrency = int(os.environ.get("CAIRN_NOTIFIER_CONCURRENCY", "4"))
        emails_ok = (missing == 0 and self.most_copies <= kills and copies <= kills * concurrency
                     and not self.mixed_message_ids)
        print(f"emails: {requested} requested (acknowledged SetEmail with a code), {requested - missing} delivered, "
              f"{missing} missing; {copies} extra copies, at most {self.most_copies} of one message (bound: "
              f"{kills} notifier kill(s): 1 per message, {kills * concurrency} in all, same Message-ID); "
              f"different Message-IDs to one address: {len(self.mixed_message_ids)} -> {'ok' if emails_ok else 'FAIL'}")
        bad |= not emails_ok
        w = webhooks
        webhooks_ok = (w["missing"] == 0 and w["unknown"] == 0 and w["unverified"] == 0
                       and w["out_of_order"] == 0 and w["expected"] > 0)
        print(f"webhooks: {w['expected']} events from the execution on, {w['delivered']} delivered (2xx), "
              f"{w['missing']} missing; {w['copies']} extra copies, all with the event's own webhook-id; "
              f"ids that are no event {w['unknown']}; requests failing signature verification {w['unverified']}; "
              f"aggregates delivered out of sequence order {w['out_of_order']}; "
              f"{w['refused']} non-2xx answers -> {'ok' if webhooks_ok else 'FAIL'}")
        bad |= not webhooks_ok
        print(f"chaos: {'FAIL' if bad else 'ok'}")
        return 1 if bad else 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["run"])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--short", action="store_true")
    args = parser.parse_args()
    sys.exit(Chaos(args).run())


if __name__ == "__main__":
    main()
