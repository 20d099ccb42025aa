"""The smoke test's client side (scripts/smoke runs it with $CAIRN_TEST_PYTHON).

    smoke.py free-ports N                      N free TCP ports on 127.0.0.1, one line
    smoke.py delete-stream --nats-url U --stream S   deletes a JetStream stream (absent is fine)
    smoke.py run --run-dir D --scim-url U --api-addr A --notifier-addr N --sink-dir S --tag T

`run` drives a stack that scripts/up started: a user created over SCIM (real HTTP, the SCIM token
from the run dir), read back over SCIM and over gRPC (stubs generated from proto/ into the run dir
at run time), its email set with a code sent by the notifier to the SMTP sink (smtp_sink.py, which
writes each accepted message as JSON), a wrong code refused, the right one accepted, and the email
shown verified. Each step prints one line; the first failure prints the reason and the tail of the
logs of the services involved, and exits 1. Waits poll against deadlines: no fixed sleeps.
"""

import argparse
import glob
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

PROTO_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")
# How long one step may wait for the stack (projections, the notifier, the sink).
STEP_DEADLINE_SECS = float(os.environ.get("CAIRN_SMOKE_STEP_TIMEOUT_SECS", "30"))
POLL_SECS = 0.1  # poll_interval of every wait


class StepFailed(Exception):
    def __init__(self, reason, logs):
        super().__init__(reason)
        self.reason = reason
        self.logs = logs


class Smoke:
    def __init__(self, args):
        self.run_dir = args.run_dir
        self.scim_url = args.scim_url.rstrip("/")
        self.api_addr = args.api_addr
        self.notifier_addr = args.notifier_addr
        self.sink_dir = args.sink_dir
        self.tag = args.tag
        secrets_dir = os.path.join(self.run_dir, "secrets")
        self.admin_token = read_secret(os.path.join(secrets_dir, "admin.token"))
        self.scim_token = read_secret(os.path.join(secrets_dir, "scim.token"))
        self.logs = []  # the services the current step involves

    # -- reporting ------------------------------------------------------------------------------

    def step(self, logs):
        self.logs = logs

    def ok(self, line):
        print("smoke: ok   " + line, flush=True)

    def fail(self, reason):
        raise StepFailed(reason, self.logs)

    def check(self, condition, reason):
        if not condition:
            self.fail(reason)

    # -- SCIM over HTTP -------------------------------------------------------------------------

    def scim(self, method, path, body=None):
        try:
            return scim_request(self.scim_url, self.scim_token, method, path, body, STEP_DEADLINE_SECS)
        except OSError as error:
            self.fail(f"{method} {path}: {error}")

    # -- gRPC -----------------------------------------------------------------------------------

    def load_stubs(self):
        import grpc

        files = [
            "cairn/common/v1/common.proto",
            "cairn/user/v1/user.proto",
            "cairn/notification/v1/notification.proto",
        ]
        try:
            generate_stubs(self.run_dir, files)
        except RuntimeError as error:
            self.fail(str(error))
        from cairn.notification.v1 import notification_pb2, notification_pb2_grpc
        from cairn.user.v1 import user_pb2, user_pb2_grpc

        self.grpc = grpc
        self.upb = user_pb2
        self.npb = notification_pb2
        self.users = user_pb2_grpc.UserServiceStub(grpc.insecure_channel(self.api_addr))
        self.notifications = notification_pb2_grpc.NotificationServiceStub(
            grpc.insecure_channel(self.notifier_addr)
        )
        self.auth = [("authorization", "Bearer " + self.admin_token)]

    def call(self, method, request):
        """A unary call with the admin token: (response, None) or (None, RpcError)."""
        try:
            return method(request, metadata=self.auth, timeout=STEP_DEADLINE_SECS), None
        except self.grpc.RpcError as error:
            return None, error

    def must(self, name, method, request):
        response, error = self.call(method, request)
        if error is not None:
            self.fail(f"{name}: {error.code().name}: {error.details()}")
        return response

    # -- the SMTP sink --------------------------------------------------------------------------

    def sink_messages(self, address):
        found = []
        for name in sorted(glob.glob(os.path.join(self.sink_dir, "msg-*.json"))):
            with open(name, encoding="utf-8") as file:
                message = json.load(file)
            if address.lower() in (r.lower() for r in message["rcpt_tos"]):
                found.append(message)
        return found

    def deliveries_summary(self, user_id):
        response, error = self.call(
            self.notifications.ListDeliveries, self.npb.ListDeliveriesRequest(user_id=user_id)
        )
        if error is not None:
            return f"ListDeliveries failed: {error.code().name}: {error.details()}"
        if not response.deliveries:
            return "the notifier has no delivery for the user"
        return "; ".join(
            f"{self.npb.DeliveryStatus.Name(d.status)} attempts={d.attempts} error={d.last_error!r}"
            for d in response.deliveries
        )

    # -- the flow -------------------------------------------------------------------------------

    def run(self):
        user_name = f"smoke-{self.tag}"
        first_email = f"smoke-{self.tag}@example.test"
        new_email = f"smoke-{self.tag}-new@example.test"

        self.step(["scim-gateway", "command-api"])
        status, created = self.scim(
            "POST",
            "/Users",
            {
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": user_name,
                "name": {"givenName": "Smoke", "familyName": "Test"},
                "emails": [{"value": first_email, "primary": True}],
            },
        )
        self.check(status == 201, f"SCIM POST /Users answered {status}, not 201: {created}")
        user_id = created.get("id", "")
        self.check(created.get("userName") == user_name, f"SCIM POST /Users returned {created}")
        self.ok(f"SCIM POST /Users -> 201, id {user_id}")

        self.step(["scim-gateway", "projector"])
        status, read = self.scim("GET", f"/Users/{user_id}")
        self.check(status == 200, f"SCIM GET /Users/{user_id} answered {status}, not 200: {read}")
        self.check(
            read.get("id") == user_id and read.get("userName") == user_name,
            f"SCIM GET /Users/{user_id} returned {read}",
        )
        emails = [e.get("value") for e in read.get("emails", [])]
        self.check(emails == [first_email], f"SCIM GET shows emails {emails}, not [{first_email}]")
        self.ok(f"SCIM GET /Users/{user_id} -> 200, userName {user_name}")

        self.step(["command-api"])
        self.load_stubs()
        got = self.must("GetUser", self.users.GetUser, self.upb.GetUserRequest(user_id=user_id))
        self.check(
            got.user.id == user_id and got.user.user_name == user_name,
            f"GetUser returned id {got.user.id!r}, user_name {got.user.user_name!r}",
        )
        self.check(
            got.user.human.name.family_name == "Test",
            f"GetUser shows family name {got.user.human.name.family_name!r}, not 'Test'",
        )
        self.ok(f"gRPC UserService/GetUser -> {user_name}, state {self.upb.UserState.Name(got.user.state)}")

        self.step(["command-api"])
        set_email = self.must(
            "SetEmail",
            self.users.SetEmail,
            self.upb.SetEmailRequest(
                user_id=user_id,
                email=new_email,
                verification=self.upb.EMAIL_VERIFICATION_SEND_CODE,
            ),
        )
        self.check(set_email.verification_code == "", "SetEmail with SEND_CODE returned the code")
        primary = [e for e in set_email.user.human.emails if e.primary]
        self.check(
            [(e.value, e.verified) for e in primary] == [(new_email, False)],
            f"after SetEmail the primary email is {[(e.value, e.verified) for e in primary]}",
        )
        self.ok(f"gRPC UserService/SetEmail -> {new_email}, unverified, code sent (position {set_email.details.position})")

        self.step(["notifier", "projector", "eventstore", "smtp-sink"])
        deadline = time.monotonic() + STEP_DEADLINE_SECS
        started = time.monotonic()
        while True:
            messages = self.sink_messages(new_email)
            if messages:
                break
            if time.monotonic() > deadline:
                self.fail(
                    f"no message to {new_email} in the SMTP sink within {STEP_DEADLINE_SECS:.0f} s; "
                    f"notifier deliveries: {self.deliveries_summary(user_id)}"
                )
            time.sleep(POLL_SECS)
        waited = time.monotonic() - started
        self.check(len(messages) == 1, f"{len(messages)} messages to {new_email}, not 1")
        message = messages[0]
        match = re.search(r"with this code:\s*\n\s*(\S+)\s*\n", message["text"])
        self.check(match is not None, f"no code in the message's text part: {message['text']!r}")
        code = match.group(1)
        self.check(code in message["html"], "the HTML part does not show the code of the text part")
        self.ok(f"SMTP sink: message to {new_email} after {waited:.2f} s, subject {message['subject']!r}, code found")

        self.step(["notifier"])
        deadline = time.monotonic() + STEP_DEADLINE_SECS
        while True:
            listed = self.must(
                "ListDeliveries",
                self.notifications.ListDeliveries,
                self.npb.ListDeliveriesRequest(user_id=user_id),
            )
            sent = [d for d in listed.deliveries if d.status == self.npb.DELIVERY_STATUS_SENT]
            if sent:
                break
            if time.monotonic() > deadline:
                self.fail(f"the delivery is not SENT within the deadline: {self.deliveries_summary(user_id)}")
            time.sleep(POLL_SECS)
        self.check(
            len(listed.deliveries) == 1 and sent[0].email == new_email,
            f"deliveries: {self.deliveries_summary(user_id)}",
        )
        self.check(
            sent[0].message_id == message["message_id"],
            f"the delivery's Message-ID {sent[0].message_id!r} is not the sink's {message['message_id']!r}",
        )
        self.ok("gRPC NotificationService/ListDeliveries -> one delivery, SENT, same Message-ID as the sink's")

        self.step(["command-api"])
        wrong = code[:-1] + ("1" if code[-1] == "0" else "0")
        _, error = self.call(self.users.VerifyEmail, self.upb.VerifyEmailRequest(user_id=user_id, code=wrong))
        self.check(error is not None, "VerifyEmail accepted a wrong code")
        self.check(
            error.code() == self.grpc.StatusCode.INVALID_ARGUMENT,
            f"VerifyEmail with a wrong code answered {error.code().name} ({error.details()}), not INVALID_ARGUMENT",
        )
        self.check(
            "wrong verification code" in (error.details() or ""),
            f"VerifyEmail with a wrong code said {error.details()!r}",
        )
        self.ok(f"gRPC UserService/VerifyEmail with a wrong code -> INVALID_ARGUMENT ({error.details()})")

        verified = self.must(
            "VerifyEmail", self.users.VerifyEmail, self.upb.VerifyEmailRequest(user_id=user_id, code=code)
        )
        self.ok(f"gRPC UserService/VerifyEmail with the emailed code -> OK (position {verified.details.position})")

        got = self.must(
            "GetUser",
            self.users.GetUser,
            self.upb.GetUserRequest(user_id=user_id, min_position=verified.details.position),
        )
        primary = [(e.value, e.verified) for e in got.user.human.emails if e.primary]
        self.check(primary == [(new_email, True)], f"GetUser shows the primary email as {primary}")
        self.ok(f"gRPC UserService/GetUser -> {new_email} verified")


def scim_request(base_url, token, method, path, body=None, timeout=STEP_DEADLINE_SECS):
    """One SCIM call with a bearer token: (status, parsed JSON) on success, (status, text) on an HTTP
    error; OSError when no answer came. Shared by smoke.py and chaos.py."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base_url + path, data=data, method=method)
    request.add_header("authorization", "Bearer " + token)
    request.add_header("accept", "application/scim+json")
    if data is not None:
        request.add_header("content-type", "application/scim+json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def tenant(args):
    """The README's tenant commands against the running stack: `cairn instances add --json` makes a
    second tenant, its admin token provisions a user over SCIM and sees only its own users,
    `cairn instances remove` removes it, and the token is refused at once."""
    env = dict(os.environ, CAIRN_DATABASE_URL=args.database_url)

    def cairn(*argv):
        done = subprocess.run([args.cairn, *argv], env=env, capture_output=True, text=True,
                              timeout=STEP_DEADLINE_SECS)
        if done.returncode != 0:
            raise StepFailed(f"cairn {' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}", [])
        return json.loads(done.stdout)

    added = cairn("instances", "add", "--name", f"Smoke tenant {args.tag}", "--org", "Smoke HQ", "--json")
    token = added["admin_token"]
    status, body = scim_request(args.scim_url, token, "POST", "/Users", {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": f"tenant-{args.tag}",
        "emails": [{"value": f"tenant-{args.tag}@example.com", "primary": True}],
    })
    if status != 201:
        raise StepFailed(f"SCIM POST /Users with the new tenant's token: {status} {body}", ["scim-gateway"])
    status, listed = scim_request(args.scim_url, token, "GET", "/Users")
    if status != 200 or listed.get("totalResults") != 1:
        raise StepFailed(f"the new tenant lists other tenants' users: {status} {listed}", ["scim-gateway"])
    instances = cairn("instances", "list", "--json")
    if not any(i["id"] == added["instance_id"] for i in instances):
        raise StepFailed(f"cairn instances list does not show {added['instance_id']}", [])
    removed = cairn("instances", "remove", added["instance_id"], "--json")
    if removed.get("state") != "removed":
        raise StepFailed(f"cairn instances remove answered {removed}", [])
    status, body = scim_request(args.scim_url, token, "GET", "/Users")
    if status != 401:
        raise StepFailed(f"the removed tenant's token still works: {status} {body}", ["scim-gateway"])
    print(f"smoke: ok cairn instances add / SCIM with its own token (1 user, only its own) / "
          f"remove {added['instance_id']} / its token refused (401)", flush=True)


def generate_stubs(run_dir, files):
    """Generates Python gRPC stubs for `files` (paths under proto/) into <run_dir>/stubs and puts
    that directory on sys.path. Shared by smoke.py and chaos.py."""
    import grpc_tools
    from grpc_tools import protoc

    out = os.path.join(run_dir, "stubs")
    os.makedirs(out, exist_ok=True)
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    status = protoc.main(
        ["protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}"]
        + files
    )
    if status != 0:
        raise RuntimeError(f"protoc failed with status {status} on {', '.join(files)}")
    if out not in sys.path:
        sys.path.insert(0, out)


def read_secret(path):
    try:
        with open(path, encoding="utf-8") as file:
            value = file.read().strip()
    except OSError as error:
        raise SystemExit(f"smoke: FAIL cannot read {path}: {error}")
    if not value:
        raise SystemExit(f"smoke: FAIL {path} is empty")
    return value


def tail(path, lines=30):
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return file.readlines()[-lines:]
    except OSError as error:
        return [f"({error})\n"]


def free_ports(count):
    """Ports the kernel handed out, all held at once so that they differ, then released."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def delete_stream(nats_url, stream, timeout=10.0):
    """Deletes a JetStream stream over the plain NATS protocol (no client library needed)."""
    url = urllib.parse.urlparse(nats_url)
    inbox = "_INBOX.smoke." + secrets.token_hex(8)
    with socket.create_connection((url.hostname or "127.0.0.1", url.port or 4222), timeout=timeout) as conn:
        reader = conn.makefile("rb")
        info = reader.readline()
        if not info.startswith(b"INFO"):
            raise SystemExit(f"not a NATS server at {nats_url}: {info[:80]!r}")
        conn.sendall(
            b'CONNECT {"verbose":false,"pedantic":false,"name":"cairn-smoke"}\r\n'
            + f"SUB {inbox} 1\r\nPUB $JS.API.STREAM.DELETE.{stream} {inbox} 0\r\n\r\n".encode()
        )
        while True:
            line = reader.readline()
            if not line:
                raise SystemExit("NATS closed the connection")
            if line.startswith(b"PING"):
                conn.sendall(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                raise SystemExit(f"NATS: {line.decode().strip()}")
            elif line.startswith(b"MSG"):
                size = int(line.split()[-1])
                reply = json.loads(reader.read(size + 2)[:size])
                break
    if reply.get("success"):
        return "deleted"
    error = reply.get("error", {})
    if error.get("code") == 404:
        return "absent"
    raise SystemExit(f"deleting stream {stream}: {error}")


def main():
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    ports = commands.add_parser("free-ports")
    ports.add_argument("count", type=int)
    delete = commands.add_parser("delete-stream")
    delete.add_argument("--nats-url", required=True)
    delete.add_argument("--stream", required=True)
    tenant_cmd = commands.add_parser("tenant")
    for name in ("--cairn", "--database-url", "--scim-url", "--tag"):
        tenant_cmd.add_argument(name, required=True)
    run = commands.add_parser("run")
    for name in ("--run-dir", "--scim-url", "--api-addr", "--notifier-addr", "--sink-dir", "--tag"):
        run.add_argument(name, required=True)
    args = parser.parse_args()

    if args.command == "free-ports":
        print(" ".join(str(p) for p in free_ports(args.count)))
    elif args.command == "delete-stream":
        print(delete_stream(args.nats_url, args.stream))
    elif args.command == "tenant":
        try:
            tenant(args)
        except StepFailed as failure:
            print(f"smoke: FAIL {failure.reason}", file=sys.stderr, flush=True)
            sys.exit(1)
    else:
        try:
            Smoke(args).run()
        except StepFailed as failure:
            print(f"smoke: FAIL {failure.reason}", file=sys.stderr, flush=True)
            for name in failure.logs:
                path = os.path.join(args.run_dir, "logs", name + ".log")
                print(f"---- last lines of {path}", file=sys.stderr)
                sys.stderr.writelines(tail(path))
            sys.exit(1)


if __name__ == "__main__":
    main()
